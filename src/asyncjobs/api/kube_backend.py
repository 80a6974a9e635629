"""The API's Kubernetes side: where jobs and virtual keys live when the API runs for real.

`KubeBackend` opens a client to the apiserver, and two reflectors (AsyncJobs in the jobs
namespace, virtual-key Secrets in the keys namespace) keep the job cache behind the store
and the key ring current for as long as the app runs. main.py builds it and gives
create_app its store, its key ring and `run` as a cleanup context; unit tests give
create_app an in-memory store and a ring instead, and nothing touches the network.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from aiohttp import web

from asyncjobs.api import state
from asyncjobs.api.clock import Clock
from asyncjobs.api.metrics import ApiMetrics
from asyncjobs.api.store import JobCache, KubeJobStore
from asyncjobs.api.virtual_keys import KeyEntry, KeyRing, entry_from_secret
from asyncjobs.api.webhook_store import KubeWebhookStore
from asyncjobs.core import resources, usage_records
from asyncjobs.core.kube import KubeClient, KubeConfig, KubeObject, ObjectClient
from asyncjobs.core.payloads import PayloadStore
from asyncjobs.core.reflector import DEFAULT_PAGE_SIZE, Reflector
from asyncjobs.core.usage_records import Record

# Opens the payload store the flags chose, given the apiserver client (for Secrets).
OpenPayloads = Callable[[ObjectClient], AbstractAsyncContextManager[PayloadStore]]


class KubeBackend:
    def __init__(
        self,
        config: KubeConfig,
        namespace: str,
        clock: Clock,
        *,
        keys_namespace: str | None = None,
        list_page_size: int = DEFAULT_PAGE_SIZE,
        open_payloads: OpenPayloads | None = None,
    ) -> None:
        self.namespace = namespace
        # Virtual-key Secrets are listed and watched here; with a namespace of their
        # own, the API needs no list or watch on the jobs' Secrets (bodies).
        self.keys_namespace = keys_namespace or namespace
        self.client = KubeClient(config)
        self.cache = JobCache()
        self.store = KubeJobStore(self.client, namespace, self.cache, clock)
        self.keys = KeyRing(synced=False)
        self.webhooks = KubeWebhookStore(self.client, namespace)
        self.list_page_size = list_page_size
        self.open_payloads = open_payloads

    def _replace_keys(self, entries: list[KeyEntry | None]) -> None:
        self.keys.replace(entry for entry in entries if entry is not None)

    def _key_event(self, kind: str, secret: KubeObject) -> None:
        name = secret.get("metadata", {}).get("name", "")
        entry = None if kind == "DELETED" else entry_from_secret(secret)
        if entry is None:
            self.keys.remove(name)
        else:
            self.keys.put(entry)

    def _jobs_in_sync(self, in_sync: bool) -> None:
        self.store.synced = in_sync

    def _keys_in_sync(self, in_sync: bool) -> None:
        self.keys.synced = in_sync

    async def run(self, app: web.Application) -> AsyncIterator[None]:
        """The cleanup context: the client, the payload store and both watches, for the
        app's lifetime."""
        metrics = app[state.CONTEXT].metrics
        metrics.cache_jobs.set_function(lambda: len(self.cache))
        # Every known key has a series (0 when idle), so a panel shows idle keys too.
        metrics.watch_key_pending(
            lambda: {**dict.fromkeys(self.keys.key_ids(), 0), **self.cache.pending_by_key()}
        )
        await self.client.open()
        try:
            async with contextlib.AsyncExitStack() as stack:
                if self.open_payloads is not None:
                    opened = self.open_payloads(self.client)
                    self.store.payloads = await stack.enter_async_context(opened)
                tasks = [asyncio.create_task(r.run()) for r in self._reflectors(metrics)]
                try:
                    yield
                finally:
                    for task in tasks:
                        task.cancel()
                    for task in tasks:
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
        finally:
            await self.client.close()

    def _reflectors(self, metrics: ApiMetrics) -> list[Reflector[Any]]:
        # Readiness (/readyz) follows each reflector's `in_sync`: false at start and
        # from a 410 or a lost watch until the relist completed.
        jobs = Reflector(
            self.client,
            resources.asyncjobs_path(self.namespace),
            name="asyncjobs",
            keep=JobCache.slim,
            on_replace=self.cache.replace,
            on_event=self.cache.apply,
            on_restart=lambda reason: metrics.watch_restarts.labels("asyncjobs", reason).inc(),
            on_sync=self._jobs_in_sync,
            page_size=self.list_page_size,
        )
        keys = Reflector(
            self.client,
            resources.secrets_path(self.keys_namespace),
            name="virtual-keys",
            label_selector=resources.LABEL_VIRTUAL_KEY,
            keep=entry_from_secret,
            on_replace=self._replace_keys,
            on_event=self._key_event,
            on_restart=lambda reason: metrics.watch_restarts.labels("secrets", reason).inc(),
            on_sync=self._keys_in_sync,
            page_size=self.list_page_size,
        )
        # Usage records of deleted jobs (core/usage_records.py), in the jobs' namespace.
        records = Reflector(
            self.client,
            resources.configmaps_path(self.namespace),
            name="key-usage",
            label_selector=usage_records.LABEL,
            keep=_usage_record,
            on_replace=self._replace_records,
            on_event=self._record_event,
            on_restart=lambda reason: metrics.watch_restarts.labels("configmaps", reason).inc(),
            page_size=self.list_page_size,
        )
        return [jobs, keys, records]

    def _replace_records(self, records: list[tuple[str, Record] | None]) -> None:
        self.cache.spent.replace_records(dict(entry for entry in records if entry is not None))

    def _record_event(self, kind: str, obj: KubeObject) -> None:
        name = obj.get("metadata", {}).get("name", "")
        entry = None if kind == "DELETED" else _usage_record(obj)
        self.cache.spent.put_record(name, entry[1] if entry else None)


def _usage_record(obj: KubeObject) -> tuple[str, Record] | None:
    record = usage_records.read(obj.get("data"))
    return None if record is None else (obj.get("metadata", {}).get("name", ""), record)
