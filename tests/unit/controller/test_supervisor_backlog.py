"""The supervisor with more pending jobs than a lane starts at once: the rest wait
parked (no task), start oldest first as tasks end, and each still fails at its deadline
or goes when deleted."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

from asyncjobs.controller.expiry import Expiry
from asyncjobs.controller.health import WatchHealth
from asyncjobs.controller.supervisor import Supervisor
from asyncjobs.core.kube import KubeObject
from asyncjobs.core.providers.base import ProviderRequest, ProviderResult
from tests.unit.controller.fakes import (
    REQUEST,
    SUBMITTED,
    Clock,
    FakeSecrets,
    ScriptedProvider,
    StatusWriter,
    asyncjob,
    context,
)


class Writers:
    """One StatusWriter per job name."""

    def __init__(self, objs: list[KubeObject]) -> None:
        self.by_name = {obj["metadata"]["name"]: StatusWriter(obj) for obj in objs}
        self.claims: list[str] = []

    async def patch_status(
        self, name: str, status: dict[str, Any], precondition: str | None = None
    ) -> KubeObject | None:
        if status.get("phase") == "Processing":
            self.claims.append(name)
        return await self.by_name[name].patch_status(name, status, precondition)

    async def post_event(self, obj: KubeObject, reason: str, message: str) -> None:
        await self.by_name[obj["metadata"]["name"]].post_event(obj, reason, message)

    def phase(self, name: str) -> str:
        return str(self.by_name[name].status.get("phase", "Pending"))


class GatedProvider(ScriptedProvider):
    """Each call waits until the test lets one through."""

    def __init__(self) -> None:
        super().__init__("openai")
        self.gate = asyncio.Semaphore(0)

    async def call(self, request: ProviderRequest) -> ProviderResult:
        await self.gate.acquire()
        return await super().call(request)


def pending(count: int, **spec: Any) -> list[KubeObject]:
    jobs = []
    for i in range(count):
        obj = asyncjob(name=f"j{i}", uid=f"u{i}", **spec)
        # Submitted one second apart, listed newest first.
        obj["spec"]["submittedAt"] = (SUBMITTED + timedelta(seconds=i)).isoformat()
        jobs.append(obj)
    return list(reversed(jobs))


async def supervised(
    objs: list[KubeObject], provider: ScriptedProvider, per_lane: int, wall: Clock | None = None
) -> tuple[Supervisor, Writers]:
    secrets, writers = FakeSecrets(), Writers(objs)
    for obj in objs:
        await secrets.put_body(obj, "request", REQUEST)

    async def delete(name: str, uid: str) -> None:
        pass

    ctx = context(writers, secrets, {"openai": provider}, wall=wall)  # type: ignore[arg-type]
    supervisor = Supervisor(
        ctx, Expiry(delete, ctx.wall), WatchHealth(time.monotonic), per_lane=lambda: per_lane
    )
    return supervisor, writers


async def until(condition: Any) -> None:
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110 - tasks behind a fake provider
            await asyncio.sleep(0.001)


async def test_a_lane_runs_its_room_and_the_rest_start_oldest_first_as_tasks_end() -> None:
    objs = pending(6)
    provider = GatedProvider()
    supervisor, writers = await supervised(objs, provider, per_lane=2)
    for obj in objs:
        supervisor.observe(None, obj)
    assert len(supervisor.backlog) == 6, "all parked while listing"
    assert not supervisor.tasks
    supervisor.listed([obj["metadata"]["name"] for obj in objs])
    assert sorted(supervisor.tasks) == ["j0", "j1"], "the two oldest start"
    assert len(supervisor.backlog) == 4
    for _ in range(6):
        provider.gate.release()
    await until(lambda: all(writers.phase(f"j{i}") == "Completed" for i in range(6)))
    assert writers.claims == [f"j{i}" for i in range(6)]
    assert len(supervisor.backlog) == 0
    await until(lambda: not supervisor.tasks)
    assert supervisor.backlog.room("openai")


async def test_a_parked_job_fails_at_its_deadline_and_a_deleted_one_is_dropped() -> None:
    long_running = pending(1)[0]
    deleted, soon_due = pending(3, activeDeadlineSeconds=1)[:2]  # j2, j1: due at +3, +2 s
    provider = GatedProvider()
    wall = Clock(SUBMITTED + timedelta(seconds=1.6))  # j1's deadline is 0.4 s away
    objs = [long_running, soon_due, deleted]
    supervisor, writers = await supervised(objs, provider, per_lane=1, wall=wall)
    supervisor.listed([])
    for obj in objs:
        supervisor.observe("ADDED", obj)
    assert list(supervisor.tasks) == ["j0"], "the lane's one start, its call hangs"
    assert "j1" in supervisor.backlog
    supervisor.observe("DELETED", deleted)
    assert "j2" not in supervisor.backlog
    wall.now += timedelta(seconds=0.5)
    await until(lambda: writers.phase("j1") == "Failed")
    assert writers.by_name["j1"].status["statusCode"] == 504
    assert writers.by_name["j1"].events == ["DeadlineExceeded"]
    assert writers.claims == ["j0"], "j1 failed without a claim, j2 never started"
    assert writers.phase("j2") == "Pending"
    provider.gate.release()
    await until(lambda: writers.phase("j0") == "Completed")


async def test_closing_starts_no_parked_job() -> None:
    objs = pending(6)
    provider = GatedProvider()
    supervisor, writers = await supervised(objs, provider, per_lane=2)
    supervisor.listed([])
    for obj in reversed(objs):  # oldest first
        supervisor.observe("ADDED", obj)
    await until(lambda: len(writers.claims) == 2)
    await supervisor.close()
    await asyncio.sleep(0.05)
    assert sorted(writers.claims) == ["j0", "j1"], "the two oldest, no more"
    assert not supervisor.tasks, "the cancelled tasks' lanes started nothing"


async def test_no_parked_job_starts_before_the_first_listing_is_over() -> None:
    # A listed job past its deadline is a quick task of its own; its end must not start
    # the parked jobs read so far (by name), only listed() does, oldest first.
    late = pending(1, activeDeadlineSeconds=1)[0]
    late["metadata"]["name"] = "a-late"
    objs = [*pending(4), late]
    provider = GatedProvider()
    wall = Clock(SUBMITTED + timedelta(seconds=5))
    supervisor, writers = await supervised(objs, provider, per_lane=2, wall=wall)
    for obj in objs[:2]:  # j3, j2
        supervisor.observe(None, obj)
    supervisor.observe(None, late)
    await until(lambda: writers.phase("a-late") == "Failed")
    await asyncio.sleep(0.01)
    assert set(supervisor.tasks) <= {"a-late"}, "nothing started from the partial listing"
    for obj in objs[2:4]:  # j1, j0
        supervisor.observe(None, obj)
    supervisor.listed(["j3", "j2", "j1", "j0", "a-late"])
    assert sorted(supervisor.tasks) == ["j0", "j1"]
    await supervisor.close()  # no task outlives the test


async def test_a_relist_leaves_parked_jobs_in_place() -> None:
    objs = pending(5)
    supervisor, _ = await supervised(objs, GatedProvider(), per_lane=1)
    for _ in range(3):  # the first listing, then two relists of the same objects
        for obj in objs:
            supervisor.observe(None, obj)
        supervisor.listed([obj["metadata"]["name"] for obj in objs])
    assert len(supervisor.backlog) == 4
    assert supervisor.backlog.entries() == 4, "no dead entry per relist"
    await supervisor.close()  # no task outlives the test


async def test_a_new_job_waits_behind_parked_ones_when_the_lane_grows() -> None:
    objs = pending(4)
    provider = GatedProvider()
    room = [1]
    secrets, writers = FakeSecrets(), Writers(objs)
    for obj in objs:
        await secrets.put_body(obj, "request", REQUEST)

    async def delete(name: str, uid: str) -> None:
        pass

    ctx = context(writers, secrets, {"openai": provider})  # type: ignore[arg-type]
    supervisor = Supervisor(
        ctx, Expiry(delete, ctx.wall), WatchHealth(time.monotonic), per_lane=lambda: room[0]
    )
    supervisor.listed([])
    newest, *older = objs  # j3, then j2, j1, j0
    for obj in reversed(older):
        supervisor.observe("ADDED", obj)
    assert list(supervisor.tasks) == ["j0"]
    room[0] = 3  # the call limits were raised by a reload
    supervisor.observe("ADDED", newest)
    assert sorted(supervisor.tasks) == ["j0", "j1", "j2"], "the parked ones first"
    assert "j3" in supervisor.backlog
    await supervisor.close()  # no task outlives the test
