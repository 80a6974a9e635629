"""The operator runs jobs to completion on the real control plane with the local provider."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from asyncjobs.core import payloads, resources
from asyncjobs.core.kube import KubeClient
from asyncjobs.core.request_types import RequestType
from tests.integration.operator_support import (
    RESULT_KEYS,
    job_secrets,
    local_providers,
    read_result,
    running_operator,
    submit,
    wait_for_job,
    wait_gone,
    wait_terminal,
)
from tests.support import bodies
from tests.unit.providers.samples import sample_request


async def test_every_request_type_completes_with_a_result_secret_owned_by_the_job(
    kube: KubeClient, namespace: str, kubeconfig_path: str, log_dir: Path, tmp_path: Path
) -> None:
    providers = local_providers(tmp_path)
    with running_operator(kubeconfig_path, namespace, providers, log_dir) as operator:
        await operator.astart()
        submitted = {}
        for request_type in RequestType:
            sample = sample_request(request_type, model="echo")
            submitted[request_type] = await submit(
                kube,
                namespace,
                sample.body,
                request_type=request_type,
                content_type=sample.content_type,
            )
        for request_type, name in submitted.items():
            done = await wait_terminal(kube, namespace, name)
            status = done["status"]
            assert status["phase"] == "Completed", status
            assert status["statusCode"] == 200
            assert status["attempts"] == 1
            assert status["provider"] == "local"
            assert status["modelUsed"] == "local/echo"
            assert {c["type"]: c["status"] for c in status["conditions"]} == {
                "Processing": "False",
                "Complete": "True",
            }
            result = await read_result(kube, namespace, done)
            assert RESULT_KEYS[request_type] in result, (request_type, sorted(result))
            assert result["extra_fields"]["request_type"] == request_type.value
            assert result["extra_fields"]["provider"] == "local"
            assert result["extra_fields"]["model_requested"] == "echo"
            assert isinstance(result["extra_fields"]["latency"], int)
            # No operator bookkeeping on the job, and no finalizer that could block deletion.
            metadata = done["metadata"]
            assert not metadata.get("finalizers")
            assert not [a for a in metadata.get("annotations", {}) if "kopf" in a]
            if bodies.backend() == payloads.SECRETS:
                secret = await kube.get(resources.secrets_path(namespace, f"{name}-result-1-0"))
                assert secret["metadata"]["ownerReferences"][0]["uid"] == metadata["uid"]
        finished = await operator.ametrics()
        assert (
            'outcome="completed",provider="local",reason="Succeeded",request_type="chat_completion"'
            in finished
        )


async def test_jobs_submitted_while_no_operator_runs_all_complete_once_it_starts(
    kube: KubeClient, namespace: str, kubeconfig_path: str, log_dir: Path, tmp_path: Path
) -> None:
    body = {"model": "local/echo", "messages": [{"role": "user", "content": "hi"}]}
    names = [await submit(kube, namespace, body) for _ in range(30)]
    with running_operator(
        kubeconfig_path, namespace, local_providers(tmp_path), log_dir
    ) as operator:
        await operator.astart()
        done = await asyncio.gather(*(wait_terminal(kube, namespace, n) for n in names))
    assert [d["status"]["phase"] for d in done] == ["Completed"] * 30


async def test_request_secret_arriving_late_is_awaited(
    kube: KubeClient, namespace: str, kubeconfig_path: str, log_dir: Path, tmp_path: Path
) -> None:
    body = {"model": "local/echo", "messages": [{"role": "user", "content": "hi"}]}
    providers = local_providers(tmp_path)
    grace = ("--request-grace-seconds", "4")
    with running_operator(kubeconfig_path, namespace, providers, log_dir, *grace) as operator:
        await operator.astart()
        late = await submit(kube, namespace, body, store_request=False)
        never = await submit(kube, namespace, body, store_request=False)
        await asyncio.sleep(1)  # the gap between the two creates that the API could leave
        job = await kube.get(resources.asyncjobs_path(namespace, late))
        raw = b'{"model": "local/echo", "messages": [{"role": "user", "content": "hi"}]}'
        async with bodies.open_bodies(kube, namespace) as store:
            await store.put(job, "request", raw, "application/json")
        assert (await wait_terminal(kube, namespace, late))["status"]["phase"] == "Completed"
        failed = await wait_terminal(kube, namespace, never, timeout=20)
    status = failed["status"]
    assert status["phase"] == "Failed"
    assert status["statusCode"] == 500
    assert status["conditions"][-1]["reason"] == "RequestNotFound"
    assert status["error"]["is_bifrost_error"] is True


@bodies.needs_backend("secrets")
@pytest.mark.timeout(90)
async def test_expired_job_is_deleted_and_its_secrets_are_collected(
    kube: KubeClient, namespace: str, kubeconfig_path: str, log_dir: Path, tmp_path: Path
) -> None:
    body = {"model": "local/echo", "messages": [{"role": "user", "content": "hi"}]}
    with running_operator(
        kubeconfig_path, namespace, local_providers(tmp_path), log_dir
    ) as operator:
        await operator.astart()
        name = await submit(kube, namespace, body, ttl=2)
        done = await wait_terminal(kube, namespace, name)
        assert done["status"]["phase"] == "Completed"
        assert sorted(await job_secrets(kube, namespace, name)) == [
            f"{name}-request-0",
            f"{name}-result-1-0",
        ]
        await wait_gone(kube, resources.asyncjobs_path(namespace, name), timeout=15)
    # kube-controller-manager's garbage collector follows the owner references.
    for secret in (f"{name}-request-0", f"{name}-result-1-0"):
        await wait_gone(kube, resources.secrets_path(namespace, secret), timeout=60)


@bodies.needs_backend("s3")
@pytest.mark.timeout(90)
async def test_expired_and_deleted_jobs_take_their_objects_with_them(
    kube: KubeClient, namespace: str, kubeconfig_path: str, log_dir: Path, tmp_path: Path
) -> None:
    body = {"model": "local/echo", "messages": [{"role": "user", "content": "hi"}]}
    async with bodies.open_bodies(kube, namespace) as store:
        with running_operator(
            kubeconfig_path, namespace, local_providers(tmp_path), log_dir
        ) as operator:
            await operator.astart()
            expiring = await submit(kube, namespace, body, ttl=2)
            deleted = await submit(kube, namespace, body)
            for name in (expiring, deleted):
                done = await wait_terminal(kube, namespace, name)
                assert done["status"]["phase"] == "Completed"
                assert await bodies.object_keys(store, name) == [
                    f"{name}/request",
                    f"{name}/result-1",
                ]
            # One deleted by its expiry, one by hand (as `kubectl delete aj` does).
            await kube.delete(resources.asyncjobs_path(namespace, deleted))
            for name in (expiring, deleted):
                await wait_gone(kube, resources.asyncjobs_path(namespace, name), timeout=15)
                deadline = time.monotonic() + 15
                while await bodies.object_keys(store, name):
                    assert time.monotonic() < deadline, f"objects of {name} were not deleted"
                    await asyncio.sleep(0.2)
            metrics = await operator.ametrics()
    assert 'asyncjobs_operator_payload_deletes_total{outcome="deleted"} 2.0' in metrics


async def test_processing_job_is_resumed_after_the_operator_is_killed(
    kube: KubeClient, namespace: str, kubeconfig_path: str, log_dir: Path, tmp_path: Path
) -> None:
    body = {"model": "local/echo", "messages": [{"role": "user", "content": "hi"}]}
    providers = local_providers(tmp_path, latency_ms=3000)
    with running_operator(kubeconfig_path, namespace, providers, log_dir) as operator:
        await operator.astart()
        name = await submit(kube, namespace, body)
        await wait_for_job(
            kube, namespace, name, lambda o: o.get("status", {}).get("attempts") == 1
        )
        operator.kill()  # SIGKILL in the middle of the 3 s provider call
        await operator.astart()
        done = await wait_terminal(kube, namespace, name)
    status = done["status"]
    assert status["phase"] == "Completed"
    # The operator's death spent no attempt: the lost call was repeated under a new
    # call number, so the two can never mix.
    assert status["attempts"] == 1
    assert status["interruptions"] == 1
    assert status["repeatedCalls"] == 1
    assert payloads.PayloadRef.from_dict(status["resultRef"]).name == bodies.stored_name(
        name, "result", 2
    )
    assert status["conditions"][0]["type"] == "Processing"
