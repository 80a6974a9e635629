"""The operator's view of its shards' AsyncJobs: list in pages, then watch.

The same reflector as the API's caches (core/reflector.py), with a server-side label
selector for this replica's shards (core/shards.py), so its memory and CPU shrink as
replicas are added. Each listed job is handed to the observers as its page is read
(event type None, as for a restart), so the listing holds one page of raw objects, not
the whole namespace, and it ends in seconds even with 100,000 jobs: a listing that
outlives etcd's compaction window (5 minutes) can never finish, and the reflector would
start it again forever. When a listing completes, the supervisor hears which jobs it
held, and forgets the ones deleted while no watch was open.

Why not kopf's watcher, used before: kopf queues every listed object to a worker task of
its own between two pages, about a millisecond each, so 100,000 pending jobs made a
listing longer than the compaction window, whose `continue` token then expired (410), and
kopf's listing does not start again after that: the operator stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Protocol

from asyncjobs.controller.writer import slim
from asyncjobs.core import resources
from asyncjobs.core.kube import KubeClient, KubeObject
from asyncjobs.core.model import as_asyncjob
from asyncjobs.core.reflector import Reflector

log = logging.getLogger(__name__)

# Objects per list page (at most ~6 MB of JSON).
LIST_PAGE_SIZE = 500


class Observer(Protocol):
    """What the watch hands events to (type None for a listed job)."""

    def observe(self, event_type: str | None, obj: dict[str, Any]) -> None: ...


class ListingObserver(Protocol):
    """Told once a whole listing has been handed over: the names it held."""

    def listed(self, names: Iterable[str]) -> None: ...


def _without_managed_fields(obj: KubeObject) -> dict[str, Any]:
    return dict(slim(as_asyncjob(obj)))


def job_watch(
    client: KubeClient,
    namespace: str,
    selector: str,
    observer: Observer,
    listing: ListingObserver,
    *,
    page_size: int = LIST_PAGE_SIZE,
) -> Reflector[str]:
    """A reflector over the namespace's AsyncJobs matching `selector`; its `run()` is
    the watch, as a task of its own."""

    def hand_over(obj: KubeObject) -> str:
        # Observed as the page is read; the listing keeps only the name.
        job = _without_managed_fields(obj)
        observer.observe(None, job)
        return str(job.get("metadata", {}).get("name", ""))

    def on_event(event_type: str, obj: KubeObject) -> None:
        observer.observe(event_type, _without_managed_fields(obj))

    def on_restart(reason: str) -> None:
        log.info("AsyncJob watch restarts (%s); listing this replica's jobs again", reason)

    return Reflector(
        client,
        resources.asyncjobs_path(namespace),
        name="AsyncJob",
        keep=hand_over,
        on_replace=listing.listed,
        on_event=on_event,
        on_restart=on_restart,
        label_selector=selector,
        page_size=page_size,
    )
