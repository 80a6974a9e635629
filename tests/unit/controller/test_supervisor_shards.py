"""The supervisor with several operator replicas: only its own shards' jobs, no resume of
a job another live member runs, a task whose shard moved away stops before its claim."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from asyncjobs.controller.executor import Context
from asyncjobs.controller.expiry import Expiry
from asyncjobs.controller.health import WatchHealth
from asyncjobs.controller.members import Ownership
from asyncjobs.controller.supervisor import Supervisor
from asyncjobs.controller.writer import NotOwned
from asyncjobs.core import shards
from tests.unit.controller.fakes import (
    REQUEST,
    FakeSecrets,
    ScriptedProvider,
    StatusWriter,
    asyncjob,
    context,
)

TWO = Ownership("me", "me/1", {"me": "me/1", "b": "b/1"})
ALONE = Ownership("me", "me/1", {"me": "me/1"})


def named(owner: str) -> str:
    """A job name whose hashed shard `owner` runs when me and b are live."""
    return next(
        f"j{i}" for i in range(1000) if shards.owner(shards.shard_of(f"j{i}"), ["me", "b"]) == owner
    )


def named_with(prefix: str, owner: str) -> str:
    return next(
        name
        for name in (f"{prefix}{i}" for i in range(1000))
        if shards.owner(shards.shard_of(name), ["me", "b"]) == owner
    )


MINE, THEIRS = named("me"), named("b")
OPENAI: dict[str, Any] = {"openai": ScriptedProvider("openai")}
PROCESSING = {"phase": "Processing", "attempts": 1, "attemptsOnModel": 1}


class ClaimCheckingWriter(StatusWriter):
    """Refuses a conditional write the way writer.JobWriter does when the supervisor says
    the job may no longer be claimed."""

    def __init__(self, obj: dict[str, Any]) -> None:
        super().__init__(obj)
        self.supervisor: Supervisor | None = None

    async def patch_status(
        self, name: str, status: dict[str, Any], precondition: str | None = None
    ) -> dict[str, Any] | None:
        assert self.supervisor is not None
        if precondition and not self.supervisor.may_claim(name):
            raise NotOwned(name)
        return await super().patch_status(name, status, precondition)


async def supervised(ctx: Context, ownership: Ownership) -> tuple[Supervisor, Expiry]:
    async def delete(name: str, uid: str) -> None:
        pass

    expiry = Expiry(delete, ctx.wall)
    supervisor = Supervisor(ctx, expiry, WatchHealth(time.monotonic), ownership)
    supervisor.listed([])  # an empty first listing opens admission
    await asyncio.sleep(0)
    return supervisor, expiry


async def setup(
    obj: dict[str, Any], ownership: Ownership
) -> tuple[Supervisor, Expiry, ClaimCheckingWriter, ScriptedProvider, FakeSecrets]:
    secrets, writer, provider = FakeSecrets(), ClaimCheckingWriter(obj), ScriptedProvider("openai")
    await secrets.put_body(obj, "request", REQUEST)
    supervisor, expiry = await supervised(context(writer, secrets, {"openai": provider}), ownership)
    writer.supervisor = supervisor
    return supervisor, expiry, writer, provider, secrets


async def settle(supervisor: Supervisor) -> None:
    await asyncio.wait_for(asyncio.gather(*supervisor.tasks.values()), timeout=5)


async def test_only_jobs_of_its_own_shards_are_run() -> None:
    supervisor, _, writer, provider, _ = await setup(asyncjob(name=MINE), TWO)
    supervisor.observe("ADDED", asyncjob(name=THEIRS))
    assert supervisor.tasks == {}
    supervisor.observe("ADDED", asyncjob(name=MINE))
    await settle(supervisor)
    assert writer.status["phase"] == "Completed"
    assert len(provider.calls) == 1


async def test_a_label_decides_the_shard_over_the_hash() -> None:
    obj = asyncjob(name=THEIRS)
    mine = next(s for s in range(shards.SHARDS) if TWO.owns(s))
    obj["metadata"]["labels"] = {shards.LABEL: str(mine)}
    supervisor, _, writer, _, _ = await setup(obj, TWO)
    supervisor.observe("ADDED", obj)
    await settle(supervisor)
    assert writer.status["phase"] == "Completed"


async def test_a_job_another_live_member_runs_is_not_resumed() -> None:
    obj = asyncjob({**PROCESSING, "operator": "b/1"}, name=MINE)
    supervisor, _, _, provider, _ = await setup(obj, TWO)
    supervisor.observe("MODIFIED", obj)
    assert supervisor.tasks == {}
    assert provider.calls == []


async def test_a_job_whose_member_is_gone_is_resumed_once() -> None:
    obj = asyncjob({**PROCESSING, "operator": "c/1"}, name=MINE)
    supervisor, _, writer, provider, _ = await setup(obj, TWO)
    supervisor.observe("MODIFIED", obj)
    await settle(supervisor)
    assert writer.status["phase"] == "Completed"
    assert writer.status["interruptions"] == 1
    assert len(provider.calls) == 1


async def test_a_claim_lost_to_another_member_leaves_the_job_to_it() -> None:
    obj = asyncjob(name=MINE)
    supervisor, _, writer, provider, secrets = await setup(obj, TWO)
    # b claimed it first: the re-read after the conflict shows b's attempt.
    secrets.objects[MINE] = asyncjob({**PROCESSING, "operator": "b/1"}, name=MINE)
    writer.conflicts = 1
    supervisor.observe("ADDED", obj)
    await settle(supervisor)
    assert MINE in secrets.reads
    assert provider.calls == []
    assert writer.patches == []


async def test_a_task_whose_shard_moved_away_stops_before_its_claim() -> None:
    obj = asyncjob(name=THEIRS)  # mine while alone, b's once b joins
    supervisor, _, writer, provider, _ = await setup(obj, ALONE)
    supervisor.ctx.admission.paused = True  # the job waits for a slot
    supervisor.observe("ADDED", obj)
    assert list(supervisor.tasks) == [THEIRS]
    assert supervisor.may_claim(THEIRS)
    supervisor.reshard(TWO)
    assert not supervisor.may_claim(THEIRS)
    supervisor.ctx.admission.resume()
    await settle(supervisor)
    assert provider.calls == []
    assert writer.patches == []


async def test_expiry_of_shards_that_moved_away_is_left_to_their_new_owner() -> None:
    done = {"phase": "Completed", "completionTime": "2026-01-01T00:00:05.000Z"}
    supervisor, expiry, *_ = await setup(asyncjob(name=THEIRS), ALONE)
    supervisor.observe(
        "ADDED", asyncjob({**done, "expiresAt": "2026-01-01T01:00:00Z"}, name=THEIRS)
    )
    supervisor.observe("ADDED", asyncjob({**done, "expiresAt": "2026-01-01T01:00:00Z"}, name=MINE))
    assert len(expiry) == 2
    supervisor.reshard(TWO)
    assert len(expiry) == 1
    assert supervisor.terminal == {MINE}


async def test_calls_start_only_once_the_whole_first_listing_was_seen() -> None:
    async def delete(name: str, uid: str) -> None:
        pass

    ctx = context(StatusWriter(asyncjob(name=MINE)), providers=OPENAI)
    supervisor = Supervisor(ctx, Expiry(delete, ctx.wall), WatchHealth(time.monotonic))
    assert ctx.admission.paused
    supervisor.observe(None, asyncjob(name=MINE))
    supervisor.observe("ADDED", asyncjob({"phase": "Completed"}, name="new"))
    await asyncio.sleep(0.1)
    assert ctx.admission.paused, "a watch event before the listing ended opens nothing"
    assert MINE in supervisor.backlog, "pending jobs wait parked until all are known"
    assert not supervisor.tasks
    supervisor.listed([MINE])
    assert list(supervisor.tasks) == [MINE]
    await asyncio.sleep(0)
    assert not ctx.admission.paused


async def test_a_fresh_listing_forgets_jobs_deleted_meanwhile_not_those_moved_away() -> None:
    deleted = named_with(MINE + "x", "me")
    supervisor, expiry = await supervised(
        context(StatusWriter(asyncjob(name=MINE)), providers=OPENAI),
        TWO,
    )
    supervisor.ctx.admission.paused = True  # tasks wait for a slot: they stay tracked
    expiring = {"phase": "Completed", "completionTime": "2026-01-01T00:00:05.000Z"}
    supervisor.observe(None, asyncjob({**expiring, "expiresAt": "2026-01-01T01:00:00Z"}, name=MINE))
    supervisor.observe(None, asyncjob(name=deleted))
    assert deleted in supervisor.tasks
    assert len(expiry) == 1
    running = supervisor.tasks[deleted]
    # A job whose shard moved away keeps its task (it stops at its claim, not here).
    supervisor.shard_of[THEIRS] = shards.shard_of(THEIRS)
    supervisor.listed([MINE])
    await asyncio.sleep(0)
    assert deleted not in supervisor.tasks
    assert running.cancelled()
    assert len(expiry) == 1, "the listed job still expires"
    assert THEIRS in supervisor.shard_of


async def test_a_job_is_held_without_its_managed_fields() -> None:
    # A pending job's managedFields are about half of its size in memory.
    obj = asyncjob(name=MINE)
    obj["metadata"]["managedFields"] = [{"manager": "asyncjobs-api", "fieldsV1": {}}]
    supervisor, _, writer, _, _ = await setup(obj, ALONE)
    supervisor.ctx.admission.paused = True  # it waits for a slot: the task holds the job
    supervisor.observe("ADDED", obj)
    held = supervisor.tasks[MINE].get_coro().cr_frame.f_locals["obj"]  # type: ignore[union-attr]
    assert "managedFields" not in held["metadata"]
    assert "managedFields" in obj["metadata"], "the watch's object is not changed"
    supervisor.ctx.admission.resume()
    await settle(supervisor)
    assert writer.status["phase"] == "Completed"


async def test_a_listing_resets_the_phase_gauge_to_the_jobs_it_holds() -> None:
    supervisor, *_ = await setup(asyncjob(name=MINE), TWO)
    supervisor.observe(None, asyncjob({"phase": "Completed"}, name=MINE))
    supervisor.observe(None, asyncjob({"phase": "Completed"}, name=THEIRS))
    gauge = supervisor.ctx.metrics.registry.get_sample_value
    assert gauge("asyncjobs_operator_jobs", {"phase": "Completed"}) == 2
    # THEIRS's shard moved away: this replica's next listing no longer holds it, and no
    # DELETED event for it will come here.
    supervisor.listed([MINE])
    assert gauge("asyncjobs_operator_jobs", {"phase": "Completed"}) == 1


async def test_liveness_does_not_wait_for_a_write_to_a_job_whose_shard_moved_away() -> None:
    obj = asyncjob(name=THEIRS)  # mine while alone, b's once b joins
    supervisor, *_ = await setup(obj, ALONE)
    supervisor.ctx.admission.paused = True  # the job waits for a slot
    supervisor.observe("ADDED", obj)
    supervisor.health.wrote(THEIRS, "99")  # a write whose echo would come from the watch
    supervisor.reshard(TWO)
    supervisor.ctx.admission.resume()
    await settle(supervisor)
    assert supervisor.health.stalled_for() == 0.0, "no echo is awaited from another shard"
