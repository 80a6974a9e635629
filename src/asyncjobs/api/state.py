"""Typed application state: what create_app puts on the app and the views read back.

aiohttp's AppKey gives each entry a type, so mypy checks every access and no view
reaches for a module global. Everything a view works with besides the request itself
is one `ApiContext`, which submit_and_poll takes as it is, with no aiohttp around it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from asyncjobs.api.body_worker import BodyWorker
from asyncjobs.api.clock import Clock
from asyncjobs.api.metrics import ApiMetrics
from asyncjobs.api.provider_names import ProviderNames
from asyncjobs.api.quota import SubmitRates
from asyncjobs.api.result_cache import ResultCache
from asyncjobs.api.settings import Settings
from asyncjobs.api.store import JobStore
from asyncjobs.api.virtual_keys import KeyRing
from asyncjobs.api.webhook_store import NoWebhookStore, WebhookStore


@dataclass(frozen=True)
class ApiContext:
    settings: Settings
    store: JobStore
    keys: KeyRing
    # The provider names accepted as `provider/`, followed from the providers file.
    providers: ProviderNames
    metrics: ApiMetrics
    clock: Clock
    # Results already read and verified, by reference; disabled unless given one.
    results: ResultCache = field(default_factory=ResultCache)
    # Parses JSON bodies with many values in a worker process (body_worker.py).
    body_worker: BodyWorker = field(default_factory=BodyWorker)
    # Each virtual key's submits in this replica, against its rate (quota.py).
    submit_rates: SubmitRates = field(default_factory=SubmitRates)
    # Completion-webhook endpoints (AsyncJobWebhook objects), read by submits naming one.
    webhooks: WebhookStore = field(default_factory=NoWebhookStore)


CONTEXT = web.AppKey("context", ApiContext)
