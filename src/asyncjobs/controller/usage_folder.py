"""Folds an expiring job's usage into its virtual key's usage record, then deletes it.

The decision is core/usage_records.py (pure); this is the adapter: it remembers what
each job awaiting expiry spent (from the object the supervisor scheduled it with), and
wraps the expiry's deleter so the record is updated before the job goes. The update is
preconditioned on the record's resourceVersion (a PUT carrying it): a conflict with
another shard folding a job of the same key reads the record again. A fold that fails
otherwise raises, and the expiry tries the job again later (the job is not deleted
without its usage folded). A job the record lists as folded is not folded twice.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from asyncjobs.controller.expiry import Deleter
from asyncjobs.controller.metrics import Metrics
from asyncjobs.core import resources, usage_records
from asyncjobs.core.kube import KubeClient, KubeError
from asyncjobs.core.usage_records import JobSpend

log = logging.getLogger(__name__)

# Conflicts in a row before the fold is left to the expiry's retry; between them a
# random pause that grows, so folders racing on one record spread out.
_ATTEMPTS = 32
_CONFLICT_PAUSE_SECONDS = 0.01


class UsageFolder:
    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        metrics: Metrics,
        wall: Callable[[], datetime],
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.metrics = metrics
        self.wall = wall
        self._spends: dict[str, JobSpend] = {}

    def remember(self, obj: Mapping[str, Any]) -> None:
        spend = usage_records.spend_of(obj)
        if spend is not None:
            self._spends[spend.name] = spend

    def forget(self, name: str) -> None:
        self._spends.pop(name, None)

    def __len__(self) -> int:
        return len(self._spends)

    def folding(self, delete: Deleter) -> Deleter:
        """`delete`, preceded by the fold of the job's usage."""

        async def fold_then_delete(name: str, uid: str) -> None:
            spend = self._spends.get(name)
            if spend is not None:
                await self.fold(spend)
            await delete(name, uid)
            self._spends.pop(name, None)

        return fold_then_delete

    async def fold(self, spend: JobSpend) -> None:
        path = resources.configmaps_path(self.namespace, usage_records.record_name(spend.key_id))
        for attempt in range(_ATTEMPTS):
            if attempt:
                await asyncio.sleep(random.uniform(0, _CONFLICT_PAUSE_SECONDS * attempt))
            try:
                current: dict[str, Any] | None = await self.client.get(path)
            except KubeError as error:
                if error.status != 404:
                    raise
                current = None
            data = usage_records.fold(current.get("data") if current else None, spend, self.wall())
            if data is None:
                return  # folded already (a fold before a crash, or by a shard before us)
            try:
                if current is None:
                    labels = {resources.LABEL_MANAGED_BY: resources.MANAGED_BY}
                    body = usage_records.configmap(spend.key_id, data, labels)
                    await self.client.create(resources.configmaps_path(self.namespace), body)
                    self.metrics.apiserver_writes.labels("POST", "configmaps").inc()
                else:
                    # The resourceVersion in the body makes the PUT conditional: a record
                    # changed since it was read answers 409 and is read again.
                    body = {**current, "data": data}
                    await self.client.request("PUT", path, body=body)
                    self.metrics.apiserver_writes.labels("PUT", "configmaps").inc()
                return
            except KubeError as error:
                if error.status != 409:
                    raise
        raise KubeError(409, "Conflict", f"usage record of job {spend.name} kept changing")
