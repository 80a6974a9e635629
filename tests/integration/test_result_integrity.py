"""A completed job whose stored result is corrupt or missing, against the real plane: the
chart installed, the API and the operator running under the ServiceAccount tokens of
the chart's Roles. The poll answers a failed job (200, ResultUnreadable) every time, the
AsyncJob ends Failed, an Event says why and the API's /metrics counts it, so the chart
grants the API what this needs (patch asyncjobs/status, create events)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from asyncjobs.core import payloads, resources
from asyncjobs.core.kube import KubeClient
from tests.integration import test_chart_install as chart_install
from tests.integration.operator_support import wait_terminal
from tests.support import bodies
from tests.support.identity import service_account_kubeconfig
from tests.support.procs import ManagedProcess, free_port, python_module

# The chart installed in a fresh namespace, its jobs in "<namespace>-jobs".
release = chart_install.release

CHAT = "/v1/async/chat/completions"
BODY = {"model": "local/echo", "messages": [{"role": "user", "content": "keep this"}]}
CORRUPT = "the job's stored result does not match its size and checksum"
MISSING = "the job's stored result is missing"


async def test_unreadable_results_fail_their_jobs_under_the_charts_rbac(
    release: dict[str, str],
    kube: KubeClient,
    kubeconfig_path: str,
    tmp_path: Path,
    log_dir: Path,
) -> None:
    namespace, jobs = release["namespace"], release["jobs"]
    api_config = await service_account_kubeconfig(
        kube, kubeconfig_path, namespace, "aj-asyncjobs-api", tmp_path / "api.kubeconfig"
    )
    operator_config = await service_account_kubeconfig(
        kube, kubeconfig_path, namespace, "aj-asyncjobs-operator", tmp_path / "operator.kubeconfig"
    )
    configmap = await kube.get(f"/api/v1/namespaces/{namespace}/configmaps/aj-asyncjobs-providers")
    providers = tmp_path / "providers.yaml"
    providers.write_text(configmap["data"]["providers.yaml"])
    api_port, metrics_port = free_port(), free_port()
    # Each process runs with the flags its Deployment gives it; the later flags replace
    # what only makes sense in a pod (argparse keeps the last of a repeated flag).
    operator = ManagedProcess(
        "operator",
        python_module(
            "asyncjobs.controller.main",
            *await deployment_args(kube, namespace, "aj-asyncjobs-operator"),
            *("--kubeconfig", operator_config, "--providers-config", str(providers)),
            *("--metrics-port", str(metrics_port)),
        ),
        log_dir=log_dir,
    )
    api = ManagedProcess(
        "api",
        python_module(
            "asyncjobs.api.main",
            *await deployment_args(kube, namespace, "aj-asyncjobs-api"),
            *("--kubeconfig", api_config, "--providers-config", str(providers)),
            *("--host", "127.0.0.1", "--port", str(api_port)),
        ),
        log_dir=log_dir,
    )
    base = f"http://127.0.0.1:{api_port}"
    with operator, api:
        await asyncio.to_thread(operator.wait_http_ok, f"http://127.0.0.1:{metrics_port}/healthz")
        await asyncio.to_thread(api.wait_http_ok, f"{base}/readyz")
        async with aiohttp.ClientSession() as session:
            corrupt_id, missing_id, intact_id = [await submit(session, base) for _ in range(3)]
            # Completion is read from the AsyncJobs, not polled: a poll would put each
            # result in the API's result cache, which answers from the bytes it checked
            # and so never reads the Secret that is broken below.
            for job_id in (corrupt_id, missing_id, intact_id):
                done = await wait_terminal(kube, jobs, job_id)
                assert done["status"]["phase"] == "Completed", (done, operator.log_tail())

            # Result Secrets are immutable: replace one with other bytes under its own
            # name, labels, annotations and owner; delete the other job's outright.
            await replace_result(kube, jobs, corrupt_id)
            await delete_result(kube, jobs, missing_id)

            for job_id, message in ((corrupt_id, CORRUPT), (missing_id, MISSING)):
                for _ in range(2):  # the first poll decides, every later one agrees
                    status, document = await get(session, f"{base}{CHAT}/{job_id}")
                    assert status == 200, (document, api.log_tail())
                    assert document["status"] == "failed"
                    assert document["status_code"] == 500
                    assert document["error"]["is_bifrost_error"] is True
                    assert document["error"]["error"] == {"message": message}
                    assert "result" not in document
                    assert set(document) >= {"completed_at", "expires_at"}

            status, document = await get(session, f"{base}{CHAT}/{intact_id}")
            assert (status, document["status"]) == (200, "completed")
            metrics = await text(session, f"{base}/metrics")

    assert 'asyncjobs_api_results_unreadable_total{reason="corrupt"} 1.0' in metrics
    assert 'asyncjobs_api_results_unreadable_total{reason="missing"} 1.0' in metrics
    assert "not recorded" not in api.log_tail(100_000), "the chart's Role refused a write"
    for job_id, message in ((corrupt_id, CORRUPT), (missing_id, MISSING)):
        job = await kube.get(resources.asyncjobs_path(jobs, job_id))
        status_block = job["status"]
        assert status_block["phase"] == "Failed"
        assert status_block["statusCode"] == 500
        assert "resultRef" not in status_block
        assert status_block["error"]["error"]["message"] == message
        reasons = {c["type"]: (c["status"], c["reason"]) for c in status_block["conditions"]}
        assert reasons["Failed"] == ("True", "ResultUnreadable")
        assert reasons["Complete"] == ("False", "ResultUnreadable")
        events = await kube.list(
            f"/api/v1/namespaces/{jobs}/events",
            fieldSelector=f"involvedObject.name={job_id}",
        )
        [event] = [e for e in events["items"] if e["reason"] == "ResultUnreadable"]
        assert event["type"] == "Warning"
        assert event["message"] == message
        assert event["involvedObject"]["uid"] == job["metadata"]["uid"]
    intact = await kube.get(resources.asyncjobs_path(jobs, intact_id))
    assert intact["status"]["phase"] == "Completed"


async def deployment_args(kube: KubeClient, namespace: str, name: str) -> list[str]:
    deployment = await kube.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return [str(arg) for arg in container.get("args", [])]


async def submit(session: aiohttp.ClientSession, base: str) -> str:
    async with session.post(f"{base}{CHAT}", json=BODY) as answer:
        assert answer.status == 202, await answer.text()
        return str((await answer.json())["id"])


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with session.get(url) as answer:
        document: dict[str, Any] = await answer.json()
        return answer.status, document


async def text(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as answer:
        assert answer.status == 200
        return await answer.text()


async def result_ref(kube: KubeClient, namespace: str, job_id: str) -> payloads.PayloadRef:
    job = await kube.get(resources.asyncjobs_path(namespace, job_id))
    return payloads.PayloadRef.from_dict(job["status"]["resultRef"])


async def replace_result(kube: KubeClient, namespace: str, job_id: str) -> None:
    """The stored result again, as the operator wrote it but one byte different."""
    ref = await result_ref(kube, namespace, job_id)
    async with bodies.open_bodies(kube, namespace) as store:
        await bodies.corrupt(store, ref)


async def delete_result(kube: KubeClient, namespace: str, job_id: str) -> None:
    ref = await result_ref(kube, namespace, job_id)
    async with bodies.open_bodies(kube, namespace) as store:
        await bodies.remove(store, ref)
