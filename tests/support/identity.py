"""Identities for tests: kubeconfigs holding tokens minted for ServiceAccounts, so a
process runs with exactly the permissions a Role grants (TokenRequest API)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from asyncjobs.core.kube import KubeClient


async def service_account_kubeconfig(
    kube: KubeClient, admin_kubeconfig: str, namespace: str, account: str, path: Path
) -> str:
    """A kubeconfig holding a token minted for the ServiceAccount (TokenRequest API)."""
    minted = await kube.create(
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600},
        },
    )
    admin = yaml.safe_load(Path(admin_kubeconfig).read_text())
    cluster = admin["clusters"][0]["cluster"]
    if "certificate-authority" in cluster:
        base = Path(admin_kubeconfig).parent
        cluster = {**cluster, "certificate-authority": str(base / cluster["certificate-authority"])}
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": cluster}],
                "users": [{"name": account, "user": {"token": minted["status"]["token"]}}],
                "contexts": [
                    {
                        "name": "sa",
                        "context": {"cluster": "c", "user": account, "namespace": namespace},
                    }
                ],
                "current-context": "sa",
            }
        )
    )
    return str(path)
