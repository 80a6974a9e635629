"""The control plane is real: a kube-apiserver serving the AsyncJob CRD with its schema,
status subresource, printer columns, watches and garbage collection."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from asyncjobs.core import payloads, resources
from asyncjobs.core.jobs import JobSpec, build_asyncjob
from asyncjobs.core.kube import KubeClient, KubeError
from asyncjobs.core.request_types import RequestType
from asyncjobs.core.secret_payloads import SecretPayloads

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.payload_independent


def sample_job(job_id: str = "0b7c2f6e-1d7a-4c55-9d1e-8f3f5c1a2b3c", **spec: Any) -> dict[str, Any]:
    ref = payloads.describe(job_id, "request", b'{"model":"local/echo"}', "application/json")
    job = build_asyncjob(
        JobSpec(
            job_id=job_id,
            request_type=RequestType.CHAT_COMPLETION,
            model="local/echo",
            fallbacks=(),
            result_ttl_seconds=3600,
            request_ref=ref,
            submitted_at=datetime(2026, 2, 19, 8, 10, 17, 831000, tzinfo=UTC),
        )
    )
    job["spec"].update(spec)
    return job


def kubectl() -> str:
    found = shutil.which("kubectl") or str(Path(sys.executable).parent / "kubectl")
    assert Path(found).exists(), "kubectl is installed by the dev dependency group"
    return found


async def test_apiserver_is_the_pinned_release_unless_kubeconfig_names_another(
    kube: KubeClient,
) -> None:
    version = await kube.get("/version")
    if os.environ.get("KUBECONFIG"):
        assert version["major"] == "1"
    else:
        pinned = (REPO / "tools" / "versions.sh").read_text()
        assert f"KUBERNETES_VERSION={version['gitVersion']}" in pinned


async def test_crd_is_served_with_short_name_and_status_subresource(kube: KubeClient) -> None:
    discovery = await kube.get(f"/apis/{resources.GROUP}/{resources.VERSION}")
    by_name = {r["name"]: r for r in discovery["resources"]}
    assert by_name["asyncjobs"]["namespaced"] is True
    assert by_name["asyncjobs"]["kind"] == "AsyncJob"
    assert by_name["asyncjobs"]["shortNames"] == ["aj"]
    assert "asyncjobs/status" in by_name


async def test_kubectl_get_asyncjobs_prints_job_columns(
    kube: KubeClient, namespace: str, kubeconfig_path: str
) -> None:
    job = await kube.create(resources.asyncjobs_path(namespace), sample_job())
    await kube.merge_patch(
        resources.asyncjobs_path(namespace, job["metadata"]["name"], status=True),
        {"status": {"phase": "Completed", "statusCode": 200, "attempts": 1, "duration": "3s"}},
    )
    process = await asyncio.create_subprocess_exec(
        kubectl(),
        "get",
        "aj",
        "-n",
        namespace,
        env={**os.environ, "KUBECONFIG": kubeconfig_path},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, stderr.decode()
    printed = stdout.decode().splitlines()
    assert printed[0].split() == [
        "NAME",
        "TYPE",
        "MODEL",
        "STATUS",
        "CODE",
        "ATTEMPTS",
        "DURATION",
        "AGE",
    ]
    row = printed[1].split()
    assert row[:7] == [
        job["metadata"]["name"],
        "chat_completion",
        "local/echo",
        "Completed",
        "200",
        "1",
        "3s",
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"requestType": "poetry"}, 'Unsupported value: "poetry"', id="unknown-type"),
        pytest.param(
            {"model": "gpt-4o"},
            "model must be in provider/model format",
            id="model-without-provider",
        ),
        pytest.param(
            {"fallbacks": ["openai"]},
            "each fallback must be in provider/model format",
            id="bad-fallback",
        ),
        pytest.param(
            {"resultTTLSeconds": -1}, "should be greater than or equal to 0", id="negative-ttl"
        ),
        pytest.param(
            {"backoffLimit": -2},
            "should be greater than or equal to 0",
            id="negative-backoff-limit",
        ),
        pytest.param({"priority": 11}, "should be less than or equal to 10", id="priority-high"),
        pytest.param(
            {"priority": -11}, "should be greater than or equal to -10", id="priority-low"
        ),
        pytest.param({"keyWeight": 0}, "should be greater than or equal to 1", id="weight-zero"),
        pytest.param({"keyWeight": 1001}, "should be less than or equal to 1000", id="weight-over"),
    ],
)
async def test_invalid_asyncjob_is_refused_with_the_schema_message(
    kube: KubeClient, namespace: str, change: dict[str, Any], message: str
) -> None:
    with pytest.raises(KubeError) as refused:
        await kube.create(resources.asyncjobs_path(namespace), sample_job(**change))
    assert refused.value.status == 422
    assert message in refused.value.message


async def test_spec_cannot_change_after_creation(kube: KubeClient, namespace: str) -> None:
    job = await kube.create(resources.asyncjobs_path(namespace), sample_job())
    with pytest.raises(KubeError) as refused:
        await kube.merge_patch(
            resources.asyncjobs_path(namespace, job["metadata"]["name"]),
            {"spec": {"model": "local/other"}},
        )
    assert refused.value.status == 422
    assert "spec is immutable once the job is created" in refused.value.message


async def test_status_subresource_leaves_spec_and_generation_alone(
    kube: KubeClient, namespace: str
) -> None:
    created = await kube.create(resources.asyncjobs_path(namespace), sample_job())
    name = created["metadata"]["name"]
    patched = await kube.merge_patch(
        resources.asyncjobs_path(namespace, name, status=True),
        {"spec": {"model": "local/sneaky"}, "status": {"phase": "Processing", "attempts": 1}},
    )
    assert patched["status"] == {"phase": "Processing", "attempts": 1}
    assert patched["spec"] == created["spec"]
    assert patched["metadata"]["generation"] == created["metadata"]["generation"] == 1


async def test_watch_sees_create_update_delete_in_order(kube: KubeClient, namespace: str) -> None:
    listed = await kube.list(resources.asyncjobs_path(namespace))
    events: list[tuple[str, str | None]] = []

    async def collect() -> None:
        async for event in kube.watch(
            resources.asyncjobs_path(namespace),
            resource_version=listed["metadata"]["resourceVersion"],
            timeout_seconds=30,
        ):
            if event["type"] == "BOOKMARK":
                continue
            phase = (event["object"].get("status") or {}).get("phase")
            events.append((event["type"], phase))
            if event["type"] == "DELETED":
                return

    watcher = asyncio.create_task(collect())
    job = await kube.create(resources.asyncjobs_path(namespace), sample_job())
    name = job["metadata"]["name"]
    await kube.merge_patch(
        resources.asyncjobs_path(namespace, name, status=True), {"status": {"phase": "Pending"}}
    )
    await kube.delete(resources.asyncjobs_path(namespace, name))
    await asyncio.wait_for(watcher, timeout=30)
    assert events == [("ADDED", None), ("MODIFIED", "Pending"), ("DELETED", "Pending")]


async def test_secret_owned_by_a_job_is_garbage_collected_with_it(
    kube: KubeClient, namespace: str
) -> None:
    job = await kube.create(resources.asyncjobs_path(namespace), sample_job())
    ref = await SecretPayloads(kube, namespace).put(job, "request", b'{"x": 1}', "application/json")
    secret_path = resources.secrets_path(namespace, ref.chunk_names()[0])
    assert (await kube.get(secret_path))["metadata"]["ownerReferences"][0]["uid"] == (
        job["metadata"]["uid"]
    )
    await kube.delete(resources.asyncjobs_path(namespace, job["metadata"]["name"]))
    assert await secret_gone(kube, secret_path, timeout=60), (
        "the owned Secret outlived its AsyncJob by 60 s: is the garbage collector up?"
    )


async def secret_gone(kube: KubeClient, path: str, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        try:
            await kube.get(path)
        except KubeError as exc:
            if exc.status == 404:
                return True
            raise
        await asyncio.sleep(0.1)
    return False


async def test_chunked_payload_round_trips_and_detects_tampering(
    kube: KubeClient, namespace: str
) -> None:
    job = await kube.create(resources.asyncjobs_path(namespace), sample_job())
    body = bytes(range(256)) * (payloads.CHUNK_SIZE // 256) + b"tail"
    ref = await SecretPayloads(kube, namespace).put(
        job, "request", body, "application/octet-stream"
    )
    assert ref.chunks == 2
    assert await SecretPayloads(kube, namespace).get(ref) == body
    tampered = payloads.PayloadRef(ref.name, ref.chunks, ref.size, "0" * 64, ref.content_type)
    with pytest.raises(payloads.PayloadCorrupt):
        await SecretPayloads(kube, namespace).get(tampered)
