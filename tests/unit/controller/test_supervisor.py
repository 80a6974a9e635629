"""The supervisor without a cluster: watch events become job runs, a claim that loses a
race is looked at again, a deleted job stops quietly, a deadline ends a hung call, and
a terminal job is handed to expiry."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

from asyncjobs.controller.executor import Context
from asyncjobs.controller.expiry import Expiry
from asyncjobs.controller.health import WatchHealth
from asyncjobs.controller.supervisor import Supervisor
from asyncjobs.core.lifecycle import Policy
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


class Deleted(list[str]):
    def __init__(self) -> None:
        super().__init__()
        self.any = asyncio.Event()


async def supervised(ctx: Context) -> tuple[Supervisor, Expiry, Deleted]:
    deleted = Deleted()

    async def delete(name: str, uid: str) -> None:
        deleted.append(name)
        deleted.any.set()

    expiry = Expiry(delete, ctx.wall)
    supervisor = Supervisor(ctx, expiry, WatchHealth(time.monotonic))
    supervisor.listed([])  # an empty first listing opens admission
    await asyncio.sleep(0)  # admission resumes on the next turn of the loop
    return supervisor, expiry, deleted


async def settle(supervisor: Supervisor) -> None:
    await asyncio.wait_for(asyncio.gather(*supervisor.tasks.values()), timeout=5)


async def test_pending_job_is_run_to_completion_and_handed_to_expiry() -> None:
    obj = asyncjob()
    secrets, writer, provider = FakeSecrets(), StatusWriter(obj), ScriptedProvider("openai")
    await secrets.put_body(obj, "request", REQUEST)
    supervisor, expiry, _ = await supervised(context(writer, secrets, {"openai": provider}))
    supervisor.observe("ADDED", obj)
    assert list(supervisor.tasks) == ["j1"]
    supervisor.observe("MODIFIED", obj)  # a second event while it runs starts nothing
    await settle(supervisor)
    assert writer.status["phase"] == "Completed"
    assert len(provider.calls) == 1
    assert len(expiry) == 1
    assert supervisor.tasks == {}


async def test_claim_that_lost_a_race_is_decided_again_from_the_fresh_object() -> None:
    obj = asyncjob()
    secrets, writer, provider = FakeSecrets(), StatusWriter(obj), ScriptedProvider("openai")
    await secrets.put_body(obj, "request", REQUEST)
    secrets.objects["j1"] = obj  # what the supervisor's re-read gets
    writer.conflicts = 1
    supervisor, _, _ = await supervised(context(writer, secrets, {"openai": provider}))
    supervisor.observe("ADDED", obj)
    await settle(supervisor)
    assert "j1" in secrets.reads  # looked at again after the conflict
    assert writer.status["phase"] == "Completed"
    assert writer.status["attempts"] == 1
    assert len(provider.calls) == 1


async def test_job_deleted_meanwhile_stops_without_a_call() -> None:
    obj = asyncjob()
    secrets, writer, provider = FakeSecrets(), StatusWriter(obj), ScriptedProvider("openai")
    await secrets.put_body(obj, "request", REQUEST)
    writer.gone = True
    supervisor, expiry, _ = await supervised(context(writer, secrets, {"openai": provider}))
    supervisor.observe("ADDED", obj)
    await settle(supervisor)
    assert provider.calls == []
    assert len(expiry) == 0


class HangingProvider(ScriptedProvider):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.called = asyncio.Event()

    async def call(self, request: ProviderRequest) -> ProviderResult:
        self.calls.append(request)
        self.called.set()
        await asyncio.Event().wait()
        raise AssertionError("never answers")


async def test_deadline_cancels_a_hung_call_and_fails_the_job() -> None:
    obj = asyncjob(activeDeadlineSeconds=1)
    secrets, writer, provider = FakeSecrets(), StatusWriter(obj), HangingProvider("openai")
    await secrets.put_body(obj, "request", REQUEST)
    wall = Clock(SUBMITTED + timedelta(seconds=0.95))  # 50 ms before the deadline
    ctx = context(writer, secrets, {"openai": provider}, wall=wall)
    supervisor, _, _ = await supervised(ctx)
    supervisor.observe("ADDED", obj)
    await settle(supervisor)
    assert len(provider.calls) == 1
    assert writer.status["phase"] == "Failed"
    assert writer.status["statusCode"] == 504
    assert writer.events == ["DeadlineExceeded"]


async def test_deleting_a_running_job_cancels_its_run() -> None:
    obj = asyncjob()
    secrets, writer, provider = FakeSecrets(), StatusWriter(obj), HangingProvider("openai")
    await secrets.put_body(obj, "request", REQUEST)
    supervisor, _, _ = await supervised(context(writer, secrets, {"openai": provider}))
    supervisor.observe("ADDED", obj)
    task = supervisor.tasks["j1"]
    await asyncio.wait_for(provider.called.wait(), timeout=5)
    supervisor.observe("DELETED", obj)
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    assert supervisor.tasks == {}


async def test_terminal_job_past_its_expiry_is_deleted_at_once() -> None:
    expired = {
        "phase": "Completed",
        "completionTime": "2026-01-01T00:00:01.000Z",
        "expiresAt": "2026-01-01T00:00:02.000Z",
    }
    obj = asyncjob(expired)
    wall = Clock(datetime(2026, 1, 2, tzinfo=SUBMITTED.tzinfo))
    supervisor, expiry, deleted = await supervised(
        context(StatusWriter(obj), wall=wall, policy=Policy())
    )
    runner = asyncio.create_task(expiry.run())
    supervisor.observe("ADDED", obj)
    await asyncio.wait_for(deleted.any.wait(), timeout=5)
    runner.cancel()
    assert deleted == ["j1"]
    assert supervisor.tasks == {}
