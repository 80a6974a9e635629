"""An in-memory JobStore: the test double for the store boundary of the API.

It keeps real AsyncJob objects (built by the same core function the Kubernetes store
uses) and JobViews read from them, so a test that completes a job edits the object's
status exactly as the operator would patch it.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from asyncjobs.api import integrity
from asyncjobs.api.clock import Clock
from asyncjobs.api.errors import ApiError
from asyncjobs.api.integrity import Cause
from asyncjobs.api.job_order import Position, position
from asyncjobs.api.key_usage import KeyUsage
from asyncjobs.api.quota import Usage
from asyncjobs.api.store import Finished, JobExists
from asyncjobs.core import cancel, payloads
from asyncjobs.core.jobs import JobSpec, JobView, Phase, build_asyncjob, format_time
from asyncjobs.core.kube import KubeObject

# The time the unit tests' apps and stores read: a little after the jobs they put were
# submitted (fakes' default submitted time), so nothing depends on the real clock.
NOW = datetime(2026, 2, 19, 8, 20, 0, 250_000, tzinfo=UTC)


def now() -> datetime:
    return NOW


class FakeClock:
    """A clock that stands still until a test moves it."""

    def __init__(self, start: datetime = NOW) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


class FakeJobStore:
    def __init__(self, clock: Clock = now) -> None:
        self.clock = clock
        self.objects: dict[str, KubeObject] = {}
        self.bodies: dict[str, bytes] = {}
        self.results: dict[str, bytes] = {}
        self.specs: dict[str, JobSpec] = {}
        self.fail_create: ApiError | None = None
        self.status_patches: list[KubeObject] = []
        # Runs as a result read starts: a test deletes the job there, as expiry may.
        self.on_result_read: Callable[[str], None] = lambda _job_id: None
        self.is_ready = True

    async def create(self, spec: JobSpec, body: bytes) -> None:
        if self.fail_create is not None:
            raise self.fail_create
        if spec.job_id in self.objects:
            # As the apiserver's 409 AlreadyExists, which the Kubernetes store reports so.
            raise JobExists(JobView.from_object(self.objects[spec.job_id]))
        obj = build_asyncjob(spec)
        obj["metadata"]["uid"] = f"uid-{spec.job_id}"
        self.objects[spec.job_id] = obj
        self.bodies[spec.job_id] = body
        self.specs[spec.job_id] = spec

    async def find(self, job_id: str) -> JobView | None:
        obj = self.objects.get(job_id)
        return None if obj is None else JobView.from_object(obj)

    async def result(self, view: JobView) -> Finished | None:
        """As the Kubernetes store: the stored bytes checked against the reference, and
        the same judgment (and status patch) when they are missing or do not match."""
        self.on_result_read(view.job_id)
        obj = self.objects.get(view.job_id)
        if obj is None:
            return None
        ref = view.result_ref
        stored = self.results.get(view.job_id)
        if ref is None or (
            stored is not None
            and len(stored) == ref.size
            and hashlib.sha256(stored).hexdigest() == ref.sha256
        ):
            return Finished(view, stored)
        cause = Cause.MISSING if stored is None else Cause.CORRUPT
        judgment = integrity.judge(obj, view, cause, self.clock())
        if isinstance(judgment, integrity.Gone):
            return None
        if isinstance(judgment, integrity.Changed):
            return Finished(judgment.view)
        self.status_patches.append(judgment.patch)
        obj["status"] = integrity.merge_patched(obj.get("status") or {}, judgment.patch["status"])
        return Finished(judgment.view, unreadable=cause)

    async def stored_error(self, view: JobView) -> bytes | None:
        if view.phase is not Phase.FAILED or view.result_ref is None:
            return None
        return self.results.get(view.job_id)

    async def request_cancel(self, job_id: str) -> JobView | None:
        obj = self.objects.get(job_id)
        if obj is None:
            return None
        obj["metadata"].setdefault("annotations", {}).update(
            cancel.request_patch()["metadata"]["annotations"]
        )
        return JobView.from_object(obj)

    def ready(self) -> bool:
        return self.is_ready

    def newest_first(self, key_id: str | None, before: Position | None) -> list[JobView]:
        views = [JobView.from_object(obj) for obj in self.objects.values()]
        chosen = [
            view
            for view in views
            if (key_id is None or view.virtual_key_id == key_id)
            and (before is None or position(view) < before)
        ]
        return sorted(chosen, key=position, reverse=True)

    def usage(self, key_id: str | None = None) -> Usage:
        views = [JobView.from_object(obj) for obj in self.objects.values()]
        pending = [v for v in views if not v.phase.terminal]
        return Usage(
            jobs=len(views),
            stored_bytes=sum(v.stored_bytes for v in views),
            pending=len(pending),
            pending_of_key=sum(1 for v in pending if v.virtual_key_id == key_id),
        )

    def key_usage(self) -> KeyUsage:
        spent = KeyUsage()
        spent.replace([JobView.from_object(obj) for obj in self.objects.values()])
        return spent

    # --- helpers that play the operator's part -------------------------------------------

    def put_job(
        self,
        job_id: str,
        request_type: str = "chat_completion",
        *,
        virtual_key_id: str | None = None,
        submitted_at: str = "2026-02-19T08:10:17.831Z",
    ) -> None:
        spec: dict[str, Any] = {
            "requestType": request_type,
            "model": "local/echo",
            "submittedAt": submitted_at,
            "requestRef": payloads.describe(job_id, "request", b"{}", "application/json").to_dict(),
        }
        if virtual_key_id:
            spec["virtualKeyId"] = virtual_key_id
        self.objects[job_id] = {
            "metadata": {"name": job_id, "uid": f"uid-{job_id}"},
            "spec": spec,
        }

    def set_status(self, job_id: str, **status: Any) -> None:
        self.objects[job_id]["status"] = copy.deepcopy(status)

    def complete(self, job_id: str, result: bytes, *, completed: datetime, ttl: timedelta) -> None:
        ref = payloads.describe(job_id, "result", result, "application/json")
        self.results[job_id] = result
        self.set_status(
            job_id,
            phase="Completed",
            statusCode=200,
            completionTime=format_time(completed),
            expiresAt=format_time(completed + ttl),
            resultRef=ref.to_dict(),
        )

    def fail(
        self,
        job_id: str,
        error: dict[str, Any],
        *,
        completed: datetime,
        ttl: timedelta,
        status_code: int | None,
        stored_error: bytes | None = None,
    ) -> None:
        """`stored_error`: the whole provider error kept in the payload store, as the
        operator writes it, while `error` is what the status shows."""
        status: dict[str, Any] = {
            "phase": "Failed",
            "completionTime": format_time(completed),
            "expiresAt": format_time(completed + ttl),
            "error": error,
        }
        if status_code is not None:
            status["statusCode"] = status_code
        if stored_error is not None:
            ref = payloads.describe(job_id, "error", stored_error, "application/json", call=1)
            self.results[job_id] = stored_error
            status["resultRef"] = ref.to_dict()
        self.set_status(job_id, **status)
