"""A job run without a cluster: a stored result is final, a Kubernetes error never pays
the provider twice, an interruption spends no attempt, and a job reads only its own
request."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from asyncjobs.controller.executor import JobRun
from asyncjobs.controller.metrics import WaitingByKey
from asyncjobs.core import cpu_worker, payloads, results, secret_payloads
from asyncjobs.core.conditions import Reason
from asyncjobs.core.cooldown import CooldownPolicy
from asyncjobs.core.fair_share import group_label
from asyncjobs.core.jobs import format_time
from asyncjobs.core.kube import KubeError
from asyncjobs.core.lifecycle import Policy, Resume, Run
from asyncjobs.core.providers.base import ProviderError, ProviderResult
from asyncjobs.core.providers.registry import ProviderLimits
from tests.unit.controller.fakes import (
    REQUEST,
    SUBMITTED,
    Clock,
    FakeSecrets,
    ScriptedProvider,
    StatusWriter,
    answer,
    asyncjob,
    context,
)

INTERRUPTED = {
    "phase": "Processing",
    "attempts": 1,
    "attemptsOnModel": 1,
    "modelUsed": "openai/gpt-4o",
    "provider": "openai",
}


def stored_result(secrets: FakeSecrets, name: str) -> dict[str, object]:
    ref = payloads.PayloadRef.from_dict(
        {
            **{"secretName": name, "contentType": "application/json"},
            **_ref_fields(secrets, name),
        }
    )
    chunks = [secrets.objects[chunk] for chunk in ref.chunk_names()]
    return json.loads(secret_payloads.joined_body(chunks, ref))  # type: ignore[no-any-return]


def _ref_fields(secrets: FakeSecrets, name: str) -> dict[str, object]:
    annotations = secrets.objects[f"{name}-0"]["metadata"]["annotations"]
    return {
        "chunks": int(annotations["asyncjobs.dev/payload-chunks"]),
        "size": int(annotations["asyncjobs.dev/payload-size"]),
        "sha256": annotations["asyncjobs.dev/payload-sha256"],
    }


async def test_claimed_job_stores_its_result_under_the_call_number_and_completes() -> None:
    obj = asyncjob()
    secrets, writer, provider = FakeSecrets(), StatusWriter(obj), ScriptedProvider("openai")
    await secrets.put_body(obj, "request", REQUEST)
    await JobRun(context(writer, secrets, {"openai": provider}), obj).run(Run(0, 0, Reason.CLAIMED))
    status = writer.status
    assert status["phase"] == "Completed"
    assert status["resultRef"]["secretName"] == "j1-result-1"
    assert (status["attempts"], status["attemptsOnModel"]) == (1, 1)
    assert "interruptions" not in status
    assert "repeatedCalls" not in status
    assert stored_result(secrets, "j1-result-1")["choices"][0]["message"]["content"] == "hello"
    assert len(provider.calls) == 1


async def test_an_answer_prepared_in_the_worker_is_stored_with_its_extra_fields_and_usage() -> None:
    obj = asyncjob()
    prepared = results.prepare(answer("from the worker").body)
    provider = ScriptedProvider("openai", ProviderResult(prepared=prepared))
    secrets, writer = FakeSecrets(), StatusWriter(obj)
    await secrets.put_body(obj, "request", REQUEST)
    await JobRun(context(writer, secrets, {"openai": provider}), obj).run(Run(0, 0, Reason.CLAIMED))
    status = writer.status
    assert status["phase"] == "Completed"
    assert status["usage"] == {"promptTokens": 3, "completionTokens": 2, "totalTokens": 5}
    stored = stored_result(secrets, "j1-result-1")
    assert stored["choices"][0]["message"]["content"] == "from the worker"  # type: ignore[index]
    assert stored["extra_fields"]["provider"] == "openai"  # type: ignore[index]


async def test_resumed_job_finishes_from_the_stored_result_without_calling_again() -> None:
    # The previous operator stored the answer of call 1 and stopped before the status.
    obj = asyncjob(INTERRUPTED)
    secrets, writer, provider = FakeSecrets(), StatusWriter(obj), ScriptedProvider("openai")
    await secrets.put_body(obj, "request", REQUEST)
    await secrets.put_body(
        obj, "result", json.dumps({"usage": {"total_tokens": 9}}).encode(), call=1
    )
    await JobRun(context(writer, secrets, {"openai": provider}), obj).run(Resume(call=1))
    status = writer.status
    assert provider.calls == []
    assert status["phase"] == "Completed"
    assert status["resultRef"]["secretName"] == "j1-result-1"
    assert status["usage"] == {"totalTokens": 9}
    assert status["interruptions"] == 1
    assert status["attempts"] == 1


async def test_resumed_job_without_a_stored_result_repeats_the_call_once() -> None:
    obj = asyncjob(INTERRUPTED)
    secrets, writer, provider = FakeSecrets(), StatusWriter(obj), ScriptedProvider("openai")
    await secrets.put_body(obj, "request", REQUEST)
    ctx = context(writer, secrets, {"openai": provider})
    await JobRun(ctx, obj).run(Resume(call=1))
    status = writer.status
    assert len(provider.calls) == 1
    assert status["phase"] == "Completed"
    assert (status["attempts"], status["interruptions"], status["repeatedCalls"]) == (1, 1, 1)
    assert status["resultRef"]["secretName"] == "j1-result-2"  # never call 1's name
    repeated = ctx.metrics.registry.get_sample_value(
        "asyncjobs_operator_provider_calls_repeated_total"
    )
    assert repeated == 1.0


async def test_a_partly_stored_result_is_not_used_and_not_mixed_with_the_new_one() -> None:
    # Call 1 stored chunk 0 of a two-chunk result, then its operator stopped.
    obj = asyncjob(INTERRUPTED)
    secrets, writer, provider = FakeSecrets(), StatusWriter(obj), ScriptedProvider("openai")
    await secrets.put_body(obj, "request", REQUEST)
    await secrets.put_body(obj, "result", b"x" * (payloads.CHUNK_SIZE + 10), call=1)
    del secrets.objects["j1-result-1-1"]
    await JobRun(context(writer, secrets, {"openai": provider}), obj).run(Resume(call=1))
    status = writer.status
    assert len(provider.calls) == 1
    assert status["phase"] == "Completed"
    assert status["resultRef"]["secretName"] == "j1-result-2"
    assert stored_result(secrets, "j1-result-2")["choices"][0]["message"]["content"] == "hello"


async def test_apiserver_errors_while_storing_the_result_are_retried_without_a_new_call() -> None:
    obj = asyncjob()
    secrets, writer, provider = FakeSecrets(), StatusWriter(obj), ScriptedProvider("openai")
    await secrets.put_body(obj, "request", REQUEST)
    secrets.failures = [
        KubeError(503, "ServiceUnavailable", "apiserver restarting"),
        OSError("connection refused"),
        KubeError(0, "", "timeout"),
    ]
    await JobRun(context(writer, secrets, {"openai": provider}), obj).run(Run(0, 0, Reason.CLAIMED))
    assert len(provider.calls) == 1
    assert writer.status["phase"] == "Completed"
    assert writer.status["resultRef"]["secretName"] == "j1-result-1"


async def test_a_create_that_succeeded_unseen_is_recognised_by_its_bytes() -> None:
    # The first create happened, but its answer was lost: the retry meets a 409 on the
    # same bytes and goes on.
    obj = asyncjob()
    secrets, writer, provider = FakeSecrets(), StatusWriter(obj), ScriptedProvider("openai")
    await secrets.put_body(obj, "request", REQUEST)
    real_create = secrets.create
    lost_once = []

    async def create_then_lose_the_answer(path: str, secret: dict[str, object]) -> object:
        created = await real_create(path, secret)
        if not lost_once:
            lost_once.append(True)
            raise KubeError(0, "", "connection reset")
        return created

    secrets.create = create_then_lose_the_answer  # type: ignore[method-assign]
    await JobRun(context(writer, secrets, {"openai": provider}), obj).run(Run(0, 0, Reason.CLAIMED))
    assert len(provider.calls) == 1
    assert writer.status["phase"] == "Completed"


async def test_job_interrupted_too_often_fails_without_a_call() -> None:
    obj = asyncjob({**INTERRUPTED, "interruptions": 3})
    secrets, writer, provider = FakeSecrets(), StatusWriter(obj), ScriptedProvider("openai")
    await secrets.put_body(obj, "request", REQUEST)
    policy = Policy(max_interruptions=3)
    await JobRun(context(writer, secrets, {"openai": provider}, policy), obj).run(Resume(1))
    assert provider.calls == []
    assert writer.status["phase"] == "Failed"
    assert writer.status["conditions"][-1]["reason"] == "InterruptionLimitExceeded"
    assert writer.events == ["InterruptionLimitExceeded"]


async def test_request_secret_of_another_job_fails_the_job_and_is_never_sent() -> None:
    victim = asyncjob(name="victim", uid="uid-victim")
    thief = asyncjob(name="thief", uid="uid-thief")
    thief["spec"]["requestRef"] = victim["spec"]["requestRef"]
    secrets, writer, provider = FakeSecrets(), StatusWriter(thief), ScriptedProvider("openai")
    await secrets.put_body(victim, "request", REQUEST)
    await JobRun(context(writer, secrets, {"openai": provider}), thief).run(
        Run(0, 0, Reason.CLAIMED)
    )
    assert provider.calls == []
    assert writer.status["phase"] == "Failed"
    assert writer.status["statusCode"] == 400
    assert writer.status["conditions"][-1]["reason"] == "RequestNotOwned"


async def test_request_that_appears_late_runs_even_long_after_the_submit_time() -> None:
    # The operator first sees the job 10 minutes after the API's submit time (a backlog,
    # a skewed API clock); the request Secret shows up two reads later.
    obj = asyncjob()
    secrets, writer, provider = FakeSecrets(), StatusWriter(obj), ScriptedProvider("openai")
    real_get = secrets.get
    misses = []

    async def get_appearing_late(path: str) -> dict[str, object]:
        if path.endswith("-request-0") and len(misses) < 2:
            misses.append(path)
            if len(misses) == 2:
                await secrets.put_body(obj, "request", REQUEST)
            raise KubeError(404, "NotFound", "not yet")
        return await real_get(path)

    secrets.get = get_appearing_late  # type: ignore[method-assign]
    wall = Clock(SUBMITTED + timedelta(minutes=10), step_seconds=0.001)
    ctx = context(writer, secrets, {"openai": provider}, wall=wall)
    await JobRun(ctx, obj).run(Run(0, 0, Reason.CLAIMED))
    assert len(misses) == 2
    assert writer.status["phase"] == "Completed"
    assert len(provider.calls) == 1


async def test_missing_request_fails_after_the_grace_on_the_operators_clock() -> None:
    obj = asyncjob()
    writer, provider = StatusWriter(obj), ScriptedProvider("openai")
    policy = Policy(request_grace_seconds=5, request_poll_seconds=0.001)
    wall = Clock(SUBMITTED, step_seconds=1.0)  # each read of the clock: one second later
    await JobRun(context(writer, None, {"openai": provider}, policy, wall), obj).run(
        Run(0, 0, Reason.CLAIMED)
    )
    assert provider.calls == []
    assert writer.status["conditions"][-1]["reason"] == "RequestNotFound"


async def test_retries_then_fallback_then_success() -> None:
    obj = asyncjob(fallbacks=["anthropic/claude"], backoffLimit=1)
    secrets, writer = FakeSecrets(), StatusWriter(obj)
    await secrets.put_body(obj, "request", REQUEST)
    busy = ProviderError("busy", status_code=503, retryable=True, retry_after=0)
    openai = ScriptedProvider("openai", busy, busy)
    anthropic = ScriptedProvider("anthropic", answer("from claude"))
    await JobRun(context(writer, secrets, {"openai": openai, "anthropic": anthropic}), obj).run(
        Run(0, 0, Reason.CLAIMED)
    )
    status = writer.status
    assert (len(openai.calls), len(anthropic.calls)) == (2, 1)
    assert status["phase"] == "Completed"
    assert (status["attempts"], status["attemptsOnModel"]) == (3, 1)
    assert status["modelUsed"] == "anthropic/claude"
    assert status["resultRef"]["secretName"] == "j1-result-3"


async def test_a_job_held_past_its_deadline_fails_at_once_without_a_call() -> None:
    # Another job's 429 asked for ten minutes; this job has one minute left.
    obj = asyncjob(activeDeadlineSeconds=60)
    secrets, writer, provider = FakeSecrets(), StatusWriter(obj), ScriptedProvider("openai")
    await secrets.put_body(obj, "request", REQUEST)
    ctx = context(writer, secrets, {"openai": provider})
    slow_down = ProviderError("slow down", status_code=429, retryable=True, retry_after=600)
    async with ctx.admission.slot("openai", (0.0, "other")) as call:
        call.report(slow_down)
    await JobRun(ctx, obj).run(Run(0, 0, Reason.CLAIMED))
    status = writer.status
    assert provider.calls == []
    assert status["phase"] == "Failed"
    assert status["statusCode"] == 429
    assert status["conditions"][-1]["reason"] == "ProviderOverloaded"
    assert "attempts" not in status
    message = status["error"]["error"]["message"]
    assert message.startswith("provider openai is rate limited until ")
    deadline = format_time(SUBMITTED + timedelta(seconds=60))
    assert message.endswith(f"beyond the job's deadline ({deadline})")
    sample = ctx.metrics.registry.get_sample_value
    labels = {"provider": "openai", "cause": "throttled"}
    assert sample("asyncjobs_operator_provider_cooldowns_total", labels) == 1.0
    assert sample("asyncjobs_operator_provider_cooldowns_active") == 1.0


async def test_a_429_opens_the_breaker_before_the_slot_is_released() -> None:
    obj = asyncjob(backoffLimit=1)
    secrets, writer = FakeSecrets(), StatusWriter(obj)
    await secrets.put_body(obj, "request", REQUEST)
    throttled = ProviderError("slow down", status_code=429, retryable=True, retry_after=0)
    provider = ScriptedProvider("openai", throttled)
    ctx = context(writer, secrets, {"openai": provider})
    ctx.admission.budget.cooldown = CooldownPolicy(base_seconds=0.05, jitter=0.0)
    ctx.admission.budget.providers.clear()
    ctx.admission.reconfigure(10, {"openai": ProviderLimits(4, None)})
    await JobRun(ctx, obj).run(Run(0, 0, Reason.CLAIMED))
    assert writer.status["phase"] == "Completed"
    assert len(provider.calls) == 2
    labels = {"provider": "openai", "cause": "throttled"}
    sample = ctx.metrics.registry.get_sample_value
    assert sample("asyncjobs_operator_provider_cooldowns_total", labels) == 1.0
    assert sample("asyncjobs_operator_provider_cooldowns_active") == 0.0


async def test_a_job_waits_in_its_keys_group_at_its_priority() -> None:
    """The run hands the admission queue what the API copied onto the job: its key (the
    group) and its priority, which puts it ahead of an older waiter of the same key."""
    obj = asyncjob(name="urgent", virtualKeyId="team-a", keyWeight=3, priority=4)
    secrets, writer, provider = FakeSecrets(), StatusWriter(obj), ScriptedProvider("openai")
    await secrets.put_body(obj, "request", REQUEST)
    ctx = context(writer, secrets, {"openai": provider})
    ctx.admission.budget.providers.clear()
    ctx.admission.reconfigure(1, {"openai": ProviderLimits(1, None)})
    calls_before_older: list[int] = []

    async def older() -> None:
        # Same key, submitted a minute earlier, default priority.
        order = (0, SUBMITTED.timestamp() - 60, "older")
        async with ctx.admission.slot("openai", order, group="team-a", weight=3):
            calls_before_older.append(len(provider.calls))

    async with ctx.admission.slot("openai", (0, 0.0, "holder")):
        waiting = asyncio.create_task(older())
        run = asyncio.create_task(JobRun(ctx, obj).run(Run(0, 0, Reason.CLAIMED)))
        for _ in range(10):
            await asyncio.sleep(0)
        assert ctx.admission.waiting_by_group() == {"team-a": 2}
        key = {"key": group_label("team-a")}
        assert ctx.metrics.registry.get_sample_value(WaitingByKey.NAME, key) == 2.0
    await asyncio.gather(run, waiting)
    assert writer.status["phase"] == "Completed"
    assert calls_before_older == [1]  # the job with priority 4 called first


class RecordingWorker:
    """Stands in for the CPU worker: runs the function here, remembering it was sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def run(self, function: Callable[..., Any], *args: Any) -> Any:
        self.sent.append(function.__name__)
        return function(*args)


async def test_a_large_stored_result_is_parsed_for_its_usage_in_the_cpu_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    worker = RecordingWorker()
    monkeypatch.setattr(cpu_worker, "_shared", worker)
    obj = asyncjob(INTERRUPTED)
    secrets, writer, provider = FakeSecrets(), StatusWriter(obj), ScriptedProvider("openai")
    await secrets.put_body(obj, "request", REQUEST)
    large = {"data": [[0.5] * 1024] * 256, "usage": {"total_tokens": 7}}  # over 1 MiB
    await secrets.put_body(obj, "result", json.dumps(large).encode(), call=1)
    await JobRun(context(writer, secrets, {"openai": provider}), obj).run(Resume(call=1))
    assert writer.status["usage"] == {"totalTokens": 7}
    assert worker.sent == ["_usage_of_stored"], "parsed in the worker, not on the loop"
