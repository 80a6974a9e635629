"""The cached jobs in list order, all of them and per virtual key, so that a page of
`GET /v1/async/jobs` costs about its own size instead of a pass over every cached job
(measured by bench/list_bench.py: a full pass took 188 ms of the event loop at 50,000
jobs).

A job's place is (created_at, id): both fixed-width text, so the tuples compare as the
times and ids do. Sorted Python lists with bisect: jobs arrive nearly in creation
order, so an insert is close to an append, and a delete moves at most the list's
pointers (a few hundred kilobytes at 100,000 jobs), which is cheap next to the watch
event that causes it.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Iterator

from asyncjobs.core.jobs import JobView

Position = tuple[str, str]


def position(view: JobView) -> Position:
    return (view.created_at, view.job_id)


class NewestFirst:
    """Positions of every job, and of each virtual key's jobs (jobs without a key are
    listed only to the gateway token, so they have no list of their own)."""

    def __init__(self) -> None:
        self._all: list[Position] = []
        self._by_key: dict[str, list[Position]] = {}

    def replace(self, views: Iterable[JobView]) -> None:
        self._all = []
        self._by_key = {}
        for view in views:
            place = position(view)
            self._all.append(place)
            if view.virtual_key_id:
                self._by_key.setdefault(view.virtual_key_id, []).append(place)
        self._all.sort()
        for places in self._by_key.values():
            places.sort()

    def add(self, view: JobView) -> None:
        place = position(view)
        insort(self._all, place)
        if view.virtual_key_id:
            insort(self._by_key.setdefault(view.virtual_key_id, []), place)

    def remove(self, view: JobView) -> None:
        place = position(view)
        _discard(self._all, place)
        if view.virtual_key_id:
            places = self._by_key.get(view.virtual_key_id)
            if places is not None:
                _discard(places, place)
                if not places:
                    del self._by_key[view.virtual_key_id]

    def ids(self, key_id: str | None, before: Position | None) -> Iterator[str]:
        """Ids newest first, strictly before `before` (a cursor's position): of every
        job (key_id None) or of one key's."""
        ordered = self._all if key_id is None else self._by_key.get(key_id, [])
        end = len(ordered) if before is None else bisect_left(ordered, before)
        for index in range(end - 1, -1, -1):
            yield ordered[index][1]

    def __len__(self) -> int:
        return len(self._all)


def _discard(ordered: list[Position], place: Position) -> None:
    index = bisect_left(ordered, place)
    if index < len(ordered) and ordered[index] == place:
        del ordered[index]
