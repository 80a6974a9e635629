"""The admission queue: limits hold, the oldest job goes first, no provider blocks another."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from asyncjobs.controller.admission import Admission, ProviderCoolingDown
from asyncjobs.core.cooldown import CooldownPolicy
from asyncjobs.core.limits import CallBudget, TokenBucket
from asyncjobs.core.providers.base import ProviderError, ProviderResult


def budget(max_in_flight: int, **providers: tuple[int, int | None]) -> CallBudget:
    result = CallBudget(max_in_flight)
    for name, (concurrency, per_minute) in providers.items():
        result.set_provider(name, concurrency, per_minute, 0.0)
    return result


class Recorder:
    """Jobs that hold their slot until released, recording the order they started in."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        self.started: list[str] = []
        self.release = asyncio.Event()
        self.peak = 0

    async def job(self, provider: str, name: str, submitted: float) -> None:
        async with self.admission.slot(provider, (submitted, name)):
            self.started.append(name)
            self.peak = max(self.peak, self.admission.in_flight)
            await self.release.wait()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_global_limit_holds_and_the_oldest_waiting_jobs_start_first() -> None:
    recorder = Recorder(Admission(budget(3, a=(10, None))))
    # j0 is the newest job, j9 the oldest; the first three arrive while slots are free.
    tasks = [asyncio.create_task(recorder.job("a", f"j{i}", float(10 - i))) for i in range(10)]
    await settle()
    assert recorder.started == ["j0", "j1", "j2"]
    assert recorder.admission.waiting() == 7
    recorder.release.set()
    await asyncio.gather(*tasks)
    assert recorder.peak == 3
    assert recorder.started[3:] == ["j9", "j8", "j7", "j6", "j5", "j4", "j3"]


async def test_backlog_starts_strictly_oldest_first() -> None:
    recorder = Recorder(Admission(budget(1, a=(1, None))))
    blocker = asyncio.create_task(recorder.job("a", "first", submitted=0.0))
    await settle()
    waiting = [
        asyncio.create_task(recorder.job("a", f"j{s}", submitted=float(s))) for s in (5, 3, 4, 1, 2)
    ]
    await settle()
    recorder.release.set()
    await asyncio.gather(blocker, *waiting)
    assert recorder.started == ["first", "j1", "j2", "j3", "j4", "j5"]


async def test_a_saturated_provider_does_not_hold_up_another() -> None:
    recorder = Recorder(Admission(budget(10, slow=(2, None), fast=(5, None))))
    slow = [
        asyncio.create_task(recorder.job("slow", f"s{i}", submitted=float(i))) for i in range(6)
    ]
    fast = [
        asyncio.create_task(recorder.job("fast", f"f{i}", submitted=100.0 + i)) for i in range(3)
    ]
    await settle()
    assert sorted(recorder.started) == ["f0", "f1", "f2", "s0", "s1"]
    assert recorder.admission.budget.providers["slow"].in_flight == 2
    recorder.release.set()
    await asyncio.gather(*slow, *fast)


async def test_cancelled_waiter_leaves_and_cancelled_holder_releases() -> None:
    admission = Admission(budget(1, a=(1, None)))
    recorder = Recorder(admission)
    holder = asyncio.create_task(recorder.job("a", "holder", 0.0))
    waiter = asyncio.create_task(recorder.job("a", "waiter", 1.0))
    await settle()
    waiter.cancel()
    holder.cancel()
    await asyncio.gather(holder, waiter, return_exceptions=True)
    assert admission.in_flight == 0
    assert admission.waiting() == 0
    recorder.release.set()
    await recorder.job("a", "later", 2.0)
    assert recorder.started == ["holder", "later"]


async def test_rate_limit_spaces_calls_and_wakes_by_itself() -> None:
    # 120 per minute: a bucket of 2, refilled at 2 per second.
    admission = Admission(budget(10, a=(10, 120)))
    loop = asyncio.get_running_loop()
    started: list[float] = []

    async def call(i: int) -> None:
        async with admission.slot("a", (float(i), str(i))):
            started.append(loop.time())

    begin = loop.time()
    await asyncio.wait_for(asyncio.gather(*(call(i) for i in range(4))), timeout=5)
    offsets = [round(t - begin, 1) for t in started]
    assert offsets[:2] == [0.0, 0.0]
    assert offsets[2] == pytest.approx(0.5, abs=0.1)
    assert offsets[3] == pytest.approx(1.0, abs=0.1)


