"""List-then-watch one kind of object and keep a caller's in-memory copy current.

Both the job cache and the virtual-key ring need the same loop: list (a consistent
snapshot and its resourceVersion), then watch from that version; when the server
ends a watch, continue from the last version seen; when the version is too old (410
Gone, after etcd compaction) or the apiserver is unreachable, relist after a short
backoff. The snapshot replaces the copy wholesale, so nothing deleted while the watch
was down lingers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from asyncjobs.core.kube import KubeClient, KubeError, KubeObject

log = logging.getLogger(__name__)

OnReplace = Callable[[list[KubeObject]], None]
OnEvent = Callable[[str, KubeObject], None]


class Reflector:
    """Runs until cancelled; `synced` is set once the first list has been applied."""

    def __init__(
        self,
        client: KubeClient,
        path: str,
        *,
        name: str,
        on_replace: OnReplace,
        on_event: OnEvent,
        on_restart: Callable[[str], None] = lambda _reason: None,
        label_selector: str | None = None,
        watch_timeout: int = 300,
        max_backoff: float = 5.0,
    ) -> None:
        self.client = client
        self.path = path
        self.name = name
        self.on_replace = on_replace
        self.on_event = on_event
        self.on_restart = on_restart
        self.params: dict[str, str] = {}
        if label_selector:
            self.params["labelSelector"] = label_selector
        self.watch_timeout = watch_timeout
        self.max_backoff = max_backoff
        self.synced = asyncio.Event()

    async def run(self) -> None:
        backoff = 0.1
        while True:
            try:
                version = await self._relist()
                backoff = 0.1
                await self._watch_from(version)
            except KubeError as exc:
                if exc.status == 410:
                    # Our version was compacted away: relist at once, nothing is wrong.
                    self.on_restart("expired")
                    continue
                self.on_restart("error")
                log.warning("%s watch failed (%s); relisting in %.1fs", self.name, exc, backoff)
            except (ValueError, TypeError, AttributeError) as exc:
                # A garbled stream must not end the loop: the cache would silently freeze.
                self.on_restart("error")
                log.warning("%s watch stream unreadable (%r); relisting", self.name, exc)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    async def _relist(self) -> str:
        listing = await self.client.list(self.path, **self.params)
        self.on_replace(list(listing.get("items") or []))
        self.synced.set()
        return str(listing.get("metadata", {}).get("resourceVersion", ""))

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
