"""Kubeconfigs whose user is an exec credential plugin, as EKS, GKE, AKS and OIDC logins
write them, against the real control plane.

The plugin is a small script run by the test's interpreter (tests/support/exec_plugin.py)
that answers a ServiceAccount token minted with the TokenRequest API, so the plane
accepts it on any cluster, and counts its runs in a file. A short expirationTimestamp
shows renewal before expiry; a first token the apiserver refuses shows renewal on 401.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from asyncjobs.core import resources
from asyncjobs.core.kube import KubeClient, load_config
from tests.integration.operator_support import (
    local_providers,
    running_operator,
    submit,
    wait_terminal,
)
from tests.support.exec_plugin import ExecPluginScript

ACCOUNT = "exec-plugin-user"


async def service_account_token(kube: KubeClient, namespace: str) -> str:
    """A token for a ServiceAccount that may do anything in the namespace, and nothing else."""
    await kube.create(
        f"/api/v1/namespaces/{namespace}/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": ACCOUNT}},
    )
    await kube.create(
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": ACCOUNT},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": namespace}],
        },
    )
    minted = await kube.create(
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{ACCOUNT}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600},
        },
    )
    return str(minted["status"]["token"])


def exec_kubeconfig(
    admin_kubeconfig: str, namespace: str, plugin: ExecPluginScript, path: Path
) -> str:
    """The admin kubeconfig's cluster, with the plugin as its user."""
    admin = yaml.safe_load(Path(admin_kubeconfig).read_text())
    current = {c["name"]: c["context"] for c in admin["contexts"]}[admin["current-context"]]
    cluster = {c["name"]: c["cluster"] for c in admin["clusters"]}[current["cluster"]]
    if "certificate-authority" in cluster:
        base = Path(admin_kubeconfig).parent
        cluster = {**cluster, "certificate-authority": str(base / cluster["certificate-authority"])}
    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": {"exec": plugin.exec_entry(provideClusterInfo=True)}}],
        "contexts": [
            {"name": "x", "context": {"cluster": "c", "user": "u", "namespace": namespace}}
        ],
        "current-context": "x",
    }
    path.write_text(json.dumps(config))
    return str(path)


async def test_client_lists_asyncjobs_with_an_exec_plugin_token(
    kube: KubeClient, namespace: str, kubeconfig_path: str, tmp_path: Path
) -> None:
    token = await service_account_token(kube, namespace)
    plugin = ExecPluginScript.create(tmp_path / "plugin", token)
    config = load_config(exec_kubeconfig(kubeconfig_path, namespace, plugin, tmp_path / "kc"))
    name = await submit(kube, namespace, {"model": "local/echo", "messages": []})
    async with KubeClient(config) as client:
        for _ in range(3):
            listed = await client.list(resources.asyncjobs_path(namespace))
            assert [item["metadata"]["name"] for item in listed["items"]] == [name]
    [call] = plugin.calls()  # one run serves every request while the token is valid
    assert call["info"]["spec"]["cluster"]["server"] == config.server
    assert call["info"]["spec"]["interactive"] is False


async def test_an_expiring_credential_is_renewed_before_it_expires(
    kube: KubeClient, namespace: str, kubeconfig_path: str, tmp_path: Path
) -> None:
    token = await service_account_token(kube, namespace)
    plugin = ExecPluginScript.create(tmp_path / "plugin", token, lifetime=2)
    config = load_config(exec_kubeconfig(kubeconfig_path, namespace, plugin, tmp_path / "kc"))
    async with KubeClient(config) as client:
        await client.list(resources.asyncjobs_path(namespace))
        first = await config.credentials.current()
        assert first.renew_at is not None
        assert plugin.runs == 1
        # Waiting for the wall clock to pass the renewal time is the point of this test.
        await asyncio.sleep((first.renew_at - datetime.now(UTC)).total_seconds() + 0.05)
        await client.list(resources.asyncjobs_path(namespace))
        assert plugin.runs == 2
        assert await config.credentials.current() is not first


async def test_a_refused_token_is_renewed_and_the_request_retried(
    kube: KubeClient, namespace: str, kubeconfig_path: str, tmp_path: Path
) -> None:
    token = await service_account_token(kube, namespace)
    plugin = ExecPluginScript.create(tmp_path / "plugin", "revoked-token", token)
    config = load_config(exec_kubeconfig(kubeconfig_path, namespace, plugin, tmp_path / "kc"))
    async with KubeClient(config) as client:
        listed = await client.list(resources.asyncjobs_path(namespace))
    assert listed["items"] == []
    assert plugin.runs == 2


async def test_operator_runs_jobs_with_an_exec_plugin_that_renews_its_credential(
    kube: KubeClient, namespace: str, kubeconfig_path: str, tmp_path: Path, log_dir: Path
) -> None:
    token = await service_account_token(kube, namespace)
    # Refused first, then valid for 4 s at a time: the operator renews on 401 and on expiry.
    plugin = ExecPluginScript.create(tmp_path / "plugin", "revoked-token", token, lifetime=4)
    exec_config = exec_kubeconfig(kubeconfig_path, namespace, plugin, tmp_path / "kc")
    with running_operator(exec_config, namespace, local_providers(tmp_path), log_dir) as operator:
        await operator.astart()
        first = await submit(kube, namespace, {"model": "local/echo", "messages": []})
        assert (await wait_terminal(kube, namespace, first))["status"]["phase"] == "Completed"
        runs = plugin.runs
        assert runs >= 2
        async with asyncio.timeout(30):
            # The plugin runs in the operator's process; its count file is all there is.
            while plugin.runs < runs + 2:  # noqa: ASYNC110
                await asyncio.sleep(0.2)
        second = await submit(kube, namespace, {"model": "local/echo", "messages": []})
        assert (await wait_terminal(kube, namespace, second))["status"]["phase"] == "Completed"
        logs = operator.logs()
    assert "revoked-token" not in logs
    assert token not in logs
    assert "Traceback" not in logs
