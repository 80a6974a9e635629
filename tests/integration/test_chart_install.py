"""`helm install` into the real control plane, then the operator and the API run as local
processes under the ServiceAccount tokens the chart created (no kubelet runs here, so
pods never start). A job going from submit to a 200 poll proves the chart's RBAC is
enough; requests outside it are refused."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from asyncjobs.api.virtual_keys import digest
from asyncjobs.controller.member_lease import MEMBER_LABEL, leases_path
from asyncjobs.core import resources
from asyncjobs.core.kube import KubeClient, KubeError, load_config
from tests.support import bodies
from tests.support.identity import service_account_kubeconfig
from tests.support.procs import ManagedProcess, free_port, python_module

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "asyncjobs"
BIN_DIR = Path(
    os.environ.get(
        "ASYNCJOBS_BIN_DIR",
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "asyncjobs" / "bin",
    )
)
KEY_SECRET = "openai-key"
VIRTUAL_KEY = "sk-bf-chart-install-team-a"
CHAT = {"model": "local/echo", "messages": [{"role": "user", "content": "hello"}]}


def helm(kubeconfig: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN_DIR / "helm"), *args],
        env={**os.environ, "KUBECONFIG": kubeconfig},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
async def release(kubeconfig_path: str, kube: KubeClient) -> AsyncIterator[dict[str, str]]:
    """A release in a fresh namespace; its jobs namespace is "<namespace>-jobs"."""
    namespace = f"rel-{uuid.uuid4().hex[:8]}"
    await kube.create(
        resources.namespaces_path(),
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace},
        },
    )
    # The provider key exists before the operator starts, as an operator would set it up.
    await kube.create(
        resources.secrets_path(namespace),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": KEY_SECRET},
            "stringData": {"api-key": "sk-provider-key-the-api-must-never-read"},
        },
    )
    values: dict[str, Any] = {
        # The plane already serves the CRD (installed from manifests/); a second owner
        # would conflict, so this release leaves it alone.
        "crds": {"enabled": False},
        "providers": {
            "providers": {
                "local": {"type": "local"},
                "openai": {
                    "type": "openai",
                    "baseURL": "http://127.0.0.1:9/v1",
                    "keys": [{"secretRef": {"name": KEY_SECRET, "key": "api-key"}}],
                },
            }
        },
    }
    if bodies.backend() == "s3":
        # The documented s3 install: the key pair in a Secret beside the Deployments.
        await kube.create(
            resources.secrets_path(namespace),
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "s3-credentials"},
                "stringData": {
                    name: os.environ[name]
                    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
                },
            },
        )
        values["payloads"] = {
            "backend": "s3",
            "s3": {
                "bucket": os.environ["ASYNCJOBS_S3_BUCKET"],
                "endpoint": os.environ["ASYNCJOBS_S3_ENDPOINT"],
                "pathStyle": True,
                "credentialsSecret": {"name": "s3-credentials"},
            },
        }
    values_file = Path(kubeconfig_path).parent / f"values-{namespace}.yaml"
    values_file.write_text(yaml.safe_dump(values))
    installed = helm(
        kubeconfig_path,
        "install",
        "aj",
        str(CHART),
        "--namespace",
        namespace,
        "--values",
        str(values_file),
        "--wait=false",
    )
    assert installed.returncode == 0, installed.stderr
    await quotas_computed(kube, f"{namespace}-jobs")
    yield {
        "namespace": namespace,
        "jobs": f"{namespace}-jobs",
        "keys": f"{namespace}-keys",
        "values": str(values_file),
    }
    helm(kubeconfig_path, "uninstall", "aj", "--namespace", namespace)
    for name in (namespace, f"{namespace}-jobs", f"{namespace}-keys"):
        try:
            await kube.delete(resources.namespaces_path(name))
        except KubeError as exc:
            if exc.status != 404:
                raise
    values_file.unlink(missing_ok=True)


async def test_installed_chart_objects_are_accepted_and_its_rbac_runs_a_job(
    release: dict[str, str],
    kube: KubeClient,
    kubeconfig_path: str,
    tmp_path: Path,
    log_dir: Path,
) -> None:
    namespace, jobs_namespace = release["namespace"], release["jobs"]
    manifest = helm(kubeconfig_path, "get", "manifest", "aj", "--namespace", namespace)
    kinds = {doc["kind"] for doc in yaml.safe_load_all(manifest.stdout) if doc}
    assert {
        "Deployment",
        "Service",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "Namespace",
    } <= kinds
    assert not {"ClusterRole", "ClusterRoleBinding"} & kinds, "nothing cluster-wide"
    deployment = await kube.get(
        f"/apis/apps/v1/namespaces/{namespace}/deployments/aj-asyncjobs-api"
    )
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "aj-asyncjobs-api"

    api_config, operator_config, providers = await installed_identities(
        kube, kubeconfig_path, namespace, tmp_path
    )
    # The API runs with the Deployment's own arguments and the token the chart generated.
    (api_container,) = deployment["spec"]["template"]["spec"]["containers"]
    token_secret = await kube.get(resources.secrets_path(namespace, "aj-asyncjobs-gateway-token"))
    token = base64.b64decode(token_secret["data"]["token"]).decode()
    # A virtual key, where the chart lets the API watch Secrets (only its digest stored).
    await kube.create(
        resources.secrets_path(release["keys"]),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "team-a", "labels": {resources.LABEL_VIRTUAL_KEY: "true"}},
            "stringData": {"sha256": digest(VIRTUAL_KEY)},
        },
    )

    api_port, metrics_port = free_port(), free_port()
    operator = ManagedProcess(
        "operator",
        python_module(
            "asyncjobs.controller.main",
            "--kubeconfig",
            operator_config,
            "--namespace",
            jobs_namespace,
            "--secrets-namespace",
            namespace,
            "--providers-config",
            str(providers),
            "--metrics-port",
            str(metrics_port),
            "--lease-prefix",
            "aj-asyncjobs-operator",
            "--lease-identity",
            "chart-test",
        ),
        log_dir=log_dir,
    )
    api = ManagedProcess(
        "api",
        python_module(
            "asyncjobs.api.main",
            *local_api_args(api_container["args"]),
            "--kubeconfig",
            api_config,
            "--providers-config",
            str(providers),
            "--host",
            "127.0.0.1",
            "--port",
            str(api_port),
        ),
        log_dir=log_dir,
        env={"ASYNCJOBS_GATEWAY_TOKEN": token},
    )
    base = f"http://127.0.0.1:{api_port}"
    with operator, api:
        await asyncio.to_thread(operator.wait_http_ok, f"http://127.0.0.1:{metrics_port}/healthz")
        await asyncio.to_thread(api.wait_http_ok, f"{base}/readyz")
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{base}/v1/async/chat/completions", json=CHAT) as refused,
        ):
            assert refused.status == 401, "the default install serves nothing without a token"
        result = await submit_and_poll(
            base, {"Authorization": f"Bearer {token}", "x-bf-vk": VIRTUAL_KEY}
        )
        assert result["status"] == "completed", (result, operator.log_tail(), api.log_tail())
        assert result["status_code"] == 200
        assert result["result"]["choices"][0]["message"]["role"] == "assistant"
    (job,) = (await kube.list(resources.asyncjobs_path(jobs_namespace)))["items"]
    assert job["spec"]["virtualKeyId"] == "team-a", "the key came from the keys namespace"
    upgraded = helm(
        kubeconfig_path, "upgrade", "aj", str(CHART), "-n", namespace, "--values", release["values"]
    )
    assert upgraded.returncode == 0, upgraded.stderr
    kept = await kube.get(resources.secrets_path(namespace, "aj-asyncjobs-gateway-token"))
    assert kept["data"] == token_secret["data"], "an upgrade keeps the generated token"

    async with KubeClient(load_config(api_config)) as as_api:
        with pytest.raises(KubeError) as refused:
            await as_api.get(resources.secrets_path(namespace, KEY_SECRET))
        assert refused.value.status == 403
        with pytest.raises(KubeError) as refused:
            await as_api.list(f"/apis/{resources.GROUP}/{resources.VERSION}/asyncjobs")
        assert refused.value.status == 403, "the API may not read jobs outside its namespace"
        with pytest.raises(KubeError) as refused:
            await as_api.list(resources.secrets_path(jobs_namespace))
        assert refused.value.status == 403, "the API may not list the jobs' Secrets (bodies)"
        with pytest.raises(KubeError) as refused:
            await as_api.list(resources.secrets_path(jobs_namespace), watch="true")
        assert refused.value.status == 403, "nor watch them"
        keys = await as_api.list(resources.secrets_path(release["keys"]))
        assert [k["metadata"]["name"] for k in keys["items"]] == ["team-a"]
        if bodies.backend() == "s3":
            with pytest.raises(KubeError) as refused:
                await as_api.get(resources.secrets_path(jobs_namespace, "any-secret"))
            assert refused.value.status == 403, "with s3 the API reads no Secret by name"
    async with KubeClient(load_config(operator_config)) as as_operator:
        key = await as_operator.get(resources.secrets_path(namespace, KEY_SECRET))
        assert base64.b64decode(key["data"]["api-key"]).startswith(b"sk-provider-key")
        with pytest.raises(KubeError) as refused:
            await as_operator.list(resources.secrets_path(namespace))
        assert refused.value.status == 403, "the operator reads only the named key Secrets"
        with pytest.raises(KubeError) as refused:
            await as_operator.list(resources.secrets_path(jobs_namespace))
        assert refused.value.status == 403, "the operator never lists Secrets (virtual keys)"
        members = await as_operator.list(leases_path(jobs_namespace), labelSelector=MEMBER_LABEL)
        assert members["items"] == [], "the operator deleted its member Lease as it stopped"
        with pytest.raises(KubeError) as refused:
            await as_operator.list(leases_path(namespace))
        assert refused.value.status == 403, "the operator keeps Leases in the jobs namespace only"


async def quotas_computed(kube: KubeClient, namespace: str) -> None:
    """Waits for the quota controller to compute the release's ResourceQuota: until then
    the apiserver refuses every create in the namespace ("status unknown for quota"),
    which the API answers 503, retry later. A freshly started controller learns of custom
    resources (count/asyncjobs.asyncjobs.dev) only at its next discovery, up to 30 s on."""
    path = f"/api/v1/namespaces/{namespace}/resourcequotas"
    for _ in range(900):
        quotas = (await kube.list(path))["items"]
        # None with the s3 backend: the chart makes the quota for Secrets only.
        if all(usage_known(q.get("status") or {}) for q in quotas):
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"the ResourceQuotas of {namespace} were never computed")


def usage_known(status: dict[str, Any]) -> bool:
    # The apiserver's quota admission needs a used figure for every hard limit.
    hard = status.get("hard") or {}
    return bool(hard) and set(hard) <= set(status.get("used") or {})


async def installed_identities(
    kube: KubeClient, kubeconfig_path: str, namespace: str, tmp_path: Path
) -> tuple[str, str, Path]:
    """What a pod of the release would have: kubeconfigs with tokens of the API's and the
    operator's ServiceAccounts, and the providers file from the chart's ConfigMap."""
    api_config = await service_account_kubeconfig(
        kube, kubeconfig_path, namespace, "aj-asyncjobs-api", tmp_path / "api.kubeconfig"
    )
    operator_config = await service_account_kubeconfig(
        kube, kubeconfig_path, namespace, "aj-asyncjobs-operator", tmp_path / "operator.kubeconfig"
    )
    configmap = await kube.get(f"/api/v1/namespaces/{namespace}/configmaps/aj-asyncjobs-providers")
    providers = tmp_path / "providers.yaml"
    providers.write_text(configmap["data"]["providers.yaml"])
    return api_config, operator_config, providers


def local_api_args(chart_args: list[str]) -> list[str]:
    """The Deployment's API arguments, but for where this process listens and reads its
    providers file (a pod's port and mount path mean nothing here)."""
    local = ("--host=", "--port=", "--providers-config=")
    return [arg for arg in chart_args if not arg.startswith(local)]


async def submit_and_poll(base: str, headers: dict[str, str]) -> dict[str, Any]:
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.post(f"{base}/v1/async/chat/completions", json=CHAT) as answer:
            assert answer.status == 202, await answer.text()
            job_id = (await answer.json())["id"]
        for _ in range(300):
            async with session.get(f"{base}/v1/async/chat/completions/{job_id}") as answer:
                if answer.status == 200:
                    polled: dict[str, Any] = await answer.json()
                    return polled
            await asyncio.sleep(0.1)
    pytest.fail(f"job {job_id} did not finish in 30 s")


def local_operator_args(chart_args: list[str]) -> list[str]:
    """The Deployment's operator arguments, but for its providers file and metrics port."""
    local = ("--metrics-port=", "--providers-config=")
    return [arg for arg in chart_args if not arg.startswith(local)]


async def test_two_operator_and_two_api_replicas_of_the_chart_share_the_jobs(
    release: dict[str, str],
    kube: KubeClient,
    kubeconfig_path: str,
    tmp_path: Path,
    log_dir: Path,
) -> None:
    namespace, jobs_namespace = release["namespace"], release["jobs"]
    upgraded = helm(
        kubeconfig_path,
        *("upgrade", "aj", str(CHART), "-n", namespace, "--values", release["values"]),
        *("--set", "operator.replicas=2", "--set", "api.replicas=2"),
        *("--set", "api.autoscaling.enabled=false"),
    )
    assert upgraded.returncode == 0, upgraded.stderr
    deployments = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    operator_deployment = await kube.get(f"{deployments}/aj-asyncjobs-operator")
    api_deployment = await kube.get(f"{deployments}/aj-asyncjobs-api")
    assert operator_deployment["spec"]["replicas"] == 2
    assert api_deployment["spec"]["replicas"] == 2
    (operator_container,) = operator_deployment["spec"]["template"]["spec"]["containers"]
    (api_container,) = api_deployment["spec"]["template"]["spec"]["containers"]

    api_config, operator_config, providers = await installed_identities(
        kube, kubeconfig_path, namespace, tmp_path
    )
    token_secret = await kube.get(resources.secrets_path(namespace, "aj-asyncjobs-gateway-token"))
    token = base64.b64decode(token_secret["data"]["token"]).decode()

    def operator_pod(pod: str) -> tuple[ManagedProcess, int]:
        port = free_port()
        argv = python_module(
            "asyncjobs.controller.main",
            *local_operator_args(operator_container["args"]),
            *("--kubeconfig", operator_config, "--providers-config", str(providers)),
            *("--metrics-port", str(port)),
        )
        # POD_NAME as the Deployment's downward API sets it: the member's identity.
        return ManagedProcess(pod, argv, log_dir=log_dir, env={"POD_NAME": pod}), port

    def api_pod(pod: str) -> tuple[ManagedProcess, str]:
        port = free_port()
        argv = python_module(
            "asyncjobs.api.main",
            *local_api_args(api_container["args"]),
            *("--kubeconfig", api_config, "--providers-config", str(providers)),
            *("--host", "127.0.0.1", "--port", str(port)),
        )
        env = {"ASYNCJOBS_GATEWAY_TOKEN": token}
        return ManagedProcess(pod, argv, log_dir=log_dir, env=env), f"http://127.0.0.1:{port}"

    (op_a, port_a), (op_b, port_b) = operator_pod("operator-a"), operator_pod("operator-b")
    (api_a, base_a), (api_b, base_b) = api_pod("api-a"), api_pod("api-b")
    with op_a, op_b, api_a, api_b:
        for process, url in (
            (op_a, f"http://127.0.0.1:{port_a}/healthz"),
            (op_b, f"http://127.0.0.1:{port_b}/healthz"),
            (api_a, f"{base_a}/readyz"),
            (api_b, f"{base_b}/readyz"),
        ):
            # Four Python processes starting at once on two shared cores: give them time.
            await asyncio.to_thread(process.wait_http_ok, url, 120)
        members = f"/apis/coordination.k8s.io/v1/namespaces/{jobs_namespace}/leases"
        for _ in range(100):
            listed = await kube.list(members, labelSelector=MEMBER_LABEL)
            if len(listed["items"]) == 2:
                break
            await asyncio.sleep(0.1)
        assert len(listed["items"]) == 2, "each operator replica holds its member Lease"
        await asyncio.sleep(3)  # a list period: each replica sees the other, halves its shards
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            ids = []
            for n in range(16):
                # Submitted to one replica, polled from the other: any API pod answers.
                submit_to = base_a if n % 2 else base_b
                async with session.post(
                    f"{submit_to}/v1/async/chat/completions", json=CHAT
                ) as answer:
                    assert answer.status == 202, await answer.text()
                    ids.append((await answer.json())["id"])
            for n, job_id in enumerate(ids):
                poll_from = base_b if n % 2 else base_a
                for _ in range(300):
                    async with session.get(
                        f"{poll_from}/v1/async/chat/completions/{job_id}"
                    ) as answer:
                        if answer.status == 200:
                            assert (await answer.json())["status"] == "completed"
                            break
                    await asyncio.sleep(0.1)
                else:
                    pytest.fail(f"job {job_id} not finished: {op_a.log_tail()} {op_b.log_tail()}")
    jobs = (await kube.list(resources.asyncjobs_path(jobs_namespace)))["items"]
    ran_by = {job["status"]["operator"].split("/")[0] for job in jobs}
    assert ran_by == {"operator-a", "operator-b"}, "both replicas ran their share of the jobs"
