"""What the webhook tests share: the API and the operator as real processes, a real
receiver that verifies every delivery with the `standardwebhooks` package (an
implementation independent of ours), and small helpers over /api/webhooks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from standardwebhooks import Webhook

from asyncjobs.core import resources
from asyncjobs.core.kube import KubeClient
from tests.integration.operator_support import local_providers, running_operator
from tests.support.procs import ManagedProcess, free_port, python_module

CHAT = "/v1/async/chat/completions"
BODY = {"model": "local/echo", "messages": [{"role": "user", "content": "hi"}]}


@contextlib.contextmanager
def webhook_system(
    kubeconfig_path: str, namespace: str, log_dir: Path, tmp_path: Path, *operator_flags: str
) -> Iterator[str]:
    """The operator (with `operator_flags`) and the API; yields the API's base URL, and
    checks at the end that no log holds a traceback or a signing secret."""
    providers = local_providers(tmp_path)
    with running_operator(
        kubeconfig_path, namespace, providers, log_dir, *operator_flags
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
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            event = Webhook(self.secret).verify(raw, dict(request.headers))
        except Exception:
            self.unverified += 1
            return web.Response(status=401)
        self.ids.append(request.headers["webhook-id"])
        self.received.append(event)
        self.arrived.set()
        if len(self.received) <= self.fail_first:
            return web.Response(status=self.fail_status)
        return web.Response(status=200)


@contextlib.asynccontextmanager
async def serving_receiver() -> AsyncIterator[tuple[Receiver, TestServer]]:
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


async def submit(session: aiohttp.ClientSession, base: str, webhook: str, **headers: str) -> str:
    headers = {"x-bf-async-webhook": webhook, **headers}
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


async def endpoint_status(kube: KubeClient, namespace: str, name: str) -> dict[str, Any]:
    """The endpoint's status once it counts an ended delivery: the operator writes it
    after the job's own record, so a test that saw the job settle may be a moment early."""
    deadline = time.monotonic() + 30
    while True:
        hook = await kube.get(resources.webhooks_path(namespace, name))
        status: dict[str, Any] = hook.get("status") or {}
        if status.get("delivered") or status.get("failures"):
            return status
        assert time.monotonic() < deadline, f"endpoint {name} counted no delivery: {hook}"
        await asyncio.sleep(0.2)
