"""Cancel end to end: a client talks to the real API, the operator and a slow fake
OpenAI server run as real processes. A pending job, a running one (its provider call is
abandoned: the fake sees its connection closed), a finished one; through the API and
through `kubectl annotate`."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from asyncjobs.core import cancel, resources
from asyncjobs.core.kube import KubeClient
from asyncjobs.core.request_types import RequestType
from tests.integration import test_e2e
from tests.integration.operator_support import Operator, wait_for_job
from tests.integration.test_e2e import Client, chat
from tests.integration.test_kubectl_experience import run_kubectl

# The end-to-end tests' fake provider, operator (not started) and API.
system = test_e2e.system
System = tuple[Client, Operator, Any]
CHAT = "/v1/async/chat/completions"


async def cancel_job(client: Client, job_id: str) -> tuple[int, dict[str, Any]]:
    async with client.session.post(f"{client.base}{CHAT}/{job_id}/cancel") as answer:
        return answer.status, await answer.json()


async def wait_in_flight(fake: Any, count: int = 1) -> None:
    deadline = time.monotonic() + 20
    while (await fake.astats())["in_flight"] < count:
        assert time.monotonic() < deadline, "the call never reached the provider"
        await asyncio.sleep(0.05)


def assert_cancelled(document: dict[str, Any]) -> None:
    assert document["status"] == "failed", document
    assert document["status_code"] == 499
    assert document["error"]["error"]["type"] == "cancelled"
    assert document["error"]["error"]["message"] == "the job was cancelled"
    # Bifrost's fields of a failed job, nothing else.
    allowed = {"id", "request_id", "status", "created_at", "completed_at", "expires_at"}
    assert set(document) - allowed == {"status_code", "error"}


async def assert_cancelled_object(kube: KubeClient, namespace: str, job_id: str) -> None:
    obj = await kube.get(resources.asyncjobs_path(namespace, job_id))
    status = obj["status"]
    assert status["phase"] == "Failed"
    failed = [c for c in status["conditions"] if c["type"] == "Failed"]
    assert failed[0]["reason"] == "Cancelled"
    assert status["expiresAt"] > status["completionTime"]


@pytest.mark.timeout(120)
async def test_a_running_call_is_abandoned_and_the_job_fails_at_once(
    system: System,
    kube: KubeClient,
    namespace: str,
) -> None:
    client, operator, fake = system
    await fake.ascript("gpt-slow", {"latency_ms": 8000})
    await operator.astart()
    job_id = await client.submit(
        RequestType.CHAT_COMPLETION, chat("openai/gpt-slow"), "application/json"
    )
    await wait_in_flight(fake)
    status, document = await cancel_job(client, job_id)
    assert status == 202, document
    assert document["status"] == "processing"
    asked = time.monotonic()
    polled = await client.poll(RequestType.CHAT_COMPLETION, job_id, timeout=5)
    # Terminal long before the provider's 8 s answer: the call was not awaited.
    assert time.monotonic() - asked < 5
    assert_cancelled(polled)
    await assert_cancelled_object(kube, namespace, job_id)
    # The fake's handler ends after its latency and finds the connection closed.
    deadline = time.monotonic() + 15
    while (await fake.astats())["disconnected"] < 1:
        assert time.monotonic() < deadline, "the provider call was not abandoned"
        await asyncio.sleep(0.1)
    assert (await fake.astats())["count"] == 1
    # A second cancel answers the cancelled job as it is.
    status, again = await cancel_job(client, job_id)
    assert (status, again["status_code"]) == (200, 499)
    assert 'reason="Cancelled"' in await operator.ametrics()


async def test_a_pending_job_is_cancelled_without_a_call(
    system: System,
    kube: KubeClient,
    namespace: str,
) -> None:
    client, operator, fake = system
    # No operator yet: the job stays pending until it starts.
    job_id = await client.submit(
        RequestType.CHAT_COMPLETION, chat("openai/gpt-never"), "application/json"
    )
    status, document = await cancel_job(client, job_id)
    assert (status, document["status"]) == (202, "pending")
    await operator.astart()
    assert_cancelled(await client.poll(RequestType.CHAT_COMPLETION, job_id, timeout=20))
    await assert_cancelled_object(kube, namespace, job_id)
    assert (await fake.astats())["count"] == 0


async def test_a_finished_job_cannot_be_cancelled(
    system: System,
    kube: KubeClient,
    namespace: str,
) -> None:
    client, operator, _ = system
    await operator.astart()
    job_id = await client.submit(
        RequestType.CHAT_COMPLETION, chat("local/echo"), "application/json"
    )
    assert (await client.poll(RequestType.CHAT_COMPLETION, job_id))["status"] == "completed"
    status, document = await cancel_job(client, job_id)
    assert status == 409
    assert document["error"]["message"] == "job is already completed and cannot be cancelled"
    obj = await kube.get(resources.asyncjobs_path(namespace, job_id))
    assert not cancel.requested(obj["metadata"])
    assert obj["status"]["phase"] == "Completed"


@pytest.mark.timeout(120)
async def test_kubectl_annotate_cancels_a_running_job(
    system: System,
    kube: KubeClient,
    namespace: str,
    kubeconfig_path: str,
) -> None:
    client, operator, fake = system
    await fake.ascript("gpt-slow", {"latency_ms": 8000})
    await operator.astart()
    job_id = await client.submit(
        RequestType.CHAT_COMPLETION, chat("openai/gpt-slow"), "application/json"
    )
    await wait_in_flight(fake)
    await run_kubectl(
        kubeconfig_path,
        "-n",
        namespace,
        "annotate",
        "asyncjob",
        job_id,
        f"{cancel.ANNOTATION}=true",
    )
    await wait_for_job(
        kube, namespace, job_id, lambda o: o["status"].get("phase") == "Failed", timeout=5
    )
    await assert_cancelled_object(kube, namespace, job_id)
    assert_cancelled(await client.poll(RequestType.CHAT_COMPLETION, job_id, timeout=5))
