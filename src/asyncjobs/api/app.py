"""The application factory: settings and collaborators in, a ready aiohttp app out.

create_app always takes its job store, its virtual-key ring and its clock: main.py
passes the Kubernetes ones (kube_backend.py, whose watches run as a cleanup context),
unit tests an in-memory store and a fixed clock. Every route the API serves is in the
one table below.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

from aiohttp import web

from asyncjobs.api import (
    cancel_route,
    job_list,
    ops,
    protocol_errors,
    provider_routes,
    state,
    usage_route,
    views,
    webhook_routes,
)
from asyncjobs.api.body_worker import BodyWorker
from asyncjobs.api.clock import Clock, utc_now
from asyncjobs.api.metrics import ApiMetrics
from asyncjobs.api.middleware import request_middleware
from asyncjobs.api.provider_names import ProviderNames
from asyncjobs.api.result_cache import ResultCache
from asyncjobs.api.settings import Settings
from asyncjobs.api.store import JobStore
from asyncjobs.api.virtual_keys import KeyRing
from asyncjobs.api.webhook_store import NoWebhookStore, WebhookStore
from asyncjobs.core.request_types import REQUEST_TYPES

CleanupContext = Callable[[web.Application], AsyncIterator[None]]

ROUTES: list[web.AbstractRouteDef] = [
    *(
        web.post(info.submit_path, views.submit, name=views.submit_route_name(info))
        for info in REQUEST_TYPES.values()
    ),
    *(
        web.get(f"{info.submit_path}/{{job_id}}", views.poll, name=views.poll_route_name(info))
        for info in REQUEST_TYPES.values()
    ),
    *(
        web.post(path, provider_routes.handler(dialect))
        for path, dialect in provider_routes.DIALECTS.items()
    ),
    web.get(job_list.PATH, views.list_jobs, name="list"),
    web.get(usage_route.PATH, usage_route.usage, name="usage"),
    *cancel_route.ROUTES,
    web.get("/healthz", ops.healthz),
    web.get("/readyz", ops.readyz),
    web.get("/health", ops.health),
    web.get("/metrics", ops.metrics),
    web.get("/openapi.json", ops.openapi),
    *webhook_routes.ROUTES,
]

# A provider-compatible route answers its refusals in its provider's error shape.
_ERROR_SHAPES = {path: dialect.refusal for path, dialect in provider_routes.DIALECTS.items()}


def create_app(
    settings: Settings,
    *,
    store: JobStore,
    keys: KeyRing,
    clock: Clock = utc_now,
    webhooks: WebhookStore | None = None,
    cleanup_ctx: Iterable[CleanupContext] = (),
) -> web.Application:
    """`cleanup_ctx` runs for the app's lifetime beside its own (the Kubernetes watches)."""
    metrics = ApiMetrics()
    # aiohttp's own 400s for unparseable requests would log the request's headers.
    protocol_errors.quiet_malformed_requests()
    app = web.Application(
        middlewares=[request_middleware(metrics, settings.max_request_bytes, _ERROR_SHAPES)],
        # aiohttp enforces the limit while reading, so an oversized body is never held.
        client_max_size=settings.max_request_bytes,
    )
    providers = ProviderNames(settings.providers)
    results = ResultCache(settings.result_cache_bytes)
    metrics.watch_result_cache(results)
    body_worker = BodyWorker()
    app[state.CONTEXT] = state.ApiContext(
        settings,
        store,
        keys,
        providers,
        metrics,
        clock,
        results,
        body_worker,
        webhooks=webhooks if webhooks is not None else NoWebhookStore(),
    )
    app.on_cleanup.append(lambda _app: _close(body_worker))
    if settings.providers_file:
        app.cleanup_ctx.append(_follow_providers(providers, settings))
    app.cleanup_ctx.extend(cleanup_ctx)
    openapi = ops.load_openapi()
    if openapi is not None:
        app[ops.OPENAPI] = openapi
    app.add_routes(ROUTES)
    return app


async def _close(worker: BodyWorker) -> None:
    worker.close()


def _follow_providers(names: ProviderNames, settings: Settings) -> CleanupContext:
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
