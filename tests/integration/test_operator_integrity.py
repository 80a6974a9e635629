"""Integrity against the real plane: a stored result is final, a job reads only its own
request, and a request Secret that comes late is awaited on the operator's clock."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from asyncjobs.core import resources
from asyncjobs.core.jobs import format_time
from asyncjobs.core.kube import KubeClient
from asyncjobs.core.payloads import PayloadRef
from tests.integration.operator_support import (
    FakeOpenAI,
    get_job,
    read_result,
    running_operator,
    submit,
    wait_terminal,
)
from tests.support import bodies

MODEL = "openai/gpt-integrity"


def chat(text: str) -> dict[str, object]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}]}


async def test_job_found_processing_with_its_result_stored_completes_without_a_new_call(
    kube: KubeClient,
    namespace: str,
    kubeconfig_path: str,
    log_dir: Path,
    tmp_path: Path,
    fake: FakeOpenAI,
) -> None:
    # What an operator killed between storing the answer of call 1 and writing the
    # terminal status leaves behind.
    name = await submit(kube, namespace, chat("hi"), model=MODEL)
    status_path = resources.asyncjobs_path(namespace, name, status=True)
    interrupted = {
        "phase": "Processing",
        "attempts": 1,
        "attemptsOnModel": 1,
        "provider": "openai",
        "modelUsed": MODEL,
    }
    job = await kube.merge_patch(status_path, {"status": interrupted})
    stored = {"object": "chat.completion", "choices": [], "usage": {"total_tokens": 11}}
    async with bodies.open_bodies(kube, namespace) as store:
        await store.put(job, "result", json.dumps(stored).encode(), "application/json", call=1)
    providers = fake.providers_config(tmp_path / "p.yaml")
    with running_operator(kubeconfig_path, namespace, providers, log_dir) as operator:
        await operator.astart()
        done = await wait_terminal(kube, namespace, name)
        assert 'asyncjobs_operator_job_interruptions_total{outcome="result_reused"} 1.0' in (
            await operator.ametrics()
        )
    status = done["status"]
    assert status["phase"] == "Completed", status
    assert PayloadRef.from_dict(status["resultRef"]).name == bodies.stored_name(name, "result", 1)
    assert (status["attempts"], status["interruptions"]) == (1, 1)
    assert status["usage"] == {"totalTokens": 11}
    assert await read_result(kube, namespace, done) == stored
    assert (await fake.astats())["count"] == 0


async def test_request_secret_of_another_job_fails_the_job_and_is_never_sent(
    kube: KubeClient,
    namespace: str,
    kubeconfig_path: str,
    log_dir: Path,
    tmp_path: Path,
    fake: FakeOpenAI,
) -> None:
    victim = await submit(kube, namespace, chat("the victim's private prompt"), model=MODEL)
    victim_ref = (await get_job(kube, namespace, victim) or {})["spec"]["requestRef"]
    thief = await submit(
        kube,
        namespace,
        chat("unused"),
        model=MODEL,
        spec={"requestRef": victim_ref},
        store_request=False,
    )
    providers = fake.providers_config(tmp_path / "p.yaml")
    with running_operator(kubeconfig_path, namespace, providers, log_dir) as operator:
        await operator.astart()
        stolen = await wait_terminal(kube, namespace, thief)
        assert (await wait_terminal(kube, namespace, victim))["status"]["phase"] == "Completed"
    assert stolen["status"]["phase"] == "Failed"
    assert stolen["status"]["statusCode"] == 400
    assert stolen["status"]["conditions"][-1]["reason"] == "RequestNotOwned"
    assert "private prompt" not in json.dumps(stolen["status"])
    # Only the victim's own job reached the provider.
    assert (await fake.astats())["count"] == 1


async def test_request_secret_that_appears_late_is_awaited_on_the_operators_clock(
    kube: KubeClient,
    namespace: str,
    kubeconfig_path: str,
    log_dir: Path,
    tmp_path: Path,
    fake: FakeOpenAI,
) -> None:
    # The API's clock said ten minutes ago (a skewed clock, or a job that waited in a
    # slow apiserver): the grace must still count from when the operator looks.
    long_ago = format_time(datetime.now(UTC) - timedelta(minutes=10))
    body = json.dumps(chat("late")).encode()
    name = await submit(
        kube,
        namespace,
        body,
        model=MODEL,
        spec={"submittedAt": long_ago, "activeDeadlineSeconds": 3600},
        store_request=False,
    )
    providers = fake.providers_config(tmp_path / "p.yaml")
    with running_operator(kubeconfig_path, namespace, providers, log_dir) as operator:
        await operator.astart()
        # The operator has the job, and has looked for its request more than once (it
        # looks every 0.5 s), before the Secret exists.
        deadline = time.monotonic() + 30
        while "asyncjobs_operator_jobs_running 1.0" not in await operator.ametrics():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)
        job = await get_job(kube, namespace, name)
        assert job is not None
        assert (job.get("status") or {}).get("phase", "Pending") == "Pending", job.get("status")
        async with bodies.open_bodies(kube, namespace) as store:
            await store.put(job, "request", body, "application/json")
        done = await wait_terminal(kube, namespace, name)
    assert done["status"]["phase"] == "Completed", done["status"]
    assert (await fake.astats())["count"] == 1
