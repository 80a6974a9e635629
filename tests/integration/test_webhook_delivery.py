"""Completion webhooks delivered by the real operator to a real receiver: an aiohttp
server in the test that verifies every delivery with the `standardwebhooks` package (an
implementation independent of ours), answers the first attempts with 503 on purpose and
counts what it receives. Retried on 5xx, not retried on another 4xx, never sent to a
private address the endpoint does not allow; each attempt recorded on the job and the
endpoint's counters."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from asyncjobs.core.kube import KubeClient
from tests.integration.webhook_support import (
    CHAT,
    Receiver,
    endpoint_status,
    register,
    serving_receiver,
    settled,
    submit,
    webhook_system,
)


@pytest.fixture
def api_base(kubeconfig_path: str, namespace: str, log_dir: Path, tmp_path: Path) -> Iterator[str]:
    with webhook_system(
        kubeconfig_path, namespace, log_dir, tmp_path, "--webhook-first-retry-seconds", "0.2"
    ) as base:
        yield base


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, TestServer]]:
    async with serving_receiver() as served:
        yield served


async def test_a_delivery_is_signed_retried_on_503_and_recorded(
    api_base: str,
    kube: KubeClient,
    namespace: str,
    receiver: tuple[Receiver, TestServer],
) -> None:
    state, server = receiver
    state.fail_first = 2
    url = f"http://127.0.0.1:{server.port}/hook"
    async with aiohttp.ClientSession() as session:
        endpoint = await register(session, api_base, "orders", url, allow_private_network=True)
        state.secret = endpoint["secret"]
        job_id = await submit(session, api_base, "orders")
    job = await settled(kube, namespace, job_id)
    notification = job["status"]["webhook"]
    assert notification["outcome"] == "delivered"
    assert notification["attempts"] == 3
    assert [r.get("statusCode") for r in notification["records"]] == [503, 503, 200]
    assert "deliveredTime" in notification
    assert state.unverified == 0
    assert len(state.received) == 3
    # The same webhook-id on every attempt, and it is the one the job recorded.
    assert set(state.ids) == {notification["deliveryId"]}
    event = state.received[-1]
    assert event["event"] == "async_job.completed"
    assert event["data"]["job_id"] == job_id
    assert event["data"]["status"] == "completed"
    assert event["data"]["result_url"] == f"{CHAT}/{job_id}"
    hook = await endpoint_status(kube, namespace, "orders")
    assert hook["delivered"] == 1
    assert hook["lastStatusCode"] == 200


async def test_a_400_is_not_retried(
    api_base: str,
    kube: KubeClient,
    namespace: str,
    receiver: tuple[Receiver, TestServer],
) -> None:
    state, server = receiver
    state.fail_first, state.fail_status = 5, 400
    url = f"http://127.0.0.1:{server.port}/hook"
    async with aiohttp.ClientSession() as session:
        endpoint = await register(session, api_base, "strict", url, allow_private_network=True)
        state.secret = endpoint["secret"]
        job_id = await submit(session, api_base, "strict")
    notification = (await settled(kube, namespace, job_id))["status"]["webhook"]
    assert (notification["outcome"], notification["attempts"]) == ("failed", 1)
    assert len(state.received) == 1
    hook = await endpoint_status(kube, namespace, "strict")
    assert hook["failures"] == 1


async def test_a_private_address_is_never_reached_unless_allowed(
    api_base: str,
    kube: KubeClient,
    namespace: str,
    receiver: tuple[Receiver, TestServer],
) -> None:
    state, server = receiver
    # A name resolving to loopback, with https (so the URL itself is valid without the
    # private-network permission): refused at connect time, every attempt.
    url = f"https://localhost:{server.port}/hook"
    async with aiohttp.ClientSession() as session:
        endpoint = await register(session, api_base, "inside", url, max_attempts=2)
        state.secret = endpoint["secret"]
        job_id = await submit(session, api_base, "inside")
    notification = (await settled(kube, namespace, job_id))["status"]["webhook"]
    assert (notification["outcome"], notification["attempts"]) == ("failed", 2)
    assert all("allow_private_network" in r["error"] for r in notification["records"])
    assert state.received == []


async def test_an_endpoint_with_include_response_gets_the_result_inlined(
    api_base: str,
    kube: KubeClient,
    namespace: str,
    receiver: tuple[Receiver, TestServer],
) -> None:
    state, server = receiver
    url = f"http://127.0.0.1:{server.port}/hook"
    async with aiohttp.ClientSession() as session:
        endpoint = await register(
            session, api_base, "inline", url, allow_private_network=True, include_response=True
        )
        state.secret = endpoint["secret"]
        job_id = await submit(session, api_base, "inline")
        notification = (await settled(kube, namespace, job_id))["status"]["webhook"]
        assert notification["outcome"] == "delivered"
        async with session.get(f"{api_base}{CHAT}/{job_id}") as polled:
            assert polled.status == 200
            result = (await polled.json())["result"]
    (event,) = state.received
    assert state.unverified == 0
    # The same result a poll answers, inside the signed body.
    assert event["data"]["response"] == result
    assert "response_omitted" not in event["data"]
    assert "result_expired" not in event["data"]
