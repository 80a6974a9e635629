"""Leader election on a coordination.k8s.io/v1 Lease: one operator runs jobs at a time.

Two operators resuming the same Processing job would call the provider twice, and a
Deployment rolled by hand, or scaled past one replica, starts a second one. So a process
runs jobs only while it holds the Lease, the way client-go's leaderelection does it:

- expiry is judged by this process's monotonic clock, from the moment it last saw the
  record change, never from the holder's renewTime (another machine's clock);
- the holder renews every retry period and gives up once no renewal has succeeded for
  the renew deadline, shorter than the lease duration, so it has stopped before any
  other process may take over;
- every write carries the resourceVersion it was decided on (optimistic concurrency), so
  two candidates can never both win one round;
- a clean shutdown releases the Lease, so a rolling update hands over at once; a process
  that finds its own identity on the Lease (a restarted container of the same pod) takes
  it without waiting.

`decide` is the whole policy, pure and table-tested; `Leadership` only reads and writes
the Lease and sleeps between rounds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Protocol

from asyncjobs.controller.kopf_setup import Observer
from asyncjobs.core import resources
from asyncjobs.core.kube import KubeError, KubeObject

log = logging.getLogger(__name__)

LEASE_API_VERSION = "coordination.k8s.io/v1"

# A release is a courtesy (without it a standby waits out the lease duration); it must
# not hold up a shutdown.
_RELEASE_TIMEOUT = 5.0


def leases_path(namespace: str, name: str | None = None) -> str:
    path = f"/apis/{LEASE_API_VERSION}/namespaces/{namespace}/leases"
    return path if name is None else f"{path}/{name}"


def micro_time(moment: datetime) -> str:
    """A Kubernetes MicroTime: RFC 3339 in UTC with microseconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeadershipLost(Exception):
    """The Lease could not be renewed in time, or names another holder: stop now."""


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
    CREATE = "create"  # no Lease exists: create it naming us
    ACQUIRE = "acquire"  # free, or its holder let it run out: take it over
    RENEW = "renew"  # it names us: write a fresh renewTime
    WAIT = "wait"  # another holder's lease is still running (or nothing was read yet)
    LOST = "lost"  # we held it, and could not renew in time or it no longer names us


def decide(
    seen: Sighting | None,
    now: float,
    identity: str,
    timing: Timing,
    renewed_at: float | None,
) -> Action:
    """What to do next. `renewed_at` is when (monotonic) our last successful write was
    sent while we lead, None while we do not."""
    leading = renewed_at is not None
    if renewed_at is not None and now - renewed_at >= timing.renew_deadline:
        return Action.LOST
    if seen is None:
        return Action.WAIT
    record = seen.record
    if record is not None and record.holder == identity:
        return Action.RENEW
    if leading:
        # Deleted, released or taken by someone else behind our back: whoever holds it
        # next may already be running jobs.
        return Action.LOST
    if record is None:
        return Action.CREATE
    duration = record.duration_seconds or timing.lease_duration
    if record.holder and now < seen.since + duration:
        return Action.WAIT
    return Action.ACQUIRE


def claim(
    record: LeaseRecord | None, identity: str, duration_seconds: int, now: datetime
) -> LeaseRecord:
    """The record that makes (or keeps) us the holder."""
    stamp = micro_time(now)
    if record is not None and record.holder == identity:
        return replace(
            record,
            duration_seconds=duration_seconds,
            acquire_time=record.acquire_time or stamp,
            renew_time=stamp,
        )
    transitions = 0 if record is None else record.transitions + 1
    return LeaseRecord(identity, duration_seconds, stamp, stamp, transitions)


def released(record: LeaseRecord, now: datetime) -> LeaseRecord:
    """No holder and a one-second duration, so any candidate (client-go's too) takes it
    over at its next try instead of waiting for the lease to run out."""
    return replace(record, holder="", duration_seconds=1, renew_time=micro_time(now))


class LeaseClient(Protocol):
    """The one verb of core/kube.py's KubeClient that leader election uses."""

    async def request(
        self, method: str, path: str, *, body: Any = None, timeout: float = 30
    ) -> KubeObject: ...


