"""Writes an endpoint's delivery log and counters (core/webhook_log.py decides them).

Several deliveries to one endpoint end at once, on this replica and on others, and each
adds to the same list and counters: every write is a read, a decision and a status patch
carrying the resourceVersion read, so the apiserver refuses (409) one based on a stale
read and it is made again from a fresh one. No update is lost and none is counted twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from asyncjobs.core import resources, webhook_log
from asyncjobs.core.kube import KubeClient, KubeError, KubeObject

log = logging.getLogger(__name__)

# Conflicts in a row before a write is given up (each one means another writer won).
_TRIES = 8

Decide = Callable[[Mapping[str, Any]], dict[str, Any] | None]


class EndpointStatus:
    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        retention_seconds: float,
        clock: Callable[[], datetime],
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.retention_seconds = retention_seconds
        self.clock = clock

    async def record(
        self, endpoint: str, delivery: Mapping[str, Any], *, count: bool = True
    ) -> None:
        """Adds an ended delivery to the endpoint's log (and counters, unless a test)."""
        await self._update(
            endpoint,
            lambda status: webhook_log.appended(
                status, delivery, self.clock(), self.retention_seconds, count=count
            ),
        )

    async def sweep(self, webhook: KubeObject) -> None:
        """Drops the log's entries past the retention, when it has any."""
        if webhook_log.swept(webhook.get("status", {}), self.clock(), self.retention_seconds):
            await self._update(
                webhook["metadata"]["name"],
                lambda status: webhook_log.swept(status, self.clock(), self.retention_seconds),
            )

    async def set_status(self, endpoint: str, patch: Mapping[str, Any]) -> None:
        await self._update(endpoint, lambda _: dict(patch))

    async def _update(self, endpoint: str, decide: Decide) -> None:
        path = resources.webhooks_path(self.namespace, endpoint)
        for _ in range(_TRIES):
            try:
                webhook = await self.client.get(path)
            except KubeError as error:
                if error.status == 404:
                    return  # deleted meanwhile: nothing to keep
                raise
            patch = decide(webhook.get("status", {}))
            if patch is None:
                return
            body = {
                "metadata": {"resourceVersion": webhook["metadata"]["resourceVersion"]},
                "status": patch,
            }
            try:
                await self.client.merge_patch(path + "/status", body)
                return
            except KubeError as error:
                if error.status == 404:
                    return
                if error.status != 409:
                    raise
        log.warning("endpoint %s: its status kept changing; one update given up", endpoint)
