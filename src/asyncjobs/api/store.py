"""The job store: the one boundary between the API's views and where jobs live.

Views talk to the `JobStore` protocol only. The Kubernetes-backed store writes AsyncJobs
and request Secrets and answers reads from a watch-fed cache; unit tests pass a small
in-memory store with the same protocol, so the views are tested without a cluster.
"""

from __future__ import annotations

import logging
from typing import Protocol

from asyncjobs.core import payloads, resources
from asyncjobs.core.jobs import JobSpec, JobView, build_asyncjob
from asyncjobs.core.kube import KubeClient, KubeError, KubeObject

log = logging.getLogger(__name__)


class StoreUnavailable(Exception):
    """The store could not complete an operation; the API answers a 5xx, nothing is left."""

    def __init__(self, message: str, *, status: int = 503) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class JobStore(Protocol):
    async def create(self, spec: JobSpec, body: bytes) -> None:
        """Records a new job and its request body, all or nothing."""

    async def find(self, job_id: str) -> JobView | None:
        """The job as last seen, or None when it does not exist."""

    async def result(self, view: JobView) -> bytes | None:
        """The stored result body of a completed job; None when it is gone (expired)."""

    def ready(self) -> bool:
        """Whether reads are served from a synced view of the jobs."""


class JobCache:
    """JobViews by id, fed by the AsyncJob reflector; polls read it without a round trip."""

    def __init__(self) -> None:
        self._jobs: dict[str, JobView] = {}

    def get(self, job_id: str) -> JobView | None:
        return self._jobs.get(job_id)

    def replace(self, objects: list[KubeObject]) -> None:
        views: dict[str, JobView] = {}
        for obj in objects:
            view = _view_or_none(obj)
            if view is not None:
                views[view.job_id] = view
        self._jobs = views

    def apply(self, kind: str, obj: KubeObject) -> None:
        if kind == "DELETED":
            self._jobs.pop(obj.get("metadata", {}).get("name", ""), None)
            return
        view = _view_or_none(obj)
        if view is not None:
            self._jobs[view.job_id] = view

    def add_if_absent(self, view: JobView) -> None:
        # Our own create, ahead of its watch event; never overwrite a newer watched state.
        self._jobs.setdefault(view.job_id, view)

    def __len__(self) -> int:
        return len(self._jobs)


def _view_or_none(obj: KubeObject) -> JobView | None:
    try:
        return JobView.from_object(obj)
    except (KeyError, ValueError, TypeError):
        # An object another writer mangled must not stop the cache; it polls as unknown.
        log.warning("ignoring malformed AsyncJob %s", obj.get("metadata", {}).get("name"))
        return None


def _unavailable(action: str, exc: KubeError) -> StoreUnavailable:
    if exc.status in (0, 429, 503, 504):
        return StoreUnavailable(f"{action}: the job store is unavailable, retry later")
    return StoreUnavailable(f"{action}: the job store refused the request", status=500)


class KubeJobStore:
    """Jobs as AsyncJobs in one namespace, bodies in Secrets they own."""

    def __init__(self, client: KubeClient, namespace: str, cache: JobCache) -> None:
        self.client = client
        self.namespace = namespace
        self.cache = cache
        self.synced = False

    def ready(self) -> bool:
        return self.synced

    async def create(self, spec: JobSpec, body: bytes) -> None:
        path = resources.asyncjobs_path(self.namespace)
        try:
            created = await self.client.create(path, build_asyncjob(spec))
        except KubeError as exc:
            if exc.status == 0:
                # A timeout may hide a create that did happen; remove it so no job runs
                # without its request.
                await self._delete_quietly(spec.job_id)
            raise _unavailable("could not create the job", exc) from exc
        try:
            await payloads.store(
                self.client,
                self.namespace,
                created,
                "request",
                body,
                spec.request_ref.content_type,
                ref=spec.request_ref,
            )
        except KubeError as exc:
            # Deleting the job lets garbage collection remove any chunk already written.
            await self._delete_quietly(spec.job_id)
            raise _unavailable("could not store the request", exc) from exc
        self.cache.add_if_absent(JobView.from_object(created))

    async def _delete_quietly(self, job_id: str) -> None:
        try:
            await self.client.delete(
                resources.asyncjobs_path(self.namespace, job_id), propagationPolicy="Background"
            )
        except KubeError as exc:
            if exc.status != 404:
                log.error("could not delete half-created job %s: %s", job_id, exc)

    async def find(self, job_id: str) -> JobView | None:
        cached = self.cache.get(job_id)
        if cached is not None:
            return cached
        # Another replica may have created it a moment ago: read it directly so a client
        # never sees 404 for a job it was just given (read-your-writes across replicas).
        try:
            obj = await self.client.get(resources.asyncjobs_path(self.namespace, job_id))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise _unavailable("could not read the job", exc) from exc
        return _view_or_none(obj)

    async def result(self, view: JobView) -> bytes | None:
        if view.result_ref is None:
            raise StoreUnavailable("the job has no stored result", status=500)
        try:
            return await payloads.load(self.client, self.namespace, view.result_ref)
        except KubeError as exc:
            if exc.status == 404:
                return None  # deleted with its expired job between the read and now
            raise _unavailable("could not read the job result", exc) from exc
        except payloads.PayloadCorrupt as exc:
            log.error("result of job %s is corrupt: %s", view.job_id, exc)
            raise StoreUnavailable("the stored job result is unreadable", status=500) from exc
