"""A cancel seen on the watch: a job this process runs has its task (and provider call)
cancelled and is failed at once; a job with no task is failed without a call; a
terminal job is left as it is."""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any

from asyncjobs.controller.expiry import Expiry
from asyncjobs.controller.health import WatchHealth
from asyncjobs.controller.members import Ownership
from asyncjobs.controller.supervisor import Supervisor
from asyncjobs.core import cancel, shards
from asyncjobs.core.providers.base import ProviderRequest, ProviderResult
from tests.unit.controller.fakes import (
    REQUEST,
    FakeSecrets,
    ScriptedProvider,
    StatusWriter,
    asyncjob,
    context,
)


class HangingProvider(ScriptedProvider):
    """Never answers; records whether its call was abandoned (cancelled)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.called = asyncio.Event()
        self.abandoned = asyncio.Event()

    async def call(self, request: ProviderRequest) -> ProviderResult:
        self.calls.append(request)
        self.called.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.abandoned.set()
            raise
        raise AssertionError("never answers")


def with_cancel(obj: dict[str, Any]) -> dict[str, Any]:
    annotated = copy.deepcopy(obj)
    annotated["metadata"]["annotations"] = {cancel.ANNOTATION: "true"}
    return annotated


async def start(
    provider: ScriptedProvider, obj: dict[str, Any]
) -> tuple[Supervisor, StatusWriter, FakeSecrets]:
    secrets, writer = FakeSecrets(), StatusWriter(obj)
    await secrets.put_body(obj, "request", REQUEST)

    async def delete(name: str, uid: str) -> None:
        pass

    ctx = context(writer, secrets, {"openai": provider})
    supervisor = Supervisor(ctx, Expiry(delete, ctx.wall), WatchHealth(time.monotonic))
    supervisor.listed([])  # an empty first listing opens admission
    await asyncio.sleep(0)
    return supervisor, writer, secrets


async def settle(supervisor: Supervisor) -> None:
    for _ in range(3):  # a cancelled task hands over to the one that writes the status
        await asyncio.wait_for(asyncio.gather(*supervisor.tasks.values()), timeout=5)


async def test_a_running_call_is_abandoned_and_the_job_fails_as_cancelled() -> None:
    provider = HangingProvider("openai")
    supervisor, writer, secrets = await start(provider, asyncjob())
    supervisor.observe("ADDED", asyncjob())
    await asyncio.wait_for(provider.called.wait(), timeout=5)
    assert writer.status["phase"] == "Processing"
    cancelled = with_cancel(writer.obj)
    secrets.objects["j1"] = cancelled  # what the supervisor reads back
    supervisor.observe("MODIFIED", cancelled)
    await settle(supervisor)
    assert provider.abandoned.is_set()
    assert writer.status["phase"] == "Failed"
    assert writer.status["statusCode"] == 499
    assert writer.status["error"]["error"]["type"] == "cancelled"
    assert writer.events == ["Cancelled"]
    assert len(provider.calls) == 1
    assert "j1" in supervisor.terminal  # handed to expiry


async def test_a_job_with_no_task_is_cancelled_without_a_call() -> None:
    provider = ScriptedProvider("openai")
    supervisor, writer, _ = await start(provider, asyncjob())
    supervisor.observe("ADDED", with_cancel(asyncjob()))
    await settle(supervisor)
    assert provider.calls == []
    assert writer.status["phase"] == "Failed"
    assert writer.status["conditions"][-1]["reason"] == "Cancelled"


async def test_a_terminal_job_is_not_changed_by_a_cancel() -> None:
    provider = ScriptedProvider("openai")
    done = asyncjob({"phase": "Completed", "completionTime": "2026-02-19T08:00:01Z"})
    supervisor, writer, _ = await start(provider, done)
    supervisor.observe("MODIFIED", with_cancel(done))
    await settle(supervisor)
    assert writer.patches == []
    assert supervisor.tasks == {}


# --- with operator shards: only the replica owning the job acts --------------------------

TWO = Ownership("me", "me/1", {"me": "me/1", "b": "b/1"})


def named(owner: str) -> str:
    """A job name whose hashed shard `owner` runs when me and b are live."""
    return next(
        f"j{i}" for i in range(1000) if shards.owner(shards.shard_of(f"j{i}"), ["me", "b"]) == owner
    )


async def sharded(obj: dict[str, Any]) -> tuple[Supervisor, StatusWriter]:
    secrets, writer = FakeSecrets(), StatusWriter(obj)

    async def delete(name: str, uid: str) -> None:
        pass

    ctx = context(writer, secrets, {"openai": ScriptedProvider("openai")})
    supervisor = Supervisor(ctx, Expiry(delete, ctx.wall), WatchHealth(time.monotonic), TWO)
    supervisor.listed([])  # an empty first listing opens admission
    await asyncio.sleep(0)
    return supervisor, writer


async def test_a_cancel_of_another_shards_job_is_left_to_its_owner() -> None:
    theirs = with_cancel(asyncjob(name=named("b")))
    supervisor, writer = await sharded(theirs)
    supervisor.observe("MODIFIED", theirs)
    assert supervisor.tasks == {}
    assert writer.patches == []


async def test_a_cancel_of_a_job_another_live_member_runs_is_left_to_it() -> None:
    running = {"phase": "Processing", "attempts": 1, "operator": "b/1"}
    job = with_cancel(asyncjob(running, name=named("me")))
    supervisor, writer = await sharded(job)
    supervisor.observe("MODIFIED", job)
    assert supervisor.tasks == {}
    assert writer.patches == []


async def test_a_cancel_of_an_own_shards_pending_job_is_written_here() -> None:
    job = with_cancel(asyncjob(name=named("me")))
    supervisor, writer = await sharded(job)
    supervisor.observe("MODIFIED", job)
    await settle(supervisor)
    assert writer.status["phase"] == "Failed"
    assert writer.status["statusCode"] == 499
