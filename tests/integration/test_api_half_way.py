"""A submit that fails half-way answers a clean 5xx and leaves nothing behind.

Secrets backend: the API runs as a ServiceAccount whose Role lets it create AsyncJobs
but not Secrets, so the apiserver refuses the second write of a submit for real: the
job created first must be deleted again. S3 backend: the request object is written
first, so the two halves are an object store that is down (503, no job) and an
AsyncJob the apiserver refuses (500, the object deleted again). Either way the client
gets a BifrostError, not a stack trace.
"""

from __future__ import annotations

import json
from pathlib import Path

from asyncjobs.core import resources
from asyncjobs.core.kube import KubeClient
from tests.integration.test_api import ApiFactory, start_api  # noqa: F401 - fixture
from tests.support import bodies
from tests.support.identity import service_account_kubeconfig
from tests.support.procs import free_port

ACCOUNT = "api-without-secret-writes"
BODY = json.dumps({"model": "local/echo", "messages": [{"role": "user", "content": "hi"}]}).encode()


async def restricted_identity(
    kube: KubeClient, kubeconfig_path: str, namespace: str, path: Path, *, may_create: bool = True
) -> str:
    """An identity that may do what the API does, except create Secrets and (unless
    `may_create`) AsyncJobs."""
    job_verbs = ["get", "list", "watch", "delete"] + (["create"] if may_create else [])
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
                        "verbs": job_verbs,
                    },
                    # Everything the API does with Secrets except creating them.
                    {
                        "apiGroups": [""],
                        "resources": ["secrets"],
                        "verbs": ["get", "list", "watch"],
                    },
                    # The virtual keys' usage records.
                    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list", "watch"]},
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


@bodies.needs_backend("secrets")
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
    status, document = await api.post("/v1/async/chat/completions", BODY, "application/json")
    assert status == 500
    assert document == {
        "is_bifrost_error": False,
        "status_code": 500,
        "error": {"message": "could not store the request: the job store refused the request"},
        "extra_fields": {},
    }
    jobs = await kube.list(resources.asyncjobs_path(namespace))
    assert jobs["items"] == [], "the job created before the refused Secret must be deleted"
    assert await bodies.stored_bodies(kube, namespace) == 0
    assert "Traceback" not in api.process.log_tail()


@bodies.needs_backend("s3")
async def test_object_store_down_answers_503_and_creates_no_job(
    start_api: ApiFactory,  # noqa: F811 - the imported fixture
    kube: KubeClient,
    namespace: str,
) -> None:
    # Nothing listens there: every connection is refused, as when the store is down.
    api = await start_api("--s3-endpoint", f"http://127.0.0.1:{free_port()}")
    status, document = await api.post("/v1/async/chat/completions", BODY, "application/json")
    assert status == 503
    assert document == {
        "is_bifrost_error": False,
        "status_code": 503,
        "error": {
            "message": "could not store the request: the job store is unavailable, retry later"
        },
        "extra_fields": {},
    }
    assert (await kube.list(resources.asyncjobs_path(namespace)))["items"] == []
    assert "Traceback" not in api.process.log_tail()


@bodies.needs_backend("s3")
async def test_refused_asyncjob_after_the_object_answers_500_and_deletes_the_object(
    start_api: ApiFactory,  # noqa: F811 - the imported fixture
    kube: KubeClient,
    kubeconfig_path: str,
    namespace: str,
    tmp_path: Path,
) -> None:
    identity = await restricted_identity(
        kube, kubeconfig_path, namespace, tmp_path / "restricted.kubeconfig", may_create=False
    )
    api = await start_api("--kubeconfig", identity)
    status, document = await api.post("/v1/async/chat/completions", BODY, "application/json")
    assert status == 500
    assert document["error"] == {
        "message": "could not create the job: the job store refused the request"
    }
    assert (await kube.list(resources.asyncjobs_path(namespace)))["items"] == []
    assert await bodies.stored_bodies(kube, namespace) == 0
    assert "Traceback" not in api.process.log_tail()
