"""A submit that fails half-way answers a clean 5xx and leaves nothing behind.

The API runs as a ServiceAccount whose Role lets it create AsyncJobs but not Secrets, so
the apiserver refuses the second write of a submit for real: the job created first must
be deleted again, and the client gets a BifrostError, not a stack trace.
"""

from __future__ import annotations

import json
from pathlib import Path

from asyncjobs.core import resources
from asyncjobs.core.kube import KubeClient
from tests.integration.test_api import ApiFactory, start_api  # noqa: F401 - fixture
from tests.support.identity import service_account_kubeconfig

ACCOUNT = "api-without-secret-writes"


async def restricted_identity(
    kube: KubeClient, kubeconfig_path: str, namespace: str, path: Path
) -> str:
    objects = [
        (
            "/api/v1/namespaces/{ns}/serviceaccounts",
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": ACCOUNT}},
        ),
        (
            "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": ACCOUNT},
                "rules": [
                    {
                        "apiGroups": [resources.GROUP],
                        "resources": ["asyncjobs"],
                        "verbs": ["create", "get", "list", "watch", "delete"],
                    },
                    # Everything the API does with Secrets except creating them.
                    {
                        "apiGroups": [""],
                        "resources": ["secrets"],
                        "verbs": ["get", "list", "watch"],
                    },
                ],
            },
        ),
        (
            "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": ACCOUNT},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": ACCOUNT,
                },
                "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": namespace}],
            },
        ),
    ]
    for path_template, body in objects:
        await kube.create(path_template.format(ns=namespace), body)
    return await service_account_kubeconfig(kube, kubeconfig_path, namespace, ACCOUNT, path)


async def test_refused_request_secret_answers_500_and_removes_the_job(
    start_api: ApiFactory,  # noqa: F811 - the imported fixture
    kube: KubeClient,
    kubeconfig_path: str,
    namespace: str,
    tmp_path: Path,
) -> None:
    identity = await restricted_identity(
        kube, kubeconfig_path, namespace, tmp_path / "restricted.kubeconfig"
    )
    api = await start_api("--kubeconfig", identity)
    body = {"model": "local/echo", "messages": [{"role": "user", "content": "hello"}]}
    status, document = await api.post(
        "/v1/async/chat/completions", json.dumps(body).encode(), "application/json"
    )
    assert status == 500
    assert document == {
        "is_bifrost_error": False,
        "status_code": 500,
        "error": {"message": "could not store the request: the job store refused the request"},
        "extra_fields": {},
    }
    jobs = await kube.list(resources.asyncjobs_path(namespace))
    assert jobs["items"] == [], "the job created before the refused Secret must be deleted"
    secrets = await kube.list(
        resources.secrets_path(namespace), labelSelector=resources.LABEL_JOB_ID
    )
    assert secrets["items"] == []
    assert "Traceback" not in api.process.log_tail()
