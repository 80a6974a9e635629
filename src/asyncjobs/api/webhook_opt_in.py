"""The submit header that asks for a completion webhook: `x-bf-async-webhook: <name>`.

Resolved before a job is created, so a name that is unknown or disabled answers 400 with
Bifrost's messages and creates nothing. The job records the endpoint's id (its uid), not
its name: an endpoint deleted and created again under the same name is another endpoint,
and the old jobs' notifications are not sent to it. Whether the endpoint subscribes to
the job's event is decided when the job finishes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from asyncjobs.api.errors import ApiError
from asyncjobs.api.webhook_store import WebhookStore
from asyncjobs.core import webhook_endpoints

WEBHOOK_HEADER = "x-bf-async-webhook"
_REFUSED = "failed to resolve webhook endpoint: invalid webhook endpoint reference: "


async def resolve_webhook(store: WebhookStore, headers: Mapping[str, str]) -> str | None:
    """The id of the endpoint the submit names, None when it names none."""
    name = headers.get(WEBHOOK_HEADER, "").strip()
    if not name:
        return None
    # Quoted as Go's %q would, so a name with quotes or controls stays one string.
    quoted = json.dumps(name)
    webhook = await store.find(name)
    if webhook is None:
        raise ApiError(400, f"{_REFUSED}unknown webhook endpoint with name {quoted}")
    if webhook_endpoints.is_disabled(webhook):
        raise ApiError(400, f"{_REFUSED}webhook endpoint {quoted} is disabled")
    uid: str = webhook["metadata"]["uid"]
    return uid
