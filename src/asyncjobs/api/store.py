"""The job store: the one boundary between the API's views and where jobs live.

Views talk to the `JobStore` protocol only. The Kubernetes-backed store writes AsyncJobs
and request bodies (to the payload store) and answers reads from a watch-fed cache;
unit tests pass a small in-memory store with the same protocol, so the views are tested
without a cluster. An operation the store cannot complete raises ApiError with a 5xx
and leaves nothing behind.

A completed job whose result cannot be read back (its Secret missing, or its bytes not
matching the reference) is failed here, as `integrity.judge` decides: the status write,
an Event and a log line, then the failed job is what every later poll answers.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from asyncjobs.api import integrity
from asyncjobs.api.clock import Clock
from asyncjobs.api.errors import ApiError
from asyncjobs.api.integrity import Cause
from asyncjobs.api.job_order import NewestFirst, Position
from asyncjobs.api.key_usage import KeyUsage
from asyncjobs.api.quota import Usage
from asyncjobs.core import cancel, events, resources
from asyncjobs.core.jobs import JobSpec, JobView, Phase, build_asyncjob
from asyncjobs.core.kube import KubeClient, KubeError, KubeObject
from asyncjobs.core.payloads import (
    PayloadCorrupt,
    PayloadMissing,
    PayloadStore,
    PayloadStoreError,
)
from asyncjobs.core.secret_payloads import SecretPayloads

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Finished:
    """A terminal job as a poll answers it: the job as it now stands and, while it is
    completed, its stored result. `unreadable` is set when this very read found the
    result unreadable and failed the job (the poll counts it)."""

    view: JobView
    result: bytes | None = None
    unreadable: Cause | None = None


class JobExists(Exception):
    """A job of the name being created exists already (an idempotent submit's name,
    derived from its key, idempotency.py): `view` is that job as the apiserver has it."""

    def __init__(self, view: JobView) -> None:
        super().__init__(view.job_id)
        self.view = view


class JobStore(Protocol):
    async def create(self, spec: JobSpec, body: bytes) -> None:
        """Records a new job and its request body, all or nothing; JobExists when a job
        of that name exists."""

    def newest_first(self, key_id: str | None, before: Position | None) -> Iterable[JobView]:
        """Jobs as last seen, newest first (job_order.py), strictly before the position
        `before`: every job (key_id None) or those of one virtual key."""

    async def find(self, job_id: str) -> JobView | None:
        """The job as last seen, or None when it does not exist."""

    async def result(self, view: JobView) -> Finished | None:
        """A completed job with its stored result, or failed when that result is missing
        or corrupt; None when the job itself is gone (deleted or expired)."""

    async def stored_error(self, view: JobView) -> bytes | None:
        """The whole provider error of a failed job whose status keeps only its summary
        (core/error_summary.py); None when it was not stored or cannot be read back."""

    async def request_cancel(self, job_id: str) -> JobView | None:
        """Asks the operator to cancel the job (core/cancel.py); the job as it is then,
        None when it is gone."""

    def ready(self) -> bool:
        """Whether reads are served from a synced view of the jobs."""

    def usage(self, key_id: str | None = None) -> Usage:
        """How many jobs exist, the bytes of their stored bodies and how many are not
        yet terminal (all, and those of `key_id`), as last seen."""

    def key_usage(self) -> KeyUsage:
        """What each virtual key's finished jobs spent (key_usage.py), as last seen."""


