"""List-then-watch one kind of object and keep a caller's in-memory copy current.

The API's job cache and virtual-key ring and the operator's view of its shards' jobs
need the same loop: list (a consistent
snapshot and its resourceVersion), then watch from that version; when the server
ends a watch, continue from the last version seen; when the version is too old (410
Gone, after etcd compaction) or the apiserver is unreachable, relist after a short
backoff. The snapshot replaces the copy wholesale, so nothing deleted while the watch
was down lingers.

The list is read in pages (`limit`/`continue`), each with its own timeout and a few
retries on transient errors, so a namespace of 100,000 objects is many short requests,
not one that cannot finish. Each page is reduced to what the caller keeps (`keep`, e.g.
a JobView) before the next is asked for, so the raw objects in memory peak at one page.
A `continue` token that expired (410) starts the list again; the copy is replaced only
when a whole list completed. `in_sync` is False from the moment a relist is needed
until that list completed: readiness follows it, while reads keep the old copy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from asyncjobs.core.kube import KubeClient, KubeError, KubeObject

log = logging.getLogger(__name__)

T = TypeVar("T")

OnEvent = Callable[[str, KubeObject], None]

# Objects per list page: ~12 KB each as parsed JSON, so a page is ~6 MB at most.
DEFAULT_PAGE_SIZE = 500
PAGE_TIMEOUT = 30.0
PAGE_ATTEMPTS = 5


class Reflector(Generic[T]):
    """Runs until cancelled; `synced` is set once the first list has been applied,
    `in_sync` is True only while the copy follows the watch (False during a relist)."""

    def __init__(
        self,
        client: KubeClient,
        path: str,
        *,
        name: str,
        keep: Callable[[KubeObject], T],
        on_replace: Callable[[list[T]], None],
        on_event: OnEvent,
        on_restart: Callable[[str], None] = lambda _reason: None,
        on_sync: Callable[[bool], None] = lambda _in_sync: None,
        label_selector: str | None = None,
        watch_timeout: int = 300,
        max_backoff: float = 5.0,
        page_size: int = DEFAULT_PAGE_SIZE,
        page_timeout: float = PAGE_TIMEOUT,
        page_attempts: int = PAGE_ATTEMPTS,
    ) -> None:
        self.client = client
        self.path = path
        self.name = name
        self.keep = keep
        self.on_replace = on_replace
        self.on_event = on_event
        self.on_restart = on_restart
        self.on_sync = on_sync
        self.params: dict[str, str] = {}
        if label_selector:
            self.params["labelSelector"] = label_selector
        self.watch_timeout = watch_timeout
        self.max_backoff = max_backoff
        self.page_size = page_size
        self.page_timeout = page_timeout
        self.page_attempts = page_attempts
        self.synced = asyncio.Event()
        self.in_sync = False

    def _set_in_sync(self, in_sync: bool) -> None:
        if in_sync != self.in_sync:
            self.in_sync = in_sync
            self.on_sync(in_sync)

    async def run(self) -> None:
        backoff = 0.1
        while True:
            try:
                version = await self._relist()
                backoff = 0.1
                await self._watch_from(version)
            except KubeError as exc:
                self._set_in_sync(False)
                if exc.status == 410:
                    # Our version was compacted away: relist at once, nothing is wrong.
                    self.on_restart("expired")
                    continue
                self.on_restart("error")
                log.warning("%s watch failed (%s); relisting in %.1fs", self.name, exc, backoff)
            except (ValueError, TypeError, AttributeError) as exc:
                # A garbled stream must not end the loop: the cache would silently freeze.
                self._set_in_sync(False)
                self.on_restart("error")
                log.warning("%s watch stream unreadable (%r); relisting", self.name, exc)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    async def _relist(self) -> str:
        kept, version = await self._list()
        self.on_replace(kept)
        self.synced.set()
        self._set_in_sync(True)
        return version

    async def _list(self) -> tuple[list[T], str]:
        """Every page of one consistent list, reduced by `keep`, and its resourceVersion."""
        kept: list[T] = []
        token = ""
        while True:
            try:
                token, version = await self._read_page(token, kept)
            except KubeError as exc:
                if exc.status != 410 or not token:
                    raise
                # The snapshot behind the token was compacted away: start the list again.
                self.on_restart("expired")
                log.info("%s list expired after %d objects; listing again", self.name, len(kept))
                kept, token = [], ""
                continue
            if not token:
                return kept, version

    async def _read_page(self, token: str, kept: list[T]) -> tuple[str, str]:
        """Reads one page into `kept`, retrying transient errors; its raw objects are
        garbage once this returns. Answers the next page's token ("" after the last)."""
        backoff = 0.1
        for attempt in range(1, self.page_attempts + 1):
            try:
                page = await self.client.list_page(
                    self.path,
                    limit=self.page_size,
                    continue_token=token,
                    timeout=self.page_timeout,
                    **self.params,
                )
                break
            except KubeError as exc:
                if not exc.transient or attempt == self.page_attempts:
                    raise
                log.info("%s list page failed (%s); retrying in %.1fs", self.name, exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)
        kept.extend(self.keep(obj) for obj in page.get("items") or [])
        metadata: dict[str, Any] = page.get("metadata") or {}
        return str(metadata.get("continue") or ""), str(metadata.get("resourceVersion", ""))

    async def _watch_from(self, version: str) -> None:
        # Each pass is one watch request; the server closes it after watch_timeout and the
        # next pass resumes from the newest version seen, without a relist.
        while True:
            async for event in self.client.watch(
                self.path,
                resource_version=version,
                timeout_seconds=self.watch_timeout,
                **self.params,
            ):
                kind: str = event.get("type", "")
                obj: dict[str, Any] = event.get("object") or {}
                new_version = obj.get("metadata", {}).get("resourceVersion")
                if new_version:
                    version = new_version
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self.on_event(kind, obj)
