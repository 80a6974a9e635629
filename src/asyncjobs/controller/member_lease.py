"""This operator process's member Lease (coordination.k8s.io/v1): it runs jobs only while
it holds it.

Every operator replica holds a Lease of its own, `<prefix>-<identity>`, labelled
`asyncjobs.dev/operator-member`; the replicas whose Leases are live share the shards
(members.py, core/shards.py). It is renewed the way client-go's leader election renews:

- the holder renews every retry period and gives up once no renewal has succeeded for
  the renew deadline, shorter than the lease duration, so it has stopped before any
  other replica may judge it gone (each judges that on its own monotonic clock, from
  the moment it last saw the record change: members.py);
- every write carries the resourceVersion it was decided on (optimistic concurrency);
- the holder is `<identity>/<token>`, fresh for every process, so the others can tell a
  restarted container from the process that claimed a job before it died;
- a clean shutdown deletes the Lease, so the others take its shards at once.

`decide` is the whole policy, pure and table-tested; `MemberLease` only reads and writes
the Lease and sleeps between rounds.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Protocol

from asyncjobs.controller.job_watch import Observer
from asyncjobs.core import resources
from asyncjobs.core.kube import KubeError, KubeObject

log = logging.getLogger(__name__)

LEASE_API_VERSION = "coordination.k8s.io/v1"
# On every member Lease, so one list finds the members.
MEMBER_LABEL = f"{resources.GROUP}/operator-member"

# Leaving is a courtesy (without it the others wait out the lease duration); it must
# not hold up a shutdown.
_RELEASE_TIMEOUT = 5.0


def leases_path(namespace: str, name: str | None = None) -> str:
    path = f"/apis/{LEASE_API_VERSION}/namespaces/{namespace}/leases"
    return path if name is None else f"{path}/{name}"


def micro_time(moment: datetime) -> str:
    """A Kubernetes MicroTime: RFC 3339 in UTC with microseconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseLost(Exception):
    """The member Lease could not be renewed in time, or names another holder: stop now."""


@dataclass(frozen=True)
class Timing:
    """How long a Lease lasts, how long its holder keeps trying to renew it, how often."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not self.lease_duration > self.renew_deadline > self.retry_period > 0:
            raise ValueError("lease duration > renew deadline > retry period > 0 is required")

    @classmethod
    def for_duration(cls, lease_duration: float) -> Timing:
        """client-go's defaults (15 s, 10 s, 2 s) scaled to one lease duration."""
        return cls(lease_duration, lease_duration * 2 / 3, lease_duration * 2 / 15)


@dataclass(frozen=True)
class LeaseRecord:
    """The spec of a Lease, as leader election reads and writes it."""

    holder: str  # "" while nobody holds it
    duration_seconds: int
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0

    @classmethod
    def from_lease(cls, lease: KubeObject) -> LeaseRecord:
        spec = lease.get("spec") or {}
        return cls(
            holder=spec.get("holderIdentity") or "",
            duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
        )

    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "leaseDurationSeconds": self.duration_seconds,
            "leaseTransitions": self.transitions,
        }
        if self.holder:
            spec["holderIdentity"] = self.holder
        if self.acquire_time:
            spec["acquireTime"] = self.acquire_time
        if self.renew_time:
            spec["renewTime"] = self.renew_time
        return spec


@dataclass(frozen=True)
class Sighting:
    """The Lease as this process last read it (None: there is none; version: its
    resourceVersion), and the moment, on this process's monotonic clock, at which it last
    saw it change."""

    record: LeaseRecord | None
    since: float
    version: str = ""


def observe(
    previous: Sighting | None, record: LeaseRecord | None, version: str, now: float
) -> Sighting:
    """A Lease read again unchanged keeps the time it was first seen: a holder that
    stopped renewing leaves it unchanged, and its lease runs out from that moment. Any
    write changes the resourceVersion, so a renewal counts even if the holder's clock
    wrote the same renewTime twice."""
    if previous is not None and (previous.record, previous.version) == (record, version):
        return previous
    return Sighting(record, now, version)


class Action(Enum):
    CREATE = "create"  # no Lease of this member exists: create it naming us
    ACQUIRE = "acquire"  # it names an earlier process of this member: take it over
    RENEW = "renew"  # it names us: write a fresh renewTime
    WAIT = "wait"  # nothing was read yet
    LOST = "lost"  # we held it, and could not renew in time or it no longer names us


