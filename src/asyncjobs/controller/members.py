"""Who else runs jobs: the live member Leases, and which shards and jobs are this one's.

Every retry period, and at the moment a lease runs out, a replica lists the member
Leases (one small LIST by label) and judges each much as client-go judges a leader's
Lease: it is live while its holder is set and the lease duration has not passed since
the record changed, by *this* process's monotonic clock (another machine's renewTime is
never trusted). The change is dated by the previous list, which did not show it, rather
than by the list that did (`changed_no_earlier_than`), so a killed member's shards move
up to a list period sooner. A replica seen for the first time counts as live for a
whole lease duration, and a holder that stops renewing is judged gone only after it has
stopped itself (it gives up at the renew deadline, member_lease.py). A deleted Lease (a
clean stop) is gone at once. Expiry is judged as of the last list that succeeded: a
replica that cannot read the Leases (an overloaded apiserver) must not conclude that the
others are gone.

`live_members`, `stale_leases` and `Ownership` are pure and table-tested; `Members`
reads the Leases, keeps the sightings and says when the set of live members changed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from asyncjobs.controller.member_lease import (
    MEMBER_LABEL,
    LeaseRecord,
    Sighting,
    Timing,
    leases_path,
    observe,
)
from asyncjobs.core import shards
from asyncjobs.core.kube import KubeError, KubeObject

log = logging.getLogger(__name__)

# A member Lease unchanged for this many lease durations belongs to a process that died
# without leaving (SIGKILL, a lost node): any replica may delete it, so Leases of
# long-gone pods do not pile up.
STALE_AFTER_DURATIONS = 4
# A list meant to judge an expiry is sent this long after it, so that it is not early.
_AFTER_EXPIRY = 0.01


def live_members(
    sightings: Mapping[str, Sighting], now: float, default_duration: float
) -> dict[str, str]:
    """Lease name -> holder of every member whose lease has not run out."""
    live: dict[str, str] = {}
    for name, seen in sightings.items():
        record = seen.record
        if record is None or not record.holder:
            continue
        duration = record.duration_seconds or default_duration
        if now < seen.since + duration:
            live[name] = record.holder
    return live


def changed_no_earlier_than(previous_list_sent: float, answered_at: float, timing: Timing) -> float:
    """The moment from which a Lease change first seen in a list answered at
    `answered_at` counts: its lease runs out `lease_duration` after it.

    The change was not in the previous list, so the holder's write landed after that
    list was sent; the holder itself gives up `renew_deadline` after it *sent* that
    write, which was before this answer. Counting from the previous list (rather than
    from this answer, as client-go does) takes over up to a list period sooner, and is
    safe while the holder has given up before the lease runs out: answered_at +
    renew_deadline <= since + lease_duration, kept with a fifth of that gap to spare (so
    a slow list answer moves `since` later, never earlier)."""
    gap = timing.lease_duration - timing.renew_deadline
    return max(previous_list_sent, answered_at - gap * 4 / 5)


def seconds_to_next_expiry(
    sightings: Mapping[str, Sighting], now: float, default_duration: float
) -> float | None:
    """How long until the first live member's lease runs out (None: none will)."""
    ends = [
        seen.since + (seen.record.duration_seconds or default_duration)
        for seen in sightings.values()
        if seen.record is not None and seen.record.holder
    ]
    upcoming = [end - now for end in ends if end > now]
    return min(upcoming) if upcoming else None


def stale_leases(
    sightings: Mapping[str, Sighting], now: float, default_duration: float, own: str
) -> list[tuple[str, str]]:
    """(name, resourceVersion) of other members' Leases unchanged for long enough to
    delete them."""
    stale = []
    for name, seen in sightings.items():
        if name == own or seen.record is None:
            continue
        duration = seen.record.duration_seconds or default_duration
        if now >= seen.since + STALE_AFTER_DURATIONS * duration:
            stale.append((name, seen.version))
    return sorted(stale)


@dataclass(frozen=True)
class Ownership:
    """This replica's share, for one set of live members (Lease name -> holder; this
    replica's own name is always among them)."""

    me: str  # this replica's Lease name: its name in the shard hashing
    holder: str  # this process's holder identity, written into the jobs it claims
    members: Mapping[str, str]
    shards: frozenset[int] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shards", shards.owned_shards(self.me, self.members))

    @classmethod
    def alone(cls) -> Ownership:
        """Everything is ours (a single operator, or a test without members)."""
        return cls("", "", {"": ""})

    def owns(self, shard: int) -> bool:
        return shard in self.shards

    def may_resume(self, claimer: str) -> bool:
        """A Processing job that no task of this process runs may be resumed unless the
        process that made its latest attempt is another live member, which may be in
        the middle of that call now. No claimer recorded (a job of an older release):
        the shard's owner resumes it, as a single operator did."""
        if not claimer or claimer == self.holder:
            return True
        return claimer not in self.members.values()


