"""The /api/webhooks routes that need the operator, against the real operator, API and
receiver (which verifies every delivery with `standardwebhooks`): `test` sends a signed
test event and answers its outcome, `deliveries` lists the endpoint's ended deliveries
with their attempts, `redeliver` sends a job's notification again with the same
webhook-id, and the log's entries go after the retention."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from asyncjobs.core.kube import KubeClient
from tests.integration.webhook_support import (
    Receiver,
    register,
    serving_receiver,
    settled,
    submit,
    webhook_system,
)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, TestServer]]:
    async with serving_receiver() as served:
        yield served


async def call(session: aiohttp.ClientSession, method: str, url: str) -> tuple[int, dict[str, Any]]:
    async with session.request(method, url) as response:
        document: dict[str, Any] = await response.json()
        return response.status, document


async def deliveries(session: aiohttp.ClientSession, base: str, name: str) -> list[dict[str, Any]]:
    status, document = await call(session, "GET", f"{base}/api/webhooks/{name}/deliveries")
    assert status == 200, document
    listed: list[dict[str, Any]] = document["deliveries"]
    assert document["count"] == len(listed)
    return listed


async def wait_for(
    session: aiohttp.ClientSession, base: str, name: str, count: int, timeout: float = 30
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        listed = await deliveries(session, base, name)
        if len(listed) == count or time.monotonic() > deadline:
            return listed
        await asyncio.sleep(0.3)


@pytest.fixture
def api_base(kubeconfig_path: str, namespace: str, log_dir: Path, tmp_path: Path) -> Iterator[str]:
    with webhook_system(
        kubeconfig_path, namespace, log_dir, tmp_path, "--webhook-first-retry-seconds", "0.2"
    ) as base:
        yield base


async def test_a_test_event_is_sent_signed_and_answered(
    api_base: str, receiver: tuple[Receiver, TestServer]
) -> None:
    state, server = receiver
    url = f"http://127.0.0.1:{server.port}/hook"
    async with aiohttp.ClientSession() as session:
        endpoint = await register(session, api_base, "probe", url, allow_private_network=True)
        state.secret = endpoint["secret"]
        status, answer = await call(session, "POST", f"{api_base}/api/webhooks/probe/test")
        assert status == 200, answer
        assert (answer["status"], answer["status_code"]) == ("delivered", 200)
        assert state.unverified == 0
        [event] = state.received
        assert event["data"]["test"] is True
        assert state.ids == [answer["id"]]
        [logged] = await wait_for(session, api_base, "probe", 1)
        assert (logged["id"], logged["status"], logged["job_id"]) == (answer["id"], "test", "")
        # A failing receiver: the test answers the failure (no retry).
        state.fail_first = 5
        status, answer = await call(session, "POST", f"{api_base}/api/webhooks/probe/test")
        assert (status, answer["status"], answer["status_code"]) == (200, "failed", 503)
        assert len(state.received) == 2


async def test_deliveries_list_the_attempts_and_redeliver_sends_again_with_the_same_id(
    api_base: str, kube: KubeClient, namespace: str, receiver: tuple[Receiver, TestServer]
) -> None:
    state, server = receiver
    state.fail_first = 1
    url = f"http://127.0.0.1:{server.port}/hook"
    async with aiohttp.ClientSession() as session:
        endpoint = await register(session, api_base, "orders", url, allow_private_network=True)
        state.secret = endpoint["secret"]
        job_id = await submit(session, api_base, "orders")
        notification = (await settled(kube, namespace, job_id))["status"]["webhook"]
        [logged] = await wait_for(session, api_base, "orders", 1)
        assert logged["id"] == notification["deliveryId"]
        assert (logged["job_id"], logged["status"], logged["attempt_count"]) == (
            job_id,
            "delivered",
            2,
        )
        assert [a["status_code"] for a in logged["attempts"]] == [503, 200]
        base = f"{api_base}/api/webhooks/orders/deliveries"
        state.arrived.clear()
        status, answer = await call(session, "POST", f"{base}/{logged['id']}/redeliver")
        assert status == 202, answer
        assert answer == {"id": logged["id"], "job_id": job_id, "status": "pending"}
        await asyncio.wait_for(state.arrived.wait(), 30)
        assert len(state.received) == 3
        assert set(state.ids) == {notification["deliveryId"]}
        assert state.unverified == 0
        # The redelivery replaces the entry: one delivery, its latest attempts.
        deadline = time.monotonic() + 30
        while True:
            [again] = await deliveries(session, api_base, "orders")
            if again["attempt_count"] == 1 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
        assert (again["id"], again["status"], again["attempt_count"]) == (
            logged["id"],
            "delivered",
            1,
        )
        status, answer = await call(session, "POST", f"{base}/nope/redeliver")
        assert (status, answer["error"]["message"]) == (404, "webhook delivery not found")


async def test_delivery_records_go_after_the_retention(
    kubeconfig_path: str,
    namespace: str,
    log_dir: Path,
    tmp_path: Path,
    kube: KubeClient,
    receiver: tuple[Receiver, TestServer],
) -> None:
    state, server = receiver
    url = f"http://127.0.0.1:{server.port}/hook"
    flags = ("--webhook-record-retention-seconds", "3")
    with webhook_system(kubeconfig_path, namespace, log_dir, tmp_path, *flags) as base:
        async with aiohttp.ClientSession() as session:
            endpoint = await register(session, base, "brief", url, allow_private_network=True)
            state.secret = endpoint["secret"]
            job_id = await submit(session, base, "brief")
            await settled(kube, namespace, job_id)
            assert len(await wait_for(session, base, "brief", 1)) == 1
            # Kept no longer than 3 s (plus a sweep: every 2 s).
            assert await wait_for(session, base, "brief", 0, timeout=15) == []
