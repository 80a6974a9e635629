"""Which waiting job gets the next call slot: weighted fair share between groups.

A group is a virtual key (core/fair_share.py). Without fair share the oldest waiting
job went first, so a key that queued 10,000 jobs made every other key's job wait for
all of them. Here each group keeps its own waiters, and the slot goes to the group that
has had the least service for its weight (stride scheduling, the virtual-time form of
weighted fair queueing): every grant advances the served group's `pass` by 1/weight,
and the group with the lowest pass is served next. Over any busy stretch two groups
are served in proportion to their weights, whatever their backlogs.

A group that was idle joins at the current virtual time (the pass of the latest grant),
never behind it: waiting with nothing queued earns no credit, so a key cannot save up
and then burst. A new key's first job is therefore served at the next grant, or within
one round of the groups ahead of it. Within a group, waiters go in their `order` (the
job's priority, then its age), as the whole queue did before.

Waiters are also kept per lane (a provider): a slot is handed out only among lanes
whose limits allow a call now, so a saturated provider never holds up another, and a
group whose only lane is blocked is skipped without being charged.

Pure: no clock, no asyncio. Waiters that left (cancelled, turned away) are dropped
lazily, when they reach the head of their lane, as the admission queue did with its
heaps; `alive` says which are still waiting.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")

# Compared element by element: within a group and lane, the lowest order goes first.
Order = tuple[Any, ...]

# Idle groups remember their pass (a group served just before it went idle must not
# gain by leaving and coming back); past this many, those no longer ahead are dropped.
_IDLE_KEPT = 1024


@dataclass
class _Group(Generic[T]):
    weight: int
    pass_: float
    # When the group last became active: the tie-break between equal passes.
    since: int
    lanes: dict[str, list[tuple[Order, int, T]]] = field(default_factory=dict)


class FairQueue(Generic[T]):
    def __init__(self, alive: Callable[[T], bool]) -> None:
        self._alive = alive
        self._groups: dict[str, _Group[T]] = {}
        self._idle_pass: dict[str, float] = {}
        self._vtime = 0.0
        self._seq = itertools.count()

    def push(self, group: str, weight: int, lane: str, order: Order, item: T) -> None:
        """A waiter joins `group` (its weight now `weight`: the latest job's word)."""
        entry = self._groups.get(group)
        if entry is None:
            start = max(self._idle_pass.pop(group, self._vtime), self._vtime)
            entry = self._groups[group] = _Group(weight, start, next(self._seq))
        entry.weight = max(1, weight)
        heapq.heappush(entry.lanes.setdefault(lane, []), (order, next(self._seq), item))

    def pop(self, ready: Collection[str]) -> tuple[str, T] | None:
        """The waiter that gets a slot now, with its lane, among lanes in `ready`; None
        when no live waiter is in a ready lane."""
        best: tuple[float, int, str, str] | None = None
        for name in list(self._groups):
            group = self._groups[name]
            lane = self._best_lane(name, group, ready)
            if lane is None:
                continue
            key = (group.pass_, group.since, name, lane)
            if best is None or key < best:
                best = key
        if best is None:
            return None
        _, _, name, lane = best
        group = self._groups[name]
        _, _, item = heapq.heappop(group.lanes[lane])
        # Monotonic: a group that was skipped (its lanes blocked) may be served behind the
        # others' passes, and must not pull the joining time of new groups back with it.
        self._vtime = max(self._vtime, group.pass_)
        group.pass_ += 1.0 / group.weight
        self._drop_dead(name, group, lane)
        return lane, item

    def lanes_waiting(self) -> set[str]:
        """Lanes with a live waiter at the head of some group (after dropping the dead)."""
        lanes: set[str] = set()
        for name in list(self._groups):
            group = self._groups[name]
            for lane in list(group.lanes):
                if self._drop_dead(name, group, lane):
                    lanes.add(lane)
        return lanes

    def items(self, lane: str | None = None) -> Iterator[T]:
        """Every waiter still queued (dead ones included until dropped), of one lane or all."""
        for group in self._groups.values():
            for name, heap in group.lanes.items():
                if lane is None or name == lane:
                    for _, _, item in heap:
                        yield item

    def waiting_by_group(self) -> dict[str, int]:
        """Live waiters per group, groups with none left out."""
        counts: dict[str, int] = {}
        for name, group in self._groups.items():
            live = sum(
                1 for heap in group.lanes.values() for _, _, item in heap if self._alive(item)
            )
            if live:
                counts[name] = live
        return counts

    def _best_lane(self, name: str, group: _Group[T], ready: Collection[str]) -> str | None:
        best: tuple[Order, int, str] | None = None
        for lane in list(group.lanes):
            if not self._drop_dead(name, group, lane) or lane not in ready:
                continue
            order, seq, _ = group.lanes[lane][0]
            if best is None or (order, seq) < best[:2]:
                best = (order, seq, lane)
        return None if best is None else best[2]

    def _drop_dead(self, name: str, group: _Group[T], lane: str) -> bool:
        """Pops dead waiters off the lane's head; False (and the lane, and the group if
        it was its last, removed) when none is left."""
        heap = group.lanes.get(lane)
        if heap is None:
            return False
        while heap and not self._alive(heap[0][2]):
            heapq.heappop(heap)
        if heap:
            return True
        del group.lanes[lane]
        if not group.lanes:
            self._retire(name, group)
        return False

    def _retire(self, name: str, group: _Group[T]) -> None:
        del self._groups[name]
        if group.pass_ > self._vtime:
            self._idle_pass[name] = group.pass_
        if len(self._idle_pass) > _IDLE_KEPT:
            self._idle_pass = {g: p for g, p in self._idle_pass.items() if p > self._vtime}
