"""Typed application state: what create_app puts on the app and the views read back.

aiohttp's AppKey gives each entry a type, so mypy checks every access and no view
reaches for a module global.
"""

from __future__ import annotations

from aiohttp import web

from asyncjobs.api.metrics import ApiMetrics
from asyncjobs.api.provider_names import ProviderNames
from asyncjobs.api.settings import Settings
from asyncjobs.api.store import JobStore
from asyncjobs.api.virtual_keys import KeyRing

SETTINGS = web.AppKey("settings", Settings)
# A protocol cannot be passed as a runtime type, so the key is typed by annotation.
STORE: web.AppKey[JobStore] = web.AppKey("store")
KEYS = web.AppKey("keys", KeyRing)
METRICS = web.AppKey("metrics", ApiMetrics)
PROVIDERS = web.AppKey("providers", ProviderNames)