class LeaseLister(Protocol):
    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        timeout: float = 30,
    ) -> KubeObject: ...


class Members:
    """Follows the member Leases of the namespace; `changed` is set whenever the set of
    live members (names and holders) differs from what `snapshot()` last returned."""

    def __init__(
        self,
        client: LeaseLister,
        namespace: str,
        me: str,
        holder: str,
        timing: Timing,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.namespace = namespace
        self.me = me
        self.holder = holder
        self.timing = timing
        self.changed = asyncio.Event()
        self._client = client
        self._clock = clock
        self._sightings: dict[str, Sighting] = {}
        self._listed_at = 0.0  # when the last list that succeeded was sent
        self._given: dict[str, str] | None = None

    def live(self) -> dict[str, str]:
        """The live members; this process always counts (it runs only while it holds
        its Lease, whatever the last list said)."""
        live = live_members(self._sightings, self._listed_at, self.timing.lease_duration)
        live[self.me] = self.holder
        return live

    def snapshot(self) -> Ownership:
        """The current share; clears `changed` until the live members differ again."""
        live = self.live()
        self._given = live
        self.changed.clear()
        return Ownership(self.me, self.holder, live)

    async def refresh(self) -> bool:
        """Lists the member Leases once; False when the list failed."""
        sent = self._clock()
        try:
            listed = await self._client.request(
                "GET",
                leases_path(self.namespace),
                params={"labelSelector": MEMBER_LABEL},
                timeout=self.timing.retry_period * 2,
            )
        except KubeError as error:
            log.warning("cannot list the member leases: %s", error)
            return False
        now = self._clock()
        since = (
            changed_no_earlier_than(self._listed_at, now, self.timing) if self._listed_at else now
        )
        sightings: dict[str, Sighting] = {}
        for lease in listed.get("items", []):
            name = lease["metadata"]["name"]
            version = str(lease["metadata"].get("resourceVersion", ""))
            record = LeaseRecord.from_lease(lease)
            previous = self._sightings.get(name)
            # A Lease seen for the first time counts from now: it may have been renewed
            # just before this list.
            sightings[name] = observe(previous, record, version, since if previous else now)
        self._sightings = sightings
        self._listed_at = sent
        self._check()
        return True

    def _check(self) -> None:
        live = self.live()
        if self._given is not None and live != self._given:
            log.info("members now %s", ", ".join(sorted(live)))
            self.changed.set()

    def _pause(self) -> float:
        """The retry period, or less when a member's lease runs out sooner: the list
        sent at that moment is the one that judges it gone, so its shards move then."""
        left = seconds_to_next_expiry(self._sightings, self._clock(), self.timing.lease_duration)
        if left is None:
            return self.timing.retry_period
        return min(self.timing.retry_period, left + _AFTER_EXPIRY)

    async def run(self) -> None:
        """Lists every retry period, and when a lease runs out; deletes the Leases of
        members long gone."""
        while True:
            await asyncio.sleep(self._pause())
            if await self.refresh():
                await self._delete_stale()

    async def _delete_stale(self) -> None:
        stale = stale_leases(self._sightings, self._clock(), self.timing.lease_duration, self.me)
        for name, version in stale:
            body = {"preconditions": {"resourceVersion": version}}
            try:
                await self._client.request(
                    "DELETE", leases_path(self.namespace, name), body=body, timeout=5
                )
            except KubeError as error:
                if error.status not in (404, 409):
                    log.warning("cannot delete the stale member lease %s: %s", name, error)
                continue
            log.info("deleted the member lease %s, unchanged for long", name)


async def wait_for_single_leader(
    client: LeaseLister,
    namespace: str,
    name: str,
    timing: Timing,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Returns once no operator of an earlier release runs jobs. Those ran every job of
    the namespace while they held the one Lease `name` (the prefix of the member
    Leases), and wrote no `status.operator`, so a member resuming their Processing jobs
    beside them would call the provider twice. During an upgrade (a rolling update) the
    old pod releases that Lease as it stops, or it runs out once the pod is gone."""
    seen: Sighting | None = None
    told = False
    while True:
        try:
            lease = await client.request(
                "GET", leases_path(namespace, name), timeout=timing.retry_period * 2
            )
        except KubeError as error:
            if error.status == 404:
                return
            log.warning("cannot read the lease %s: %s", name, error)
        else:
            version = str(lease["metadata"].get("resourceVersion", ""))
            seen = observe(seen, LeaseRecord.from_lease(lease), version, clock())
            if not live_members({name: seen}, clock(), timing.lease_duration):
                return
            if not told:
                told = True
                holder = seen.record.holder if seen.record else ""
                log.info(
                    "waiting for the single-leader operator %s to stop (lease %s)", holder, name
                )
        await asyncio.sleep(timing.retry_period)