def decide(
    seen: Sighting | None,
    now: float,
    holder: str,
    timing: Timing,
    renewed_at: float | None,
) -> Action:
    """What to do next with this member's own Lease. `renewed_at` is when (monotonic)
    our last successful write was sent while we hold it, None while we do not.

    The Lease is named after the member (its pod), which runs one process at a time: a
    different holder on it is an earlier process of the same pod (a restarted
    container), dead already, so it is taken over at once. Other replicas see the
    holder change and so know that earlier process is gone (members.py)."""
    holding = renewed_at is not None
    if renewed_at is not None and now - renewed_at >= timing.renew_deadline:
        return Action.LOST
    if seen is None:
        return Action.WAIT
    record = seen.record
    if record is not None and record.holder == holder:
        return Action.RENEW
    if holding:
        # Deleted (by a replica that judged it expired) or written by someone else:
        # others may already be running this member's jobs.
        return Action.LOST
    if record is None:
        return Action.CREATE
    return Action.ACQUIRE


def claim(
    record: LeaseRecord | None, holder: str, duration_seconds: int, now: datetime
) -> LeaseRecord:
    """The record that makes (or keeps) us the holder."""
    stamp = micro_time(now)
    if record is not None and record.holder == holder:
        return replace(
            record,
            duration_seconds=duration_seconds,
            acquire_time=record.acquire_time or stamp,
            renew_time=stamp,
        )
    transitions = 0 if record is None else record.transitions + 1
    return LeaseRecord(holder, duration_seconds, stamp, stamp, transitions)


class LeaseClient(Protocol):
    """The one verb of core/kube.py's KubeClient that the member Lease uses."""

    async def request(
        self, method: str, path: str, *, body: Any = None, timeout: float = 30
    ) -> KubeObject: ...


def member_lease_name(prefix: str, identity: str) -> str:
    """A Lease name (a DNS subdomain) for a member identity such as a pod name."""
    cleaned = re.sub(r"[^a-z0-9.-]+", "-", identity.lower()).strip("-.")
    return f"{prefix}-{cleaned}"[:253].rstrip("-.")


