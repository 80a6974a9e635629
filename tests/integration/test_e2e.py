"""End to end: a client talks only to the API; the operator and a fake OpenAI server run as
real processes. Every request type, retries, failures, fallbacks, deadlines, a crash."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from asyncjobs.core import resources
from asyncjobs.core.kube import KubeClient
from asyncjobs.core.request_types import REQUEST_TYPES, RequestType
from tests.integration.operator_support import (
    FAKE_KEY,
    RESULT_KEYS,
    FakeOpenAI,
    Operator,
    create_key_secret,
    wait_for_job,
    wait_gone,
)
from tests.support import bodies
from tests.support.procs import ManagedProcess, free_port, python_module
from tests.unit.providers.samples import JSON_BODIES, sample_request

# OpenAI has no rerank or OCR endpoint (Cohere and Mistral do): those go to `local`.
LOCAL_ONLY = (RequestType.RERANK, RequestType.OCR)


class Client:
    """A Bifrost client: submit, then poll until the job is done."""

    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        self.base = base
        self.session = session

    async def submit(self, request_type: RequestType, body: bytes, content_type: str) -> str:
        path = REQUEST_TYPES[request_type].submit_path
        headers = {"Content-Type": content_type}
        async with self.session.post(self.base + path, data=body, headers=headers) as answer:
            document = await answer.json()
            assert answer.status == 202, document
            return str(document["id"])

    async def poll(
        self, request_type: RequestType, job_id: str, timeout: float = 30
    ) -> dict[str, Any]:
        path = f"{self.base}{REQUEST_TYPES[request_type].submit_path}/{job_id}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            async with self.session.get(path) as answer:
                document: dict[str, Any] = await answer.json()
                if answer.status == 200:
                    return document
                assert answer.status == 202, document
            await asyncio.sleep(0.1)
        raise AssertionError(f"job {job_id} still not done after {timeout}s")


@pytest.fixture
async def system(
    kube: KubeClient, namespace: str, kubeconfig_path: str, log_dir: Path, tmp_path: Path
) -> AsyncIterator[tuple[Client, Operator, FakeOpenAI]]:
    """The fake provider, the operator and the API, sharing one providers file."""
    await create_key_secret(kube, namespace)
    with FakeOpenAI(log_dir) as fake:
        await fake.aconfig(api_keys=[FAKE_KEY])
        providers = fake.providers_config(tmp_path / "providers.yaml", max_concurrency=8)
        operator = Operator(
            kubeconfig_path, namespace, providers, log_dir, "--backoff-base-seconds", "0.2"
        )
        port = free_port()
        api = ManagedProcess(
            "api",
            python_module(
                "asyncjobs.api.main",
                "--kubeconfig",
                kubeconfig_path,
                "--namespace",
                namespace,
                "--providers-config",
                str(providers),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ),
            log_dir=log_dir,
        )
        with api:
            await asyncio.to_thread(api.wait_http_ok, f"http://127.0.0.1:{port}/readyz", timeout=60)
            try:
                async with aiohttp.ClientSession() as session:
                    yield Client(f"http://127.0.0.1:{port}", session), operator, fake
            finally:
                operator.stop()


def chat(model: str, content: str = "hello") -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": content}]}).encode()


async def test_every_request_type_from_submit_to_a_200_poll(
    system: tuple[Client, Operator, FakeOpenAI],
) -> None:
    client, operator, fake = system
    await operator.astart()
    submitted = {}
    for request_type in RequestType:
        if request_type in LOCAL_ONLY:
            body = json.dumps({**JSON_BODIES[request_type], "model": "local/gpt-e2e"}).encode()
            submitted[request_type] = await client.submit(request_type, body, "application/json")
            continue
        sample = sample_request(request_type, model="gpt-e2e")
        submitted[request_type] = await client.submit(
            request_type, sample.body, sample.content_type
        )
    for request_type, job_id in submitted.items():
        document = await client.poll(request_type, job_id)
        assert document["status"] == "completed", (request_type, document.get("error"))
        assert document["status_code"] == 200
        assert set(document) == {
            "id",
            "request_id",
            "status",
            "created_at",
            "completed_at",
            "expires_at",
            "status_code",
            "result",
        }
        result = document["result"]
        assert RESULT_KEYS[request_type] in result, (request_type, sorted(result))
        assert result["extra_fields"]["request_type"] == request_type.value
        provider = "local" if request_type in LOCAL_ONLY else "openai"
        assert result["extra_fields"]["provider"] == provider
        assert result["extra_fields"]["model_requested"] == "gpt-e2e"
    assert (await fake.astats())["violations"] == []


async def test_retry_after_a_429_then_success(
    system: tuple[Client, Operator, FakeOpenAI],
) -> None:
    client, operator, fake = system
    await fake.ascript("gpt-busy", {"status": 429, "retry_after": "1"})
    await operator.astart()
    started = time.monotonic()
    job_id = await client.submit(
        RequestType.CHAT_COMPLETION, chat("openai/gpt-busy"), "application/json"
    )
    document = await client.poll(RequestType.CHAT_COMPLETION, job_id)
    assert document["status"] == "completed"
    assert time.monotonic() - started >= 1.0  # Retry-After was honoured


async def test_a_400_fails_at_once_and_polls_as_a_failed_job(
    system: tuple[Client, Operator, FakeOpenAI],
) -> None:
    client, operator, fake = system
    await fake.ascript("gpt-no", {"status": 400, "message": "unsupported parameter"})
    await operator.astart()
    job_id = await client.submit(
        RequestType.CHAT_COMPLETION, chat("openai/gpt-no"), "application/json"
    )
    document = await client.poll(RequestType.CHAT_COMPLETION, job_id)
    assert document["status"] == "failed"
    assert document["status_code"] == 400
    assert "result" not in document
    error = document["error"]
    assert error["error"]["message"] == "unsupported parameter"
    assert error["extra_fields"] == {
        "provider": "openai",
        "model_requested": "gpt-no",
        "request_type": "chat_completion",
    }
    assert len([r for r in (await fake.astats())["requests"] if r.get("model") == "gpt-no"]) == 1


async def test_a_fallback_succeeds_where_the_model_fails(
    system: tuple[Client, Operator, FakeOpenAI],
) -> None:
    client, operator, fake = system
    await fake.ascript("gpt-gone", {"status": 404})
    await operator.astart()
    body = json.loads(chat("openai/gpt-gone"))
    body["fallbacks"] = ["local/backup"]
    job_id = await client.submit(
        RequestType.CHAT_COMPLETION, json.dumps(body).encode(), "application/json"
    )
    document = await client.poll(RequestType.CHAT_COMPLETION, job_id)
    assert document["status"] == "completed", document
    assert document["result"]["extra_fields"]["provider"] == "local"
    assert document["result"]["extra_fields"]["model_requested"] == "backup"


async def test_operator_killed_during_a_call_is_resumed_after_restart(
    system: tuple[Client, Operator, FakeOpenAI], kube: KubeClient, namespace: str
) -> None:
    client, operator, fake = system
    await fake.ascript("gpt-long", {"latency_ms": 4000})
    await operator.astart()
    job_id = await client.submit(
        RequestType.CHAT_COMPLETION, chat("openai/gpt-long"), "application/json"
    )
    # Wait until the call is in flight at the provider, then SIGKILL the operator.
    deadline = time.monotonic() + 20
    while (await fake.astats())["in_flight"] == 0:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    operator.kill()
    await operator.astart()
    document = await client.poll(RequestType.CHAT_COMPLETION, job_id)
    assert document["status"] == "completed"
    job = await kube.get(resources.asyncjobs_path(namespace, job_id))
    assert job["status"]["attempts"] == 1  # an interruption is not a provider failure
    assert job["status"]["interruptions"] == 1
    assert job["status"]["repeatedCalls"] == 1
    assert (await fake.astats())["count"] == 2  # the lost call, and its one repetition


async def test_jobs_submitted_with_no_operator_complete_once_it_starts(
    system: tuple[Client, Operator, FakeOpenAI],
) -> None:
    client, operator, _ = system
    ids = [
        await client.submit(
            RequestType.CHAT_COMPLETION, chat("openai/gpt-q", f"n{i}"), "application/json"
        )
        for i in range(20)
    ]
    await operator.astart()
    documents = await asyncio.gather(
        *(client.poll(RequestType.CHAT_COMPLETION, job_id) for job_id in ids)
    )
    assert {d["status"] for d in documents} == {"completed"}


@pytest.mark.timeout(120)
async def test_expiry_deletes_the_job_and_its_bodies(
    system: tuple[Client, Operator, FakeOpenAI], kube: KubeClient, namespace: str
) -> None:
    client, operator, _ = system
    await operator.astart()
    path = f"{client.base}{REQUEST_TYPES[RequestType.CHAT_COMPLETION].submit_path}"
    headers = {"Content-Type": "application/json", "x-bf-async-job-result-ttl": "2"}
    async with client.session.post(path, data=chat("local/echo"), headers=headers) as answer:
        job_id = (await answer.json())["id"]
    assert (await client.poll(RequestType.CHAT_COMPLETION, job_id))["status"] == "completed"
    job = await wait_for_job(kube, namespace, job_id, lambda o: "resultRef" in o["status"])
    assert job["spec"]["resultTTLSeconds"] == 2
    await wait_gone(kube, resources.asyncjobs_path(namespace, job_id), timeout=20)
    async with client.session.get(f"{path}/{job_id}") as answer:
        assert answer.status == 404
    await bodies.wait_no_bodies(kube, namespace, job_id)


async def test_a_deadline_fails_a_job_that_runs_too_long(
    kube: KubeClient, namespace: str, kubeconfig_path: str, log_dir: Path, tmp_path: Path
) -> None:
    # The API sets no deadline, so the operator's default applies: make it short.
    await create_key_secret(kube, namespace)
    with FakeOpenAI(log_dir) as fake:
        await fake.aconfig(api_keys=[FAKE_KEY])
        await fake.ascript("gpt-stuck", {"latency_ms": 10000})
        providers = fake.providers_config(tmp_path / "providers.yaml")
        operator = Operator(
            kubeconfig_path, namespace, providers, log_dir, "--default-deadline-seconds", "3"
        )
        port = free_port()
        argv = python_module(
            "asyncjobs.api.main",
            *("--kubeconfig", kubeconfig_path, "--namespace", namespace),
            *("--providers-config", str(providers), "--host", "127.0.0.1", "--port", str(port)),
        )
        with ManagedProcess("api", argv, log_dir=log_dir) as api:
            await asyncio.to_thread(api.wait_http_ok, f"http://127.0.0.1:{port}/readyz", timeout=60)
            try:
                await operator.astart()
                async with aiohttp.ClientSession() as session:
                    client = Client(f"http://127.0.0.1:{port}", session)
                    job_id = await client.submit(
                        RequestType.CHAT_COMPLETION, chat("openai/gpt-stuck"), "application/json"
                    )
                    document = await client.poll(RequestType.CHAT_COMPLETION, job_id, 20)
            finally:
                operator.stop()
    assert document["status"] == "failed"
    assert document["status_code"] == 504
    assert "deadline" in document["error"]["error"]["message"]