def test_token_bucket_holds_one_second_of_requests() -> None:
    bucket = TokenBucket(600, now=0.0)  # 10 per second
    assert bucket.capacity == 10
    for _ in range(10):
        assert bucket.ready_at(0.0) == 0.0
        bucket.take(0.0)
    assert bucket.ready_at(0.0) == pytest.approx(0.1)
    # A quiet minute does not buy a burst of 600.
    assert bucket.ready_at(60.0) == 60.0
    assert bucket.tokens == 10


def test_slow_rate_bucket_allows_one_at_a_time() -> None:
    bucket = TokenBucket(6, now=0.0)  # one every 10 s
    bucket.take(0.0)
    assert bucket.ready_at(1.0) == pytest.approx(10.0)


@dataclass(frozen=True)
class Limit:
    max_concurrency: int
    requests_per_minute: int | None = None


async def test_raised_limits_start_waiting_jobs_at_once_oldest_first() -> None:
    recorder = Recorder(Admission(budget(1, a=(1, None))))
    tasks = [asyncio.create_task(recorder.job("a", f"j{i}", float(i))) for i in range(5)]
    await settle()
    assert recorder.started == ["j0"]
    recorder.admission.reconfigure(3, {"a": Limit(3)})
    await settle()
    assert recorder.started == ["j0", "j1", "j2"]
    assert recorder.admission.waiting() == 2
    recorder.release.set()
    await asyncio.gather(*tasks)
    assert recorder.peak == 3


async def test_lowered_limits_hold_new_calls_until_running_ones_end() -> None:
    admission = Admission(budget(4, a=(4, None)))
    gates = [asyncio.Event() for _ in range(3)]
    started: list[str] = []

    async def job(name: str, submitted: float, gate: asyncio.Event) -> None:
        async with admission.slot("a", (submitted, name)):
            started.append(name)
            await gate.wait()

    running = [asyncio.create_task(job(f"r{i}", float(i), gates[i])) for i in range(2)]
    await settle()
    admission.reconfigure(4, {"a": Limit(1)})
    later = asyncio.create_task(job("later", 10.0, gates[2]))
    await settle()
    assert started == ["r0", "r1"]
    gates[0].set()
    await settle()
    assert started == ["r0", "r1"]  # one call still runs, and the limit is now 1
    gates[1].set()
    await settle()
    assert started == ["r0", "r1", "later"]
    gates[2].set()
    await asyncio.gather(*running, later)


async def test_a_provider_added_by_a_reload_gets_slots() -> None:
    recorder = Recorder(Admission(budget(2, a=(2, None))))
    recorder.admission.reconfigure(2, {"a": Limit(2), "new": Limit(1)})
    task = asyncio.create_task(recorder.job("new", "n0", 0.0))
    await settle()
    assert recorder.started == ["n0"]
    recorder.release.set()
    await task


# --- a provider's circuit breaker ------------------------------------------------------


def breaking_budget(base_seconds: float) -> CallBudget:
    result = CallBudget(10, cooldown=CooldownPolicy(base_seconds=base_seconds, jitter=0.0))
    result.set_provider("a", 3, None, 0.0)
    result.set_provider("b", 3, None, 0.0)
    return result


THROTTLED = ProviderError("slow down", status_code=429, retryable=True)


