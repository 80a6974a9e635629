"""The admission queue shares slots between virtual keys: one key's backlog does not
hold up another key's job, and switching fair share off restores oldest first."""

from __future__ import annotations

import asyncio

from prometheus_client import generate_latest

from asyncjobs.controller.admission import Admission
from asyncjobs.controller.metrics import Metrics, WaitingByKey
from asyncjobs.core.fair_share import ANONYMOUS, group_label
from asyncjobs.core.limits import CallBudget


def one_slot(fair_share: bool = True) -> Admission:
    budget = CallBudget(1)
    budget.set_provider("p", 1, None, 0.0)
    return Admission(budget, fair_share=fair_share)


class Keys:
    """Jobs that take their slot one at a time (each waits for `step`), recording the
    order in which they started."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        self.started: list[str] = []
        self.step = asyncio.Event()

    async def job(
        self, name: str, submitted: float, key: str, weight: int = 1, priority: int = 0
    ) -> None:
        order = (-priority, submitted, name)
        async with self.admission.slot("p", order, group=key, weight=weight):
            self.started.append(name)
            await self.step.wait()
            self.step.clear()

    async def run_until(self, count: int) -> None:
        while len(self.started) < count:
            await asyncio.sleep(0)
            self.step.set()
            await asyncio.sleep(0)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def flood_then_one(admission: Admission) -> list[str]:
    keys = Keys(admission)
    flood = [asyncio.create_task(keys.job(f"a{i}", float(i), "team-a")) for i in range(50)]
    await settle()
    assert keys.started == ["a0"]
    assert admission.waiting_by_group() == {"team-a": 49} or not admission.fair_share
    late = asyncio.create_task(keys.job("b0", 1000.0, "team-b"))
    await settle()
    await asyncio.wait_for(keys.run_until(51), timeout=10)
    await asyncio.gather(*flood, late)
    return keys.started


async def test_another_keys_job_starts_next_despite_a_backlog() -> None:
    started = await flood_then_one(one_slot())
    assert started.index("b0") == 1


async def test_with_fair_share_off_the_backlog_goes_first() -> None:
    started = await flood_then_one(one_slot(fair_share=False))
    assert started.index("b0") == 50


async def test_slots_follow_key_weights() -> None:
    admission = one_slot()
    keys = Keys(admission)
    tasks = [asyncio.create_task(keys.job("first", 0.0, "x"))]
    await settle()
    tasks += [asyncio.create_task(keys.job(f"h{i}", float(i), "heavy", 3)) for i in range(40)]
    tasks += [asyncio.create_task(keys.job(f"l{i}", float(i), "light", 1)) for i in range(40)]
    await settle()
    await asyncio.wait_for(keys.run_until(41), timeout=10)
    served = keys.started[1:41]
    assert sum(1 for n in served if n[0] == "h") == 30
    # The job after these already holds the freed slot (granted, not yet started).
    assert admission.waiting_by_group() == {"heavy": 9, "light": 30}
    await asyncio.wait_for(keys.run_until(81), timeout=10)
    await asyncio.gather(*tasks)


async def test_priority_orders_jobs_within_a_key() -> None:
    admission = one_slot()
    keys = Keys(admission)
    tasks = [asyncio.create_task(keys.job("first", 0.0, "a"))]
    await settle()
    tasks += [
        asyncio.create_task(keys.job("low", 1.0, "a", priority=-3)),
        asyncio.create_task(keys.job("normal", 2.0, "a")),
        asyncio.create_task(keys.job("high", 3.0, "a", priority=7)),
    ]
    await settle()
    await asyncio.wait_for(keys.run_until(4), timeout=10)
    await asyncio.gather(*tasks)
    assert keys.started == ["first", "high", "normal", "low"]


async def test_waiting_jobs_are_counted_per_key_hash_in_metrics() -> None:
    admission = one_slot()
    metrics = Metrics()
    metrics.waiting_by_key.source = admission.waiting_by_group
    keys = Keys(admission)
    tasks = [asyncio.create_task(keys.job(f"a{i}", float(i), "team-a")) for i in range(4)]
    tasks.append(asyncio.create_task(keys.job("anon", 9.0, ANONYMOUS)))
    await settle()

    def sample(label: str) -> float | None:
        return metrics.registry.get_sample_value(WaitingByKey.NAME, {"key": label})

    assert sample(group_label("team-a")) == 3  # a0 holds the slot
    assert sample("anonymous") == 1
    assert b"team-a" not in generate_latest(metrics.registry)
    await asyncio.wait_for(keys.run_until(5), timeout=10)
    await asyncio.gather(*tasks)
    assert sample(group_label("team-a")) is None
