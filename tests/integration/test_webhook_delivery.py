"""Completion webhooks delivered by the real operator to a real receiver: an aiohttp
server in the test that verifies every delivery with the `standardwebhooks` package (an
implementation independent of ours), answers the first attempts with 503 on purpose and
counts what it receives. Retried on 5xx, not retried on another 4xx, never sent to a
private address the endpoint does not allow; each attempt recorded on the job and the
endpoint's counters."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from standardwebhooks import Webhook

from asyncjobs.core import resources
from asyncjobs.core.kube import KubeClient
from tests.integration.operator_support import local_providers, running_operator
from tests.support.procs import ManagedProcess, free_port, python_module

CHAT = "/v1/async/chat/completions"
BODY = {"model": "local/echo", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def api_base(kubeconfig_path: str, namespace: str, log_dir: Path, tmp_path: Path) -> Iterator[str]:
    providers = local_providers(tmp_path)
    with running_operator(
        kubeconfig_path, namespace, providers, log_dir, "--webhook-first-retry-seconds", "0.2"
    ) as operator:
        operator.start()
        port = free_port()
        api = ManagedProcess(
            "api",
            python_module(
                "asyncjobs.api.main",
                "--kubeconfig",
                kubeconfig_path,
                "--namespace",
                namespace,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--providers-config",
                str(providers),
            ),
            log_dir=log_dir,
        )
        with api:
            base = f"http://127.0.0.1:{port}"
            api.wait_http_ok(f"{base}/readyz", timeout=60)
            yield base
        for log in log_dir.glob("*.log"):
            text = log.read_text(errors="replace")
            assert "Traceback" not in text, log.name
            assert "whsec_" not in text, log.name


@dataclass
class Receiver:
    """Answers `fail_first` deliveries with `fail_status`, then 200; keeps what came."""

    fail_first: int = 0
    fail_status: int = 503
    secret: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    unverified: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            event = Webhook(self.secret).verify(raw, dict(request.headers))
        except Exception:
            self.unverified += 1
            return web.Response(status=401)
        self.ids.append(request.headers["webhook-id"])
        self.received.append(event)
        if len(self.received) <= self.fail_first:
            return web.Response(status=self.fail_status)
        return web.Response(status=200)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, TestServer]]:
    state = Receiver()
    app = web.Application()
    app.router.add_post("/hook", state.handle)
    async with TestServer(app, host="127.0.0.1") as server:
        yield state, server


async def register(
    session: aiohttp.ClientSession, base: str, name: str, url: str, **fields: Any
) -> dict[str, Any]:
    async with session.post(
        f"{base}/api/webhooks", json={"name": name, "url": url, **fields}
    ) as response:
        document: dict[str, Any] = await response.json()
        assert response.status == 201, document
        return document


async def submit(session: aiohttp.ClientSession, base: str, webhook: str) -> str:
    headers = {"x-bf-async-webhook": webhook}
    async with session.post(f"{base}{CHAT}", json=BODY, headers=headers) as response:
        assert response.status == 202
        job_id: str = (await response.json())["id"]
        return job_id


async def settled(kube: KubeClient, namespace: str, job_id: str) -> dict[str, Any]:
    """The job once its notification is no longer pending."""
    deadline = time.monotonic() + 90
    while True:
        job = await kube.get(resources.asyncjobs_path(namespace, job_id))
        notification = job.get("status", {}).get("webhook")
        if notification is not None and not notification["pending"]:
            return job
        assert time.monotonic() < deadline, json.dumps(job.get("status"))
        await asyncio.sleep(0.2)


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
    hook = await kube.get(resources.webhooks_path(namespace, "orders"))
    assert hook["status"]["delivered"] == 1
    assert hook["status"]["lastStatusCode"] == 200


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
    hook = await kube.get(resources.webhooks_path(namespace, "strict"))
    assert hook["status"]["failures"] == 1


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
