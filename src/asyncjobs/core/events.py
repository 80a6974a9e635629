"""Kubernetes Events about an AsyncJob, built in one place for both processes.

An Event is how a failure reaches `kubectl describe asyncjob` and the cluster's event
pipeline. The operator and the API both post them (a job failed by its provider, a
result found unreadable at poll time), so the object is built by one pure function and
each process only sends it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from asyncjobs.core import resources
from asyncjobs.core.kube import KubeObject

# The apiserver refuses longer Event messages.
MESSAGE_LIMIT = 1024


def events_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/events"


def warning_event(
    job: KubeObject, namespace: str, reason: str, message: str, now: datetime, component: str
) -> KubeObject:
    """A Warning Event on the job; `component` names the sender ("asyncjobs-api")."""
    metadata = job["metadata"]
    stamp = event_time(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{metadata['name']}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": resources.API_VERSION,
            "kind": resources.KIND,
            "name": metadata["name"],
            "namespace": namespace,
            "uid": metadata.get("uid", ""),
        },
        "type": "Warning",
        "reason": reason,
        "message": message[:MESSAGE_LIMIT],
        "source": {"component": component},
        "reportingComponent": f"{resources.GROUP}/{component.removeprefix('asyncjobs-')}",
        "reportingInstance": component,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


def event_time(moment: datetime) -> str:
    """Event timestamps are whole seconds (metav1.Time)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
