"""The completion notification is durable state: a job submitted with x-bf-async-webhook
and run by the real operator finishes with `status.webhook` (pending, with its delivery
id), written by the same status patch as its terminal phase (the CRD keeps the field),
and a job submitted without the header finishes with none."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from asyncjobs.core import resources, webhook_delivery
from asyncjobs.core.kube import KubeClient
from tests.integration.operator_support import local_providers, running_operator
from tests.support.procs import ManagedProcess, free_port, python_module

CHAT = "/v1/async/chat/completions"
BODY = {"model": "local/echo", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def api_base(kubeconfig_path: str, namespace: str, log_dir: Path, tmp_path: Path) -> Iterator[str]:
    providers = local_providers(tmp_path)
    with running_operator(kubeconfig_path, namespace, providers, log_dir) as operator:
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


async def finished(kube: KubeClient, namespace: str, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        job = await kube.get(resources.asyncjobs_path(namespace, job_id))
        if job.get("status", {}).get("phase") in ("Completed", "Failed"):
            return job
        assert time.monotonic() < deadline, json.dumps(job.get("status"))
        await asyncio.sleep(0.2)


async def test_a_job_naming_an_endpoint_finishes_with_its_notification_pending(
    api_base: str, kube: KubeClient, namespace: str
) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{api_base}/api/webhooks", json={"name": "orders", "url": "https://h.example/"}
        ) as response:
            assert response.status == 201
        submitted = []
        for headers in ({"x-bf-async-webhook": "orders"}, {}):
            async with session.post(f"{api_base}{CHAT}", json=BODY, headers=headers) as response:
                assert response.status == 202
                submitted.append((await response.json())["id"])
    with_hook = await finished(kube, namespace, submitted[0])
    assert with_hook["status"]["phase"] == "Completed"
    # The deliverer may have made its first attempt by now (h.example does not resolve);
    # what the terminal patch wrote is there either way.
    notification = with_hook["status"]["webhook"]
    assert notification["deliveryId"] == webhook_delivery.delivery_id(with_hook["metadata"]["uid"])
    assert notification["attempts"] <= 1
    without = await finished(kube, namespace, submitted[1])
    assert "webhook" not in without["status"]
