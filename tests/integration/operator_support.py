"""Shared pieces of the operator's integration tests (this module holds no tests).

Jobs are submitted the way the API does it (`jobs.build_asyncjob`, then the request
Secret owned by the job), so these tests need no API process; the operator and the fake
OpenAI server run as real processes. Waiting is polling with a deadline, never a sleep
of a guessed length. The helpers that block on HTTP have an async twin (`astart`,
`ametrics`, `astats`, ...) that runs them in a thread, for async tests to await.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from asyncjobs.core import jobs, payloads, resources
from asyncjobs.core.kube import KubeClient, KubeError, KubeObject
from asyncjobs.core.payloads import PayloadRef
from asyncjobs.core.request_types import RequestType
from tests.support import bodies
from tests.support.procs import ManagedProcess, free_port, python_module


async def submit(
    kube: KubeClient,
    namespace: str,
    body: bytes | dict[str, Any],
    *,
    model: str = "local/echo",
    request_type: RequestType = RequestType.CHAT_COMPLETION,
    content_type: str = "application/json",
    fallbacks: tuple[str, ...] = (),
    ttl: int = 0,
    spec: dict[str, Any] | None = None,
    store_request: bool = True,
) -> str:
    """Stores the request and creates the AsyncJob in the API's order for the backend
    (an object before its job, Secrets after it)."""
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    job_id = str(uuid.uuid4())
    ref = payloads.describe(job_id, "request", raw, content_type, backend=bodies.backend())
    job_spec = jobs.JobSpec(
        job_id=job_id,
        request_type=request_type,
        model=model,
        fallbacks=fallbacks,
        result_ttl_seconds=ttl,
        request_ref=ref,
        submitted_at=datetime.now(UTC),
    )
    obj = jobs.build_asyncjob(job_spec)
    obj["spec"].update(spec or {})
    async with bodies.open_bodies(kube, namespace) as store:
        if store_request and store.stores_before_job:
            await store.put({"metadata": {"name": job_id}}, "request", raw, content_type, ref=ref)
        created = await kube.create(resources.asyncjobs_path(namespace), obj)
        if store_request and not store.stores_before_job:
            await store.put(created, "request", raw, content_type, ref=ref)
    return job_id


async def get_job(kube: KubeClient, namespace: str, name: str) -> KubeObject | None:
    try:
        return await kube.get(resources.asyncjobs_path(namespace, name))
    except KubeError as error:
        if error.status == 404:
            return None
        raise


async def wait_for_job(
    kube: KubeClient,
    namespace: str,
    name: str,
    predicate: Callable[[KubeObject], bool],
    timeout: float = 30,
) -> KubeObject:
    deadline = time.monotonic() + timeout
    last: KubeObject | None = None
    while time.monotonic() < deadline:
        last = await get_job(kube, namespace, name)
        if last is not None and predicate(last):
            return last
        await asyncio.sleep(0.1)
    status = (last or {}).get("status")
    raise AssertionError(f"job {name} did not get there in {timeout}s; status: {status}")


async def wait_terminal(
    kube: KubeClient, namespace: str, name: str, timeout: float = 30
) -> KubeObject:
    return await wait_for_job(kube, namespace, name, lambda o: phase(o) in TERMINAL, timeout)


async def wait_gone(kube: KubeClient, path: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            await kube.get(path)
        except KubeError as error:
            if error.status == 404:
                return
            raise
        await asyncio.sleep(0.2)
    raise AssertionError(f"{path} still exists after {timeout}s")


TERMINAL = ("Completed", "Failed")

# A key each request type's result must hold to have the synchronous endpoint's shape.
RESULT_KEYS = {
    RequestType.TEXT_COMPLETION: "choices",
    RequestType.CHAT_COMPLETION: "choices",
    RequestType.RESPONSES: "output",
    RequestType.EMBEDDING: "data",
    RequestType.SPEECH: "audio",
    RequestType.TRANSCRIPTION: "text",
    RequestType.IMAGE_GENERATION: "data",
    RequestType.IMAGE_EDIT: "data",
    RequestType.IMAGE_VARIATION: "data",
    RequestType.RERANK: "results",
    RequestType.OCR: "pages",
}

# The Secret the fake provider's key is read from, as configuration references it.
KEY_SECRET = "fake-openai-key"
FAKE_KEY = "sk-fake-operator-test"


async def create_key_secret(kube: KubeClient, namespace: str) -> None:
    await kube.create(
        resources.secrets_path(namespace),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": KEY_SECRET},
            "stringData": {"api-key": FAKE_KEY},
        },
    )


def phase(obj: KubeObject) -> str:
    return str((obj.get("status") or {}).get("phase", "Pending"))


async def read_result(kube: KubeClient, namespace: str, obj: KubeObject) -> dict[str, Any]:
    ref = PayloadRef.from_dict(obj["status"]["resultRef"])
    async with bodies.open_bodies(kube, namespace) as store:
        loaded: dict[str, Any] = json.loads(await store.get(ref))
    return loaded


async def job_secrets(kube: KubeClient, namespace: str, name: str) -> list[str]:
    listed = await kube.list(
        resources.secrets_path(namespace), labelSelector=f"{resources.LABEL_JOB_ID}={name}"
    )
    return [item["metadata"]["name"] for item in listed.get("items", [])]


def write_providers(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def local_providers(
    tmp_path: Path, latency_ms: float = 0, max_in_flight: int = 64, max_concurrency: int = 64
) -> Path:
    return write_providers(
        tmp_path / "providers.yaml",
        {
            "providers": {
                "local": {
                    "type": "local",
                    "latencyMs": latency_ms,
                    "maxConcurrency": max_concurrency,
                }
            },
            "limits": {"maxInFlight": max_in_flight},
        },
    )


class Operator:
    """The operator as a real process, restartable (same port, same arguments)."""

    def __init__(
        self,
        kubeconfig: str,
        namespace: str,
        providers: Path,
        log_dir: Path,
        *extra: str,
    ) -> None:
        self.port = free_port()
        self.argv = python_module(
            "asyncjobs.controller.main",
            "--kubeconfig",
            kubeconfig,
            "--namespace",
            namespace,
            "--providers-config",
            str(providers),
            "--metrics-host",
            "127.0.0.1",
            "--metrics-port",
            str(self.port),
            *extra,
        )
        self.log_dir = log_dir
        self.starts = 0
        self.process: ManagedProcess | None = None

    def start(self) -> Operator:
        self.starts += 1
        self.process = ManagedProcess(f"operator-{self.starts}", self.argv, log_dir=self.log_dir)
        self.process.start()
        self.process.wait_http_ok(f"http://127.0.0.1:{self.port}/healthz", timeout=60)
        return self

    async def astart(self) -> Operator:
        return await asyncio.to_thread(self.start)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            return str(r.read().decode())

    async def ametrics(self) -> str:
        return await asyncio.to_thread(self.metrics)

    def logs(self) -> str:
        return "".join(
            path.read_text(errors="replace") for path in sorted(self.log_dir.glob("operator-*"))
        )


@contextmanager
def running_operator(
    kubeconfig: str, namespace: str, providers: Path, log_dir: Path, *extra: str
) -> Iterator[Operator]:
    operator = Operator(kubeconfig, namespace, providers, log_dir, *extra)
    try:
        yield operator
    finally:
        operator.stop()


class FakeOpenAI:
    """tests/fakes/openai_server.py as a real process, driven through its control API."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.process = ManagedProcess(
            "fake-openai",
            python_module("tests.fakes.openai_server", "--port", str(self.port)),
            log_dir=log_dir,
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FakeOpenAI:
        self.process.start()
        self.process.wait_http_ok(f"http://127.0.0.1:{self.port}/_fake/stats")
        return self

    def __exit__(self, *_: object) -> None:
        self.process.stop()

    def _post(self, path: str, body: dict[str, Any]) -> None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert answer.status == 200

    def script(self, model: str, *steps: dict[str, Any]) -> None:
        self._post("/_fake/script", {"model": model, "steps": list(steps)})

    async def ascript(self, model: str, *steps: dict[str, Any]) -> None:
        await asyncio.to_thread(self.script, model, *steps)

    def config(self, **values: Any) -> None:
        self._post("/_fake/config", values)

    async def aconfig(self, **values: Any) -> None:
        await asyncio.to_thread(self.config, **values)

    def stats(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}/_fake/stats"
        with urllib.request.urlopen(url, timeout=5) as answer:
            stats: dict[str, Any] = json.loads(answer.read())
            return stats

    async def astats(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.stats)

    def providers_config(
        self, path: Path, *, max_concurrency: int = 64, max_in_flight: int = 64, **extra: Any
    ) -> Path:
        return write_providers(
            path,
            {
                "providers": {
                    "openai": {
                        "type": "openai",
                        "baseURL": self.base_url,
                        "timeoutSeconds": 10,
                        "maxConcurrency": max_concurrency,
                        "keys": [{"secretRef": {"name": KEY_SECRET, "key": "api-key"}}],
                        **extra,
                    },
                    "local": {"type": "local"},
                },
                "limits": {"maxInFlight": max_in_flight},
            },
        )
