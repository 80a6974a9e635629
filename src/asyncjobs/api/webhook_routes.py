"""Bifrost's `/api/webhooks` management routes, over AsyncJobWebhook objects.

A convenience beside kubectl: both manage the same objects (webhook_store.py). Every
route needs the gateway token, and only that: endpoints belong to the install, not to a
virtual key. An endpoint is addressed by its id (the object's uid) or by its name. The
signing secret is answered twice in its life, by the create and by a rotation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from aiohttp import web

from asyncjobs.api import state
from asyncjobs.api.errors import ApiError
from asyncjobs.api.responses import json_response
from asyncjobs.api.settings import Settings
from asyncjobs.api.views import read_body
from asyncjobs.api.virtual_keys import header_text, token_matches
from asyncjobs.core import webhook_endpoints
from asyncjobs.core.kube import KubeObject
from asyncjobs.core.webhook_endpoints import EndpointFields, InvalidEndpoint

# Endpoint definitions are small; a larger body is refused before it is parsed.
MAX_BODY_BYTES = 64 * 1024
NOT_FOUND = "webhook endpoint not found"


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


ROUTES: list[web.AbstractRouteDef] = [
    web.get("/api/webhooks", list_endpoints),
    web.post("/api/webhooks", create_endpoint),
    web.get("/api/webhooks/{id}", get_endpoint),
    web.put("/api/webhooks/{id}", replace_endpoint),
    web.delete("/api/webhooks/{id}", delete_endpoint),
    web.post("/api/webhooks/{id}/rotate-secret", rotate_secret),
]
