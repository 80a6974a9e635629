"""Bifrost's `/api/webhooks` management routes, over AsyncJobWebhook objects.

A convenience beside kubectl: both manage the same objects (webhook_store.py). Every
route needs the gateway token, and only that: endpoints belong to the install, not to a
virtual key. An endpoint is addressed by its id (the object's uid) or by its name. The
signing secret is answered twice in its life, by the create and by a rotation.

The API never signs or sends a delivery (it cannot read signing secrets): `test` and
`redeliver` are requests to the operator, made with an annotation (on the endpoint, on
the job) as a cancel is; `test` waits a little for the operator's answer on the
endpoint's status. `deliveries` reads the endpoint's delivery log (core/webhook_log.py).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Mapping

from aiohttp import web

from asyncjobs.api import state
from asyncjobs.api.errors import ApiError
from asyncjobs.api.responses import json_response
from asyncjobs.api.settings import Settings
from asyncjobs.api.views import read_body
from asyncjobs.api.virtual_keys import header_text, token_matches
from asyncjobs.core import webhook_endpoints, webhook_log
from asyncjobs.core.kube import KubeObject
from asyncjobs.core.webhook_endpoints import EndpointFields, InvalidEndpoint

# Endpoint definitions are small; a larger body is refused before it is parsed.
MAX_BODY_BYTES = 64 * 1024
NOT_FOUND = "webhook endpoint not found"
DELIVERY_NOT_FOUND = "webhook delivery not found"
JOB_EXPIRED = "the job of this delivery has expired: its notification cannot be sent again"
# A test waits for the operator's answer this long beyond the endpoint's own timeout
# (the operator looks for test requests every 2 s), at most TEST_WAIT_MAX_SECONDS so a
# client's request does not hang, then is answered 202 (pending) with its id: its outcome
# is then in the delivery log.
TEST_WAIT_MARGIN_SECONDS = 5.0
TEST_WAIT_MAX_SECONDS = 15.0
_TEST_POLL_SECONDS = 0.2


def _authorize(headers: Mapping[str, str], settings: Settings) -> None:
    if settings.gateway_token is None:
        return
    scheme, _, value = header_text(headers, "Authorization").partition(" ")
    bearer = value.strip() if scheme.lower() == "bearer" else None
    if token_matches(bearer, settings.gateway_token):
        return
    if token_matches(header_text(headers, "x-api-key") or None, settings.gateway_token):
        return
    raise ApiError(401, "Unauthorized")


async def _context(request: web.Request) -> state.ApiContext:
    context = request.app[state.CONTEXT]
    _authorize(request.headers, context.settings)
    return context


async def _fields(request: web.Request) -> tuple[dict[str, object], EndpointFields]:
    raw = await read_body(request, MAX_BODY_BYTES)
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "request body must be valid JSON") from exc
    try:
        fields = webhook_endpoints.parse_fields(body)
    except InvalidEndpoint as exc:
        raise ApiError(400, str(exc)) from exc
    return body, fields


async def _endpoint(context: state.ApiContext, reference: str) -> KubeObject:
    """The endpoint `reference` names, by id or by name; ApiError(404) otherwise."""
    for webhook in await context.webhooks.list():
        if webhook["metadata"].get("uid") == reference:
            return webhook
    found = await context.webhooks.find(reference)
    if found is None:
        raise ApiError(404, NOT_FOUND)
    return found


async def list_endpoints(request: web.Request) -> web.Response:
    context = await _context(request)
    documents = [webhook_endpoints.endpoint_document(w) for w in await context.webhooks.list()]
    return json_response({"webhooks": documents, "count": len(documents)})


async def create_endpoint(request: web.Request) -> web.Response:
    context = await _context(request)
    body, fields = await _fields(request)
    name = body.get("name")
    if not isinstance(name, str) or not webhook_endpoints.valid_name(name):
        raise ApiError(
            400,
            "name is required: lowercase letters, digits and '-', at most 63, "
            "starting and ending with a letter or digit",
        )
    webhook, secret = await context.webhooks.create(name, fields)
    document = webhook_endpoints.endpoint_document(webhook)
    document["secret"] = secret
    return json_response(document, status=201)


async def get_endpoint(request: web.Request) -> web.Response:
    context = await _context(request)
    webhook = await _endpoint(context, request.match_info["id"])
    return json_response(webhook_endpoints.endpoint_document(webhook))


async def replace_endpoint(request: web.Request) -> web.Response:
    context = await _context(request)
    webhook = await _endpoint(context, request.match_info["id"])
    body, fields = await _fields(request)
    name = body.get("name")
    if name is not None and name != webhook["metadata"]["name"]:
        raise ApiError(400, "name cannot be changed: create a new endpoint instead")
    replaced = await context.webhooks.replace(webhook, fields)
    return json_response(webhook_endpoints.endpoint_document(replaced))


async def delete_endpoint(request: web.Request) -> web.Response:
    context = await _context(request)
    webhook = await _endpoint(context, request.match_info["id"])
    await context.webhooks.delete(webhook)
    return json_response({"id": webhook["metadata"].get("uid", ""), "deleted": True})


async def rotate_secret(request: web.Request) -> web.Response:
    context = await _context(request)
    webhook = await _endpoint(context, request.match_info["id"])
    secret = await context.webhooks.rotate(webhook)
    return json_response({"id": webhook["metadata"].get("uid", ""), "secret": secret})


async def test_endpoint(request: web.Request) -> web.Response:
    context = await _context(request)
    webhook = await _endpoint(context, request.match_info["id"])
    test_id = f"test-{secrets.token_hex(8)}"
    await context.webhooks.ask_test(webhook, test_id)
    endpoint_timeout = float(webhook.get("spec", {}).get("timeoutSeconds", 10))
    timeout = min(endpoint_timeout + TEST_WAIT_MARGIN_SECONDS, TEST_WAIT_MAX_SECONDS)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(_TEST_POLL_SECONDS)
        found = await context.webhooks.find(webhook["metadata"]["name"])
        answer = (found or {}).get("status", {}).get("lastTest") or {}
        if answer.get("id") == test_id:
            return json_response(test_document(answer))
    return json_response({"id": test_id, "status": "pending"}, status=202)


def test_document(answer: Mapping[str, object]) -> dict[str, object]:
    return {
        "id": answer.get("id"),
        "status": "delivered" if answer.get("delivered") else "failed",
        "status_code": answer.get("statusCode"),
        "latency_ms": answer.get("latencyMs", 0),
        "error": answer.get("error"),
        "attempted_at": answer.get("time"),
    }


async def list_deliveries(request: web.Request) -> web.Response:
    context = await _context(request)
    webhook = await _endpoint(context, request.match_info["id"])
    logged = webhook.get("status", {}).get("deliveries", [])
    documents = [webhook_log.delivery_document(d) for d in reversed(logged)]
    return json_response({"deliveries": documents, "count": len(documents)})


async def redeliver(request: web.Request) -> web.Response:
    context = await _context(request)
    webhook = await _endpoint(context, request.match_info["id"])
    delivery_id = request.match_info["delivery_id"]
    delivery = webhook_log.find(webhook.get("status", {}), delivery_id)
    if delivery is None:
        raise ApiError(404, DELIVERY_NOT_FOUND)
    job_id = str(delivery.get("jobId", ""))
    if not job_id:
        raise ApiError(400, "a test event cannot be redelivered: send another test")
    if not await context.webhooks.ask_redelivery(job_id, secrets.token_hex(8)):
        raise ApiError(404, JOB_EXPIRED)
    return json_response({"id": delivery_id, "job_id": job_id, "status": "pending"}, status=202)


ROUTES: list[web.AbstractRouteDef] = [
    web.get("/api/webhooks", list_endpoints),
    web.post("/api/webhooks", create_endpoint),
    web.get("/api/webhooks/{id}", get_endpoint),
    web.put("/api/webhooks/{id}", replace_endpoint),
    web.delete("/api/webhooks/{id}", delete_endpoint),
    web.post("/api/webhooks/{id}/rotate-secret", rotate_secret),
    web.post("/api/webhooks/{id}/test", test_endpoint),
    web.get("/api/webhooks/{id}/deliveries", list_deliveries),
    web.post("/api/webhooks/{id}/deliveries/{delivery_id}/redeliver", redeliver),
]
