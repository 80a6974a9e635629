"""`GET /v1/async/usage`: what the caller's virtual key has spent, and what it may.

An extension (Bifrost shows usage in its UI and governance API, not on the inference
routes): the key is the caller's own, read from the same headers as a submit's, so a
key sees only itself. The numbers are the API's per-key sums (key_usage.py) for the
period of the key's token budget (a day when it has none), and the key's rules.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from asyncjobs.api import state, submit_and_poll
from asyncjobs.api.errors import ApiError
from asyncjobs.api.key_governance import Governance
from asyncjobs.api.responses import json_response
from asyncjobs.api.virtual_keys import from_headers
from asyncjobs.core.budget_periods import Period

PATH: Final = "/v1/async/usage"


async def usage(request: web.Request) -> web.Response:
    context = request.app[state.CONTEXT]
    submit_and_poll.authorize(request.headers, context.settings)
    key = from_headers(request.headers)
    if key is None:
        raise ApiError(400, "virtual key is required")
    key_id = context.keys.resolve(key)
    if key_id is None:
        raise ApiError(400, "virtual key not found")
    if not context.store.ready():
        raise ApiError(503, "usage is not available yet, retry later")
    rules = context.keys.governance(key_id)
    period = rules.token_budget.period if rules.token_budget else Period.DAY
    spent = context.store.key_usage().summary(key_id, period, context.clock())
    document: dict[str, Any] = {
        "object": "virtual_key.usage",
        "virtual_key_id": key_id,
        **spent,
        "pending_jobs": context.store.usage(key_id).pending_of_key,
        "limits": _limits(rules, context.keys.submits_per_minute(key_id)),
    }
    return json_response(document)


def _limits(rules: Governance, submits_per_minute: int | None) -> dict[str, Any]:
    limits: dict[str, Any] = {}
    if rules.allowed_providers is not None:
        limits["allowed_providers"] = list(rules.allowed_providers)
    if rules.allowed_models is not None:
        limits["allowed_models"] = list(rules.allowed_models)
    if rules.max_pending_jobs is not None:
        limits["max_pending_jobs"] = rules.max_pending_jobs
    if submits_per_minute is not None:
        limits["submits_per_minute"] = submits_per_minute
    if rules.token_budget is not None:
        limits["token_budget"] = rules.token_budget.tokens
    return limits