class MemberLease:
    """This process's membership: `join()` creates or takes over its Lease, `hold()`
    renews it until it is lost, `leave()` deletes it on a clean shutdown so the other
    replicas take its shards at their next look instead of after the lease duration."""

    def __init__(
        self,
        client: LeaseClient,
        namespace: str,
        name: str,
        holder: str,
        timing: Timing | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_change: Callable[[bool], None] = lambda _: None,
    ) -> None:
        self.namespace = namespace
        self.name = name
        self.holder = holder
        self.timing = timing or Timing()
        self._client = client
        self._clock = clock
        self._wall = wall
        self._sleep = sleep
        self._on_change = on_change
        self._path = leases_path(namespace, name)
        self._lease: KubeObject | None = None  # as last read or written; None: absent
        self._seen: Sighting | None = None
        self._renewed_at: float | None = None

    @property
    def holding(self) -> bool:
        return self._renewed_at is not None

    async def join(self) -> None:
        """Returns once this process holds its Lease (at once unless the apiserver
        fails)."""
        while True:
            await self.step()
            if self.holding:
                return
            await self._sleep(self.timing.retry_period)

    async def hold(self) -> None:
        """Renews the Lease every retry period; returns when it is lost."""
        while True:
            await self._sleep(self._pause())
            if await self.step() is Action.LOST:
                return

    async def leave(self) -> None:
        """Deletes the Lease (only the version we wrote). Call only after every job this
        process ran has stopped."""
        if not self.holding or self._lease is None:
            return
        self._set_holding(None)
        version = _version(self._lease)
        body = {"preconditions": {"resourceVersion": version}}
        try:
            await self._client.request("DELETE", self._path, body=body, timeout=_RELEASE_TIMEOUT)
        except KubeError as error:
            if error.status != 404:
                log.warning("could not delete the member lease %s: %s", self.name, error)
            return
        log.info("left: deleted the member lease %s", self.name)

    async def step(self) -> Action:
        """One round: what was done (CREATE, ACQUIRE, RENEW: written), WAIT (nothing
        changed) or LOST."""
        if self._decide() is Action.LOST:
            return self._lose()
        # While holding, the last version we know is our own write: renew it without
        # reading first (as client-go does); a conflict falls back to a fresh read.
        if self.holding and self._lease is not None and await self._write(Action.RENEW):
            return Action.RENEW
        read = await self._read()
        action = self._decide()
        if action is Action.LOST:
            return self._lose()
        if not read or action is Action.WAIT:
            return Action.WAIT
        return action if await self._write(action) else Action.WAIT

    def _decide(self) -> Action:
        return decide(self._seen, self._clock(), self.holder, self.timing, self._renewed_at)

    def _pause(self) -> float:
        """The retry period, or less when the renew deadline comes sooner."""
        if self._renewed_at is None:
            return self.timing.retry_period
        left = self._renewed_at + self.timing.renew_deadline - self._clock()
        return max(0.0, min(self.timing.retry_period, left))

    def _budget(self) -> float:
        """A request's timeout: a hung request must not carry us past the deadline."""
        if self._renewed_at is None:
            return self.timing.renew_deadline
        return max(0.001, self._renewed_at + self.timing.renew_deadline - self._clock())

    async def _read(self) -> bool:
        try:
            lease: KubeObject | None = await self._client.request(
                "GET", self._path, timeout=self._budget()
            )
        except KubeError as error:
            if error.status != 404:
                log.warning("cannot read the member lease %s: %s", self.name, error)
                return False
            lease = None
        self._lease = lease
        record = None if lease is None else LeaseRecord.from_lease(lease)
        self._seen = observe(self._seen, record, _version(lease), self._clock())
        return True

    async def _write(self, action: Action) -> bool:
        previous = self._seen.record if self._seen else None
        duration = round(self.timing.lease_duration)
        record = claim(previous, self.holder, duration, self._wall())
        started = self._clock()
        try:
            if action is Action.CREATE:
                written = await self._client.request(
                    "POST",
                    leases_path(self.namespace),
                    body=self._new_lease(record),
                    timeout=self._budget(),
                )
            else:
                written = await self._client.request(
                    "PUT", self._path, body=self._replacing(record), timeout=self._budget()
                )
        except KubeError as error:
            # A conflict with a stale version is routine; anything else is not.
            level = logging.WARNING if self.holding or error.status != 409 else logging.DEBUG
            log.log(level, "could not %s the member lease %s: %s", action.value, self.name, error)
            return False
        self._lease = written
        self._seen = Sighting(LeaseRecord.from_lease(written), self._clock(), _version(written))
        if not self.holding:
            log.info(
                "joined as %s (member lease %s, previous holder: %s)",
                self.holder,
                self.name,
                (previous.holder if previous else "") or "none",
            )
        self._set_holding(started)
        return True

    def _lose(self) -> Action:
        record = self._seen.record if self._seen else None
        assert self._renewed_at is not None
        silent = self._clock() - self._renewed_at
        if silent >= self.timing.renew_deadline:
            why = f"no renewal succeeded for {silent:.1f}s"
        elif record is None:
            why = "it was deleted"
        else:
            why = f"it now names {record.holder or 'nobody'}"
        log.error("lost the member lease %s: %s", self.name, why)
        self._set_holding(None)
        return Action.LOST

    def _set_holding(self, renewed_at: float | None) -> None:
        changed = (renewed_at is None) != (self._renewed_at is None)
        self._renewed_at = renewed_at
        if changed:
            self._on_change(renewed_at is not None)

    def _new_lease(self, record: LeaseRecord) -> KubeObject:
        return {
            "apiVersion": LEASE_API_VERSION,
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {
                    resources.LABEL_MANAGED_BY: resources.MANAGED_BY,
                    MEMBER_LABEL: "true",
                },
            },
            "spec": record.spec(),
        }

    def _replacing(self, record: LeaseRecord) -> KubeObject:
        """A PUT body: the object we know (its resourceVersion makes the write
        conditional) with a new spec, and the member label in case it was removed."""
        assert self._lease is not None
        metadata = {k: v for k, v in self._lease["metadata"].items() if k != "managedFields"}
        metadata["labels"] = {**(metadata.get("labels") or {}), MEMBER_LABEL: "true"}
        return {
            "apiVersion": LEASE_API_VERSION,
            "kind": "Lease",
            "metadata": metadata,
            "spec": record.spec(),
        }


def _version(lease: KubeObject | None) -> str:
    return "" if lease is None else str(lease["metadata"].get("resourceVersion", ""))


class MemberOnly:
    """Hands watch events on only while this process holds its Lease (and until
    `close()`), so no job starts between losing the Lease and stopping."""

    def __init__(self, observer: Observer, lease: MemberLease) -> None:
        self._observer = observer
        self._lease = lease
        self._closed = False

    def close(self) -> None:
        self._closed = True

    def observe(self, event_type: str | None, obj: dict[str, Any]) -> None:
        if self._lease.holding and not self._closed:
            self._observer.observe(event_type, obj)
