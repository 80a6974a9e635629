"""Liveness: is the AsyncJob watch still delivering?

A quiet cluster sends no events, so silence alone proves nothing. But every status the
operator writes must come back through its own watch: if a write made `stall_seconds`
ago has not been echoed, the stream is stuck (a watch could keep waiting on a dead
connection, and new jobs would never be seen), and the liveness probe fails so the
kubelet restarts the process, whose fresh list picks everything up. Costs no requests.

A write that changed nothing (a merge patch equal to the stored status) keeps the
object's resource version and produces no event; one that the watch has already
delivered is not waited for, so neither can fail the check.
"""

from __future__ import annotations

from collections.abc import Callable


def _version(text: str) -> int | None:
    # Resource versions are opaque by contract but etcd revisions in practice; when one
    # is not a number, any later event for the object counts as the echo.
    return int(text) if text.isdigit() else None


class WatchHealth:
    def __init__(self, clock: Callable[[], float], stall_seconds: float = 60.0) -> None:
        self._clock = clock
        self.stall_seconds = stall_seconds
        self._expected: dict[str, tuple[str, float]] = {}
        # The newest version the watch has delivered (one stream, in version order).
        self._newest_seen = -1

    def wrote(self, name: str, resource_version: str) -> None:
        """The operator wrote `name`; the watch owes us this version, unless it has
        delivered it (or a later one) already."""
        version = _version(resource_version)
        if version is not None and version <= self._newest_seen:
            self._expected.pop(name, None)
            return
        if name not in self._expected:
            self._expected[name] = (resource_version, self._clock())
        else:
            self._expected[name] = (resource_version, self._expected[name][1])

    def observed(self, name: str, resource_version: str) -> None:
        seen = _version(resource_version)
        if seen is not None and seen > self._newest_seen:
            self._newest_seen = seen
        expected = self._expected.get(name)
        if expected is None:
            return
        want = _version(expected[0])
        if want is None or seen is None or seen >= want:
            del self._expected[name]

    def forget(self, name: str) -> None:
        self._expected.pop(name, None)

    def stalled_for(self) -> float:
        """How long the oldest unechoed write has waited (0 when none waits)."""
        if not self._expected:
            return 0.0
        oldest = min(since for _, since in self._expected.values())
        return self._clock() - oldest

    def healthy(self) -> bool:
        return self.stalled_for() < self.stall_seconds
