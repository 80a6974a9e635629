"""Every write the operator sends to the apiserver, counted and retried in one place.

Writes are the operator's cost (DESIGN.md §4 counts them per job), so each one goes
through here: status merge patches, the expiry delete, and the Kubernetes Events posted
for failures a human should see. Transient apiserver errors are retried with a short
backoff; a job deleted meanwhile (404) is reported as None, not as an error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from asyncjobs.controller.health import WatchHealth
from asyncjobs.controller.metrics import Metrics
from asyncjobs.core import resources
from asyncjobs.core.jobs import format_time
from asyncjobs.core.kube import KubeClient, KubeError
from asyncjobs.core.model import AsyncJob, StatusPatch, as_asyncjob

log = logging.getLogger(__name__)

T = TypeVar("T")

_RETRY_DELAYS = (0.2, 0.5, 1, 2, 4, 8, 15, 30)


def slim(obj: AsyncJob) -> AsyncJob:
    """The job without `metadata.managedFields`, which nothing here reads: the apiserver's
    field-ownership records are more than half of a job's size in memory (about 4 of
    7.5 KB for a pending job), and the operator holds one object per job it runs or
    waits to run. A new metadata mapping: the one given may be shared (the watch's)."""
    metadata = obj["metadata"]
    if "managedFields" not in metadata:
        return obj
    kept = {key: value for key, value in metadata.items() if key != "managedFields"}
    return as_asyncjob({**obj, "metadata": kept})


class Conflict(Exception):
    """The object changed since it was read (a precondition failed)."""


class NotOwned(Conflict):
    """The job's shard is no longer this replica's: its claim is not sent."""


class JobWriter:
    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        metrics: Metrics,
        health: WatchHealth,
        clock: Callable[[], float],
        *,
        member: str = "",
        may_claim: Callable[[str], bool] = lambda _: True,
    ) -> None:
        self.client = client
        # Written into every status this process patches (status.operator), so the
        # other replicas leave a job alone while the process that last ran it is live.
        self.member = member
        self.may_claim = may_claim
        self.namespace = namespace
        self.metrics = metrics
        self.health = health
        self._wall = clock

    async def _retrying(self, verb: str, resource: str, call: Callable[[], Awaitable[T]]) -> T:
        for delay in (*_RETRY_DELAYS, None):
            self.metrics.apiserver_writes.labels(verb, resource).inc()
            try:
                return await call()
            except KubeError as error:
                if delay is None or not error.transient:
                    raise
                log.warning("apiserver %s %s failed (%s); retrying", verb, resource, error.status)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def patch_status(
        self, name: str, status: StatusPatch, resource_version: str | None = None
    ) -> AsyncJob | None:
        """Merge-patches the status; None when the job is gone. With a resource
        version, raises Conflict when the job changed since (the claim uses this, so a
        stale event can never start a job twice). A conditional write (a claim, the first
        attempt of a resumed job) is not sent for a job whose shard this replica no
        longer runs: NotOwned."""
        if resource_version and not self.may_claim(name):
            raise NotOwned(name)
        if self.member:
            status = {**status, "operator": self.member}
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        path = resources.asyncjobs_path(self.namespace, name, status=True)
        try:
            updated = await self._retrying(
                "PATCH", "asyncjobs/status", lambda: self.client.merge_patch(path, body)
            )
        except KubeError as error:
            if error.status == 404:
                return None
            if error.status == 409:
                raise Conflict(name) from error
            raise
        self.health.wrote(name, updated["metadata"].get("resourceVersion", ""))
        return slim(as_asyncjob(updated))

    async def delete_job(self, name: str, uid: str) -> None:
        path = resources.asyncjobs_path(self.namespace, name)
        # Background propagation: the job goes now, its Secrets follow through GC.
        body = {"propagationPolicy": "Background", "preconditions": {"uid": uid}}
        try:
            await self._retrying(
                "DELETE", "asyncjobs", lambda: self.client.request("DELETE", path, body=body)
            )
        except KubeError as error:
            if error.status not in (404, 409):  # gone already, or a new job of that name
                raise

    async def post_event(self, job: AsyncJob, reason: str, message: str) -> None:
        """A Warning Event on the job, best effort: an Event never fails a job."""
        metadata = job["metadata"]
        stamp = format_time_seconds(self._wall())
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{metadata['name']}.", "namespace": self.namespace},
            "involvedObject": {
                "apiVersion": resources.API_VERSION,
                "kind": resources.KIND,
                "name": metadata["name"],
                "namespace": self.namespace,
                "uid": metadata.get("uid", ""),
            },
            "type": "Warning",
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "asyncjobs-operator"},
            "reportingComponent": "asyncjobs.dev/operator",
            "reportingInstance": "asyncjobs-operator",
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        path = f"/api/v1/namespaces/{self.namespace}/events"
        try:
            self.metrics.apiserver_writes.labels("POST", "events").inc()
            await self.client.create(path, event)
        except KubeError as error:
            log.warning("could not post an event for %s (%s)", metadata["name"], error.status)


def format_time_seconds(epoch: float) -> str:
    """Event timestamps are whole seconds (metav1.Time)."""
    return format_time(datetime.fromtimestamp(int(epoch), UTC)).replace(".000Z", "Z")