class JobCache:
    """JobViews by id, fed by the AsyncJob reflector; polls read it without a round trip.
    It also keeps what the submit quota reads: the total of their stored bytes and the
    count of jobs not yet terminal, per virtual key, and what each key's finished jobs
    spent (the token budgets read it)."""

    def __init__(self) -> None:
        self._jobs: dict[str, JobView] = {}
        self._bytes = 0
        # Jobs not yet terminal, and of those the ones of each virtual key ("" for none).
        self._pending: Counter[str] = Counter()
        self._order = NewestFirst()
        self.spent = KeyUsage()

    def get(self, job_id: str) -> JobView | None:
        return self._jobs.get(job_id)

    def views(self) -> Iterable[JobView]:
        return self._jobs.values()

    def newest_first(self, key_id: str | None, before: Position | None) -> Iterator[JobView]:
        return (self._jobs[job_id] for job_id in self._order.ids(key_id, before))

    @staticmethod
    def slim(obj: KubeObject) -> JobView | None:
        """What the cache keeps of a listed AsyncJob (None for a malformed one): the
        reflector reduces each list page with it, so raw objects never pile up."""
        return _view_or_none(obj)

    def replace(self, views: Iterable[JobView | None]) -> None:
        """The whole cache from one completed list, already reduced by `slim`."""
        self._jobs = {view.job_id: view for view in views if view is not None}
        self._order.replace(self._jobs.values())
        self._bytes = sum(view.stored_bytes for view in self._jobs.values())
        self._pending = Counter(
            view.virtual_key_id or "" for view in self._jobs.values() if not view.phase.terminal
        )
        self.spent.replace(list(self._jobs.values()))

    def apply(self, kind: str, obj: KubeObject) -> None:
        if kind == "DELETED":
            self._remove(obj.get("metadata", {}).get("name", ""))
            return
        view = _view_or_none(obj)
        if view is not None:
            self._set(view)

    def put(self, view: JobView) -> None:
        # Our own status write, ahead of its watch event (which replaces it when it comes).
        self._set(view)

    def add_if_absent(self, view: JobView) -> None:
        # Our own create, ahead of its watch event; never overwrite a newer watched state.
        if view.job_id not in self._jobs:
            self._set(view)

    def usage(self, key_id: str | None = None) -> Usage:
        return Usage(
            jobs=len(self._jobs),
            stored_bytes=self._bytes,
            pending=self._pending.total(),
            pending_of_key=self._pending[key_id or ""],
        )

    def pending_by_key(self) -> dict[str, int]:
        """Jobs not yet terminal per virtual key id (jobs without a key left out)."""
        return {key: count for key, count in self._pending.items() if key}

    def _set(self, view: JobView) -> None:
        self._remove(view.job_id)
        self._jobs[view.job_id] = view
        self._order.add(view)
        self._bytes += view.stored_bytes
        if not view.phase.terminal:
            self._pending[view.virtual_key_id or ""] += 1
        self.spent.seen(view)

    def _remove(self, job_id: str) -> None:
        old = self._jobs.pop(job_id, None)
        if old is not None:
            self._order.remove(old)
            self.spent.forget(old)
            self._bytes -= old.stored_bytes
            if not old.phase.terminal:
                key = old.virtual_key_id or ""
                self._pending[key] -= 1
                if not self._pending[key]:
                    del self._pending[key]

    def __len__(self) -> int:
        return len(self._jobs)


def _view_or_none(obj: KubeObject) -> JobView | None:
    try:
        return JobView.from_object(obj)
    except (KeyError, ValueError, TypeError):
        # An object another writer mangled must not stop the cache; it polls as unknown.
        log.warning("ignoring malformed AsyncJob %s", obj.get("metadata", {}).get("name"))
        return None


def _unavailable(action: str, exc: KubeError | PayloadStoreError) -> ApiError:
    """The 5xx for an operation the apiserver or the payload store did not complete
    (nothing is left behind): 503 when trying again later may succeed."""
    if isinstance(exc, PayloadStoreError):
        transient = exc.transient
    else:
        transient = exc.status in (0, 429, 503, 504) or _quota_not_synced(exc)
    if transient:
        return ApiError(503, f"{action}: the job store is unavailable, retry later")
    return ApiError(500, f"{action}: the job store refused the request")


def _quota_not_synced(exc: KubeError) -> bool:
    """The apiserver's quota admission refuses every create (403) in a namespace whose
    ResourceQuota the quota controller has not computed yet, a few seconds after the
    quota is made (an install): worth trying again, unlike a quota that is exceeded."""
    return exc.status == 403 and "status unknown for quota" in exc.message


# Who posts the Events of this process.
COMPONENT = "asyncjobs-api"

# Judge, write, conflict, judge again: a job that keeps changing under a poll is a 503.
_JUDGE_ROUNDS = 3