async def test_a_429_holds_the_waiting_jobs_until_a_probe_succeeds() -> None:
    admission = Admission(breaking_budget(base_seconds=0.2))
    cooldowns: list[tuple[str, str]] = []
    admission.on_cooldown = lambda provider, cause: cooldowns.append((provider, cause))
    loop = asyncio.get_running_loop()
    started: dict[str, float] = {}
    first_answer = asyncio.Event()

    async def job(provider: str, name: str, submitted: float) -> None:
        async with admission.slot(provider, (submitted, name)) as call:
            started[name] = loop.time()
            if name == "first":
                await first_answer.wait()
                call.report(THROTTLED)
            else:
                call.report(ProviderResult({}))

    begin = loop.time()
    first = asyncio.create_task(job("a", "first", 0.0))
    await settle()
    first_answer.set()
    await first
    assert cooldowns == [("a", "throttled")]
    # Five jobs arrive while the provider cools down, and one for another provider.
    waiting = [asyncio.create_task(job("a", f"j{i}", float(i + 1))) for i in range(5)]
    other = asyncio.create_task(job("b", "other", 9.0))
    await settle()
    assert list(started) == ["first", "other"]
    assert admission.waiting() == 5
    assert admission.held() == 5
    assert admission.cooling_down() == 1
    await asyncio.wait_for(asyncio.gather(*waiting, other), timeout=5)
    # None started before the cooldown ended; the oldest probed, then the rest went.
    assert all(started[f"j{i}"] - begin >= 0.19 for i in range(5))
    assert started["j0"] <= min(started[f"j{i}"] for i in range(1, 5))
    assert admission.held() == 0
    assert admission.cooling_down() == 0


async def test_while_the_probe_runs_no_other_call_starts() -> None:
    admission = Admission(breaking_budget(base_seconds=0.05))
    started: list[str] = []
    answer = asyncio.Event()

    async def job(name: str, submitted: float, outcome: ProviderResult | ProviderError) -> None:
        async with admission.slot("a", (submitted, name)) as call:
            started.append(name)
            if name == "probe":
                await answer.wait()
            call.report(outcome)

    await job("first", 0.0, THROTTLED)
    probe = asyncio.create_task(job("probe", 1.0, ProviderResult({})))
    rest = [asyncio.create_task(job(f"j{i}", 2.0 + i, ProviderResult({}))) for i in range(3)]
    await asyncio.sleep(0.2)
    assert started == ["first", "probe"]
    answer.set()
    await asyncio.wait_for(asyncio.gather(probe, *rest), timeout=5)
    assert started == ["first", "probe", "j0", "j1", "j2"]


async def test_a_job_whose_deadline_ends_before_the_cooldown_is_turned_away() -> None:
    clock = [100.0]
    admission = Admission(breaking_budget(base_seconds=30.0), clock=lambda: clock[0])
    holder_answer = asyncio.Event()

    async def holder() -> None:
        async with admission.slot("a", (0.0, "holder")) as call:
            await holder_answer.wait()
            call.report(ProviderError("x", status_code=429, retryable=True, retry_after=60.0))

    async def waiter(name: str, deadline: float) -> str:
        try:
            async with admission.slot("a", (1.0, name), deadline):
                return "started"
        except ProviderCoolingDown as held:
            return f"{held.provider} {held.cause} until {held.until:g}"

    running = asyncio.create_task(holder())
    await settle()
    # The global limit lets no one else start while the holder runs (concurrency 1).
    admission.budget.providers["a"].max_concurrency = 1
    short = asyncio.create_task(waiter("short", deadline=150.0))
    long = asyncio.create_task(waiter("long", deadline=500.0))
    await settle()
    holder_answer.set()
    await running
    assert await short == "a throttled until 160"
    assert not long.done()  # it waits for the cooldown
    # One arriving during the cooldown with too little time left is turned away at once.
    assert await waiter("late", deadline=159.0) == "a throttled until 160"
    long.cancel()
    await asyncio.gather(long, return_exceptions=True)
    assert admission.waiting() == 0


async def test_a_cancelled_probe_hands_the_probe_to_the_next_job() -> None:
    admission = Admission(breaking_budget(base_seconds=0.05))
    started: list[str] = []

    async def throttled() -> None:
        async with admission.slot("a", (0.0, "first")) as call:
            call.report(THROTTLED)

    async def hanging() -> None:
        async with admission.slot("a", (1.0, "probe")):
            started.append("probe")
            await asyncio.Event().wait()

    async def later() -> None:
        async with admission.slot("a", (2.0, "later")) as call:
            started.append("later")
            call.report(ProviderResult({}))

    await throttled()
    probe = asyncio.create_task(hanging())
    after = asyncio.create_task(later())
    await asyncio.sleep(0.15)
    assert started == ["probe"]
    probe.cancel()
    await asyncio.gather(probe, return_exceptions=True)
    await asyncio.wait_for(after, timeout=5)
    assert started == ["probe", "later"]
    assert admission.budget.providers["a"].breaker.state.value == "closed"
