"""The application factory: settings and collaborators in, a ready aiohttp app out.

With no store given, the app runs against Kubernetes: it opens a client, and two
reflectors (AsyncJobs, virtual-key Secrets) keep the in-memory views current for as
long as the app runs, all opened and closed in a cleanup context. Unit tests pass an
in-memory store and a key ring instead, and nothing touches the network.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web

from asyncjobs.api import ops, provider_routes, state, views
from asyncjobs.api.metrics import ApiMetrics
from asyncjobs.api.middleware import request_middleware
from asyncjobs.api.provider_names import ProviderNames
from asyncjobs.api.reflector import Reflector
from asyncjobs.api.settings import Settings
from asyncjobs.api.store import JobCache, JobStore, KubeJobStore
from asyncjobs.api.virtual_keys import KeyRing, entry_from_secret
from asyncjobs.core import resources
from asyncjobs.core.kube import KubeClient, KubeConfig, KubeObject


def create_app(
    settings: Settings,
    *,
    store: JobStore | None = None,
    keys: KeyRing | None = None,
    kube_config: KubeConfig | None = None,
) -> web.Application:
    metrics = ApiMetrics()
    app = web.Application(
        middlewares=[request_middleware(metrics, settings.max_request_bytes)],
        # aiohttp enforces the limit while reading, so an oversized body is never held.
        client_max_size=settings.max_request_bytes,
    )
    app[state.SETTINGS] = settings
    app[state.METRICS] = metrics
    app[state.PROVIDERS] = ProviderNames(settings.providers)
    if settings.providers_file:
        app.cleanup_ctx.append(_follow_providers(app[state.PROVIDERS], settings))
    openapi = ops.load_openapi()
    if openapi is not None:
        app[ops.OPENAPI] = openapi
    if store is None:
        if kube_config is None:
            raise ValueError("create_app needs a store or a kube_config")
        kube_store, ring = _kubernetes_backend(app, settings, kube_config, metrics)
        app[state.STORE] = kube_store
        app[state.KEYS] = ring
    else:
        app[state.STORE] = store
        app[state.KEYS] = keys if keys is not None else KeyRing()
    views.add_routes(app)
    provider_routes.add_routes(app)
    ops.add_routes(app)
    return app


def _follow_providers(
    names: ProviderNames, settings: Settings
) -> Callable[[web.Application], AsyncIterator[None]]:
    assert settings.providers_file is not None
    path = Path(settings.providers_file)
    names.refresh(path)

    async def follow(_app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(names.follow(path, settings.providers_reload_seconds))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return follow


def _kubernetes_backend(
    app: web.Application, settings: Settings, config: KubeConfig, metrics: ApiMetrics
) -> tuple[KubeJobStore, KeyRing]:
    client = KubeClient(config)
    cache = JobCache()
    kube_store = KubeJobStore(client, settings.namespace, cache)
    ring = KeyRing(synced=False)
    metrics.cache_jobs.set_function(lambda: len(cache))

    def replace_keys(secrets: list[KubeObject]) -> None:
        ring.replace(entry for entry in map(entry_from_secret, secrets) if entry is not None)

    def key_event(kind: str, secret: KubeObject) -> None:
        name = secret.get("metadata", {}).get("name", "")
        entry = None if kind == "DELETED" else entry_from_secret(secret)
        if entry is None:
            ring.remove(name)
        else:
            ring.put(entry)

    async def kubernetes(_app: web.Application) -> AsyncIterator[None]:
        await client.open()
        jobs = Reflector(
            client,
            resources.asyncjobs_path(settings.namespace),
            name="asyncjobs",
            on_replace=cache.replace,
            on_event=cache.apply,
            on_restart=lambda reason: metrics.watch_restarts.labels("asyncjobs", reason).inc(),
        )
        keys = Reflector(
            client,
            resources.secrets_path(settings.namespace),
            name="virtual-keys",
            label_selector=resources.LABEL_VIRTUAL_KEY,
            on_replace=replace_keys,
            on_event=key_event,
            on_restart=lambda reason: metrics.watch_restarts.labels("secrets", reason).inc(),
        )
        tasks = [asyncio.create_task(reflector.run()) for reflector in (jobs, keys)]

        async def mark_synced() -> None:
            await jobs.synced.wait()
            kube_store.synced = True
            await keys.synced.wait()
            ring.synced = True

        tasks.append(asyncio.create_task(mark_synced()))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await client.close()

    app.cleanup_ctx.append(kubernetes)
    return kube_store, ring