class Leadership:
    """Holds the operator's Lease for this process: `acquire()` waits until it does,
    `hold()` renews until it is lost, `release()` hands it over on a clean shutdown."""

    def __init__(
        self,
        client: LeaseClient,
        namespace: str,
        name: str,
        identity: str,
        timing: Timing | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_change: Callable[[bool], None] = lambda _: None,
    ) -> None:
        self.namespace = namespace
        self.name = name
        self.identity = identity
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
        self._waiting_for: str | None = None

    @property
    def leading(self) -> bool:
        return self._renewed_at is not None

    @property
    def holder(self) -> str:
        record = self._seen.record if self._seen else None
        return record.holder if record else ""

    async def acquire(self) -> None:
        """Returns once this process holds the Lease."""
        while True:
            await self.step()
            if self.leading:
                return
            if self.holder and self.holder != self._waiting_for:
                self._waiting_for = self.holder
                log.info("waiting for the operator lease held by %s", self.holder)
            await self._sleep(self.timing.retry_period)

    async def hold(self) -> None:
        """Renews the Lease every retry period; returns when it is lost."""
        while True:
            await self._sleep(self._pause())
            if await self.step() is Action.LOST:
                return

    async def release(self) -> None:
        """Clears the holder so a standby takes over at once. Call only after every job
        this process ran has stopped."""
        if not self.leading or self._seen is None or self._seen.record is None:
            return
        self._set_leading(None)
        for _ in range(2):
            if self._lease is None or self.holder != self.identity:
                return
            record = released(LeaseRecord.from_lease(self._lease), self._wall())
            try:
                await self._client.request(
                    "PUT", self._path, body=self._replacing(record), timeout=_RELEASE_TIMEOUT
                )
            except KubeError as error:
                if error.status != 409 or not await self._read():
                    log.warning("could not release the operator lease %s: %s", self.name, error)
                    return
                continue  # a renewal raced the release; try again on the fresh version
            log.info("released the operator lease %s", self.name)
            return

    async def step(self) -> Action:
        """One round: what was done (CREATE, ACQUIRE, RENEW: written), WAIT (nothing
        changed) or LOST."""
        if self._decide() is Action.LOST:
            return self._lose()
        # While leading, the last version we know is our own write: renew it without
        # reading first (as client-go does); a conflict falls back to a fresh read.
        if self.leading and self._lease is not None and await self._write(Action.RENEW):
            return Action.RENEW
        read = await self._read()
        action = self._decide()
        if action is Action.LOST:
            return self._lose()
        if not read or action is Action.WAIT:
            return Action.WAIT
        return action if await self._write(action) else Action.WAIT

    def _decide(self) -> Action:
        return decide(self._seen, self._clock(), self.identity, self.timing, self._renewed_at)

    def _pause(self) -> float:
        """The retry period, or less when the renew deadline comes sooner."""
        if self._renewed_at is None:
            return self.timing.retry_period
        left = self._renewed_at + self.timing.renew_deadline - self._clock()
        return max(0.0, min(self.timing.retry_period, left))

    def _budget(self) -> float:
        """A request's timeout: a hung request must not carry a leader past its deadline."""
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
                log.warning("cannot read the operator lease %s: %s", self.name, error)
                return False
            lease = None
        self._lease = lease
        record = None if lease is None else LeaseRecord.from_lease(lease)
        self._seen = observe(self._seen, record, _version(lease), self._clock())
        return True

    async def _write(self, action: Action) -> bool:
        previous = self._seen.record if self._seen else None
        duration = round(self.timing.lease_duration)
        record = claim(previous, self.identity, duration, self._wall())
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
            # Losing a race to another candidate (409) is routine; anything else is not.
            level = logging.WARNING if self.leading or error.status != 409 else logging.DEBUG
            log.log(level, "could not %s the operator lease %s: %s", action.value, self.name, error)
            return False
        self._lease = written
        self._seen = Sighting(LeaseRecord.from_lease(written), self._clock(), _version(written))
        if not self.leading:
            log.info(
                "acquired the operator lease %s as %s (previous holder: %s)",
                self.name,
                self.identity,
                (previous.holder if previous else "") or "none",
            )
        self._set_leading(started)
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
        log.error("lost the operator lease %s: %s", self.name, why)
        self._set_leading(None)
        return Action.LOST

    def _set_leading(self, renewed_at: float | None) -> None:
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
                "labels": {resources.LABEL_MANAGED_BY: resources.MANAGED_BY},
            },
            "spec": record.spec(),
        }

    def _replacing(self, record: LeaseRecord) -> KubeObject:
        """A PUT body: the object we know (its resourceVersion makes the write
        conditional) with a new spec."""
        assert self._lease is not None
        metadata = {k: v for k, v in self._lease["metadata"].items() if k != "managedFields"}
        return {
            "apiVersion": LEASE_API_VERSION,
            "kind": "Lease",
            "metadata": metadata,
            "spec": record.spec(),
        }


def _version(lease: KubeObject | None) -> str:
    return "" if lease is None else str(lease["metadata"].get("resourceVersion", ""))


class LeaderOnly:
    """Hands watch events on only while this process leads (and until `close()`), so no
    job starts between losing the Lease and stopping."""

    def __init__(self, observer: Observer, leadership: Leadership) -> None:
        self._observer = observer
        self._leadership = leadership
        self._closed = False

    def close(self) -> None:
        self._closed = True

    def observe(self, event_type: str | None, obj: dict[str, Any]) -> None:
        if self._leadership.leading and not self._closed:
            self._observer.observe(event_type, obj)
