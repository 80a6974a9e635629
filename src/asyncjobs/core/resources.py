"""Names of the Kubernetes resources asyncjobs owns, and the paths to reach them.

One place for the group, version, labels and annotation prefixes, so the API, the
operator, the chart and the tests cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

GROUP = "asyncjobs.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "AsyncJob"
PLURAL = "asyncjobs"

# Labels put on every Secret that belongs to a job, so one selector finds them all.
LABEL_JOB_ID = f"{GROUP}/job-id"
LABEL_PAYLOAD = f"{GROUP}/payload"  # "request" or "result"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "asyncjobs"

# On every chunk Secret of a body: the whole body's reference, so a stored result can
# be found and checked from the Secret alone (a resumed job finishing from it).
ANNOTATION_PAYLOAD_SIZE = f"{GROUP}/payload-size"
ANNOTATION_PAYLOAD_SHA256 = f"{GROUP}/payload-sha256"
ANNOTATION_PAYLOAD_CHUNKS = f"{GROUP}/payload-chunks"
ANNOTATION_PAYLOAD_CONTENT_TYPE = f"{GROUP}/payload-content-type"

# Secrets labelled with this are virtual keys the API recognises.
LABEL_VIRTUAL_KEY = f"{GROUP}/virtual-key"


def asyncjobs_path(namespace: str, name: str | None = None, *, status: bool = False) -> str:
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    if name is not None:
        path += f"/{name}"
        if status:
            path += "/status"
    return path


def secrets_path(namespace: str, name: str | None = None) -> str:
    path = f"/api/v1/namespaces/{namespace}/secrets"
    return path if name is None else f"{path}/{name}"


def namespaces_path(name: str | None = None) -> str:
    return "/api/v1/namespaces" if name is None else f"/api/v1/namespaces/{name}"


def owner_reference(job: Mapping[str, Any]) -> dict[str, object]:
    """An ownerReference to the job, so garbage collection deletes what the job owns."""
    metadata = job["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": metadata["name"],
        "uid": metadata["uid"],
        "blockOwnerDeletion": False,
    }


# Completion-webhook endpoints (AsyncJobWebhook) live beside the jobs, and each one's
# signing secret in a Secret it owns, labelled so that what it is can be told from kubectl.
WEBHOOK_KIND = "AsyncJobWebhook"
WEBHOOK_PLURAL = "asyncjobwebhooks"
LABEL_WEBHOOK = f"{GROUP}/webhook"


def webhooks_path(namespace: str, name: str | None = None) -> str:
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{WEBHOOK_PLURAL}"
    return path if name is None else f"{path}/{name}"


def configmaps_path(namespace: str, name: str | None = None) -> str:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    return path if name is None else f"{path}/{name}"