class UnknownIds:
    """Ids the apiserver said do not exist, remembered for a moment.

    A poll of an id that is in no cache costs a GET (read-your-writes across replicas),
    so a client polling made-up ids would cost the apiserver one GET each. For `ttl`
    after a 404 the same id answers 404 without a GET. A job can only be missed in that
    window if it was polled before it existed, which a client given its id never does;
    and once the watch delivers the job, the job cache answers before this is asked.
    At most `limit` ids are kept, the oldest dropped first."""

    def __init__(self, ttl: timedelta = timedelta(seconds=2), limit: int = 10_000) -> None:
        self.ttl = ttl
        self.limit = limit
        self._until: OrderedDict[str, datetime] = OrderedDict()

    def known_missing(self, job_id: str, now: datetime) -> bool:
        until = self._until.get(job_id)
        if until is None:
            return False
        if now < until:
            return True
        del self._until[job_id]
        return False

    def missing(self, job_id: str, now: datetime) -> None:
        self._until[job_id] = now + self.ttl
        self._until.move_to_end(job_id)
        while len(self._until) > self.limit:
            self._until.popitem(last=False)


class KubeJobStore:
    """Jobs as AsyncJobs in one namespace, bodies in the payload store."""

    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        cache: JobCache,
        clock: Clock,
        payloads: PayloadStore | None = None,
    ) -> None:
        self.client = client
        # Replaced by the one the flags choose once it is open (kube_backend.py).
        self.payloads: PayloadStore = payloads or SecretPayloads(client, namespace)
        self.namespace = namespace
        self.cache = cache
        self.clock = clock
        self.unknown = UnknownIds()
        # True while the cache follows the watch; False at start and during a relist
        # (the reflector's `in_sync`). Reads still answer meanwhile, misses by a GET.
        self.synced = False

    def ready(self) -> bool:
        return self.synced

    def usage(self, key_id: str | None = None) -> Usage:
        return self.cache.usage(key_id)

    def key_usage(self) -> KeyUsage:
        return self.cache.spent

    def newest_first(self, key_id: str | None, before: Position | None) -> Iterator[JobView]:
        return self.cache.newest_first(key_id, before)

    async def create(self, spec: JobSpec, body: bytes) -> None:
        """Stores the request and creates the AsyncJob, in the order the payload store
        needs: an object store first (so the job never names missing bytes), Secrets
        after (they are owned by the created job). Whatever fails, nothing is left.

        An idempotent submit's job name is derived from its key, so the name may be
        taken: that is JobExists, and the only body removed on any failure is this
        attempt's own request (its name is unique to the attempt, submit_and_poll.py),
        never another attempt's."""
        before = self.payloads.stores_before_job
        if before:
            await self._store_request(spec, body, {"metadata": {"name": spec.job_id}})
        path = resources.asyncjobs_path(self.namespace)
        try:
            created = await self.client.create(path, build_asyncjob(spec))
        except KubeError as exc:
            if before:
                await self._delete_request_quietly(spec)
            if exc.status == 409:
                existing = await self._get(spec.job_id)
                view = _view_or_none(existing) if existing is not None else None
                if view is None:
                    raise ApiError(503, "could not create the job: retry later") from exc
                raise JobExists(view) from exc
            if exc.status == 0:
                if spec.idempotent:
                    # A job of this name may be another attempt's: it is never deleted
                    # here. A late create of this one leaves a job that either has its
                    # request (s3) or fails without it (secrets); a retry replays it.
                    raise _unavailable("could not create the job", exc) from exc
                # A timeout may hide a create that did happen; remove it so no job runs
                # without its request.
                await self._delete_quietly(spec.job_id)
            raise _unavailable("could not create the job", exc) from exc
        if not before:
            try:
                await self._store_request(spec, body, created)
            except ApiError:
                # Deleting the job lets garbage collection remove any chunk already written.
                await self._delete_quietly(spec.job_id)
                raise
        self.cache.add_if_absent(JobView.from_object(created))

    async def _store_request(self, spec: JobSpec, body: bytes, job: KubeObject) -> None:
        ref = spec.request_ref
        try:
            await self.payloads.put(job, "request", body, ref.content_type, ref=ref)
        except PayloadStoreError as exc:
            raise _unavailable("could not store the request", exc) from exc
        except PayloadCorrupt as exc:
            raise ApiError(500, "could not store the request: its name is taken") from exc

    async def _delete_request_quietly(self, spec: JobSpec) -> None:
        try:
            await self.payloads.delete_body(spec.request_ref)
        except PayloadStoreError as exc:
            log.error("could not delete the request of half-created job %s: %s", spec.job_id, exc)

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
        now = self.clock()
        if self.unknown.known_missing(job_id, now):
            return None
        obj = await self._get(job_id)
        if obj is None:
            self.unknown.missing(job_id, now)
            return None
        return _view_or_none(obj)

    async def result(self, view: JobView) -> Finished | None:
        for _ in range(_JUDGE_ROUNDS):
            if view.phase is not Phase.COMPLETED or view.result_ref is None:
                return Finished(view)
            try:
                body = await self.payloads.get(view.result_ref)
            except PayloadStoreError as exc:
                raise _unavailable("could not read the job result", exc) from exc
            except PayloadMissing:
                cause = Cause.MISSING
            except PayloadCorrupt:
                cause = Cause.CORRUPT
            else:
                return Finished(view, body)
            # The cached view may be stale: judge the job as the apiserver has it now.
            obj = await self._get(view.job_id)
            if obj is None:
                return None
            judgment = integrity.judge(obj, view, cause, self.clock())
            if isinstance(judgment, integrity.Gone):
                return None
            if isinstance(judgment, integrity.Changed):
                view = judgment.view
                continue
            try:
                return await self._fail(obj, judgment, cause)
            except _Conflict:
                continue  # changed since it was judged: read it again and judge afresh
        raise ApiError(503, "the job changed while its result was read, retry later")

    async def stored_error(self, view: JobView) -> bytes | None:
        if view.phase is not Phase.FAILED or view.result_ref is None:
            return None
        try:
            return await self.payloads.get(view.result_ref)
        except PayloadStoreError as exc:
            raise _unavailable("could not read the job error", exc) from exc
        except (PayloadMissing, PayloadCorrupt):
            # The summary in the status still answers: status, type and code.
            return None

    async def request_cancel(self, job_id: str) -> JobView | None:
        path = resources.asyncjobs_path(self.namespace, job_id)
        try:
            updated = await self.client.merge_patch(path, cancel.request_patch())
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise _unavailable("could not cancel the job", exc) from exc
        return _view_or_none(updated)

    async def _get(self, job_id: str) -> KubeObject | None:
        try:
            return await self.client.get(resources.asyncjobs_path(self.namespace, job_id))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise _unavailable("could not read the job", exc) from exc

    async def _fail(
        self, obj: KubeObject, judgment: integrity.Fail, cause: Cause
    ) -> Finished | None:
        """Records the failure on the AsyncJob, best effort: a write refused (RBAC, an
        apiserver error) still fails the job in this replica's cache, and the poll
        answers it all the same. Raises _Conflict when the job changed since judged."""
        job_id = judgment.view.job_id
        path = resources.asyncjobs_path(self.namespace, job_id, status=True)
        failed = judgment.view
        try:
            updated = await self.client.merge_patch(path, judgment.patch)
        except KubeError as exc:
            if exc.status == 409:
                raise _Conflict(job_id) from exc
            if exc.status == 404:
                return None
            recorded = f"not recorded ({exc.status})"
        else:
            failed = _view_or_none(updated) or failed
            recorded = "recorded"
        self.cache.put(failed)
        event = events.warning_event(
            obj, self.namespace, integrity.REASON, judgment.message, self.clock(), COMPONENT
        )
        try:
            await self.client.create(events.events_path(self.namespace), event)
        except KubeError as exc:
            log.warning("could not post an event for job %s (%s)", job_id, exc.status)
        log.warning("job %s failed: its stored result is %s; %s", job_id, cause.value, recorded)
        return Finished(failed, unreadable=cause)


class _Conflict(Exception):
    """The AsyncJob changed since it was judged (its resourceVersion precondition failed)."""
