"""Pending jobs beyond what the admission queue needs, parked compactly until their turn.

A job waiting for a call slot is a task: its coroutine frames, its parsed facts and its
object, about 10 KiB. With 100,000 pending jobs that is a gigabyte, for jobs that will
wait minutes anyway. So only `per_lane` jobs of each provider (lane) are started at a
time; the rest are parked here as their object's JSON (a third of the object's size as
Python dicts) in the same fair queue the admission queue uses (core/fair_share.py: the
key's weight, then priority and age), so the jobs started next are the ones admission
would have served next. When a started job's task ends, its lane has room and the next
parked job of that lane starts.

Pure: no clock, no tasks. The supervisor decides what to park and starts what `next`
hands back; a parked job that changes (a newer watch event) is unparked and decided
again from its new object.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asyncjobs.controller.fair_queue import FairQueue, Order


@dataclass(slots=True, eq=False)
class _Parked:
    name: str
    version: str  # the object's resourceVersion
    lane: str
    body: bytes
    live: bool = True


def _alive(parked: _Parked) -> bool:
    return parked.live


class Backlog:
    def __init__(self, per_lane: Callable[[], int]) -> None:
        # Read at each decision: the call limits can be reloaded.
        self.per_lane = per_lane
        self._queue: FairQueue[_Parked] = FairQueue(_alive)
        self._parked: dict[str, _Parked] = {}
        self._parked_in: dict[str, int] = {}  # parked jobs per lane
        self._started: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._parked)

    def __contains__(self, name: object) -> bool:
        return name in self._parked

    def holds(self, name: str, version: str) -> bool:
        """Whether this very version of the job is parked (a relist repeats it: it
        keeps its place rather than leave a dead entry behind)."""
        parked = self._parked.get(name)
        return parked is not None and bool(version) and parked.version == version

    def entries(self) -> int:
        """Queue entries, those of unparked jobs included until they are dropped."""
        return sum(1 for _ in self._queue.items())

    def has_parked(self, lane: str) -> bool:
        return lane in self._parked_in

    def room(self, lane: str) -> bool:
        """Whether another job of `lane` may start now."""
        return self._started.get(lane, 0) < self.per_lane()

    def started(self, lane: str) -> None:
        self._started[lane] = self._started.get(lane, 0) + 1

    def ended(self, lane: str) -> None:
        left = self._started.get(lane, 0) - 1
        if left > 0:
            self._started[lane] = left
        else:
            self._started.pop(lane, None)

    def park(
        self, name: str, obj: dict[str, Any], lane: str, group: str, weight: int, order: Order
    ) -> None:
        self.unpark(name)
        version = str((obj.get("metadata") or {}).get("resourceVersion", ""))
        parked = _Parked(name, version, lane, json.dumps(obj, separators=(",", ":")).encode())
        self._parked[name] = parked
        self._parked_in[lane] = self._parked_in.get(lane, 0) + 1
        self._queue.push(group, weight, lane, order, parked)

    def unpark(self, name: str) -> bool:
        """Drops a parked job (False when it was not parked); its place in the queue is
        cleared lazily, its body at once."""
        parked = self._parked.pop(name, None)
        if parked is None:
            return False
        left = self._parked_in[parked.lane] - 1
        if left:
            self._parked_in[parked.lane] = left
        else:
            del self._parked_in[parked.lane]
        parked.live = False
        parked.body = b""
        return True

    def take(self, name: str) -> dict[str, Any] | None:
        """A parked job's object, unparked whatever its lane's room (its deadline came)."""
        parked = self._parked.get(name)
        return None if parked is None else self._release(parked)

    def lanes(self) -> set[str]:
        """Lanes with parked jobs."""
        return set(self._parked_in)

    def next(self, lane: str) -> dict[str, Any] | None:
        """The parked job of `lane` to start now (unparked), if the lane has room."""
        if not self.room(lane):
            return None
        popped = self._queue.pop({lane})
        if popped is None:
            return None
        return self._release(popped[1])

    def _release(self, parked: _Parked) -> dict[str, Any]:
        obj: dict[str, Any] = json.loads(parked.body)
        self.unpark(parked.name)
        return obj

    def waiting_by_group(self) -> dict[str, int]:
        return self._queue.waiting_by_group()
