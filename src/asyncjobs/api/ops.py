"""Operational endpoints: liveness, readiness, Bifrost's /health, metrics and the OpenAPI
document.

/readyz stays 503 until the job cache and the virtual-key ring have applied their
first list, so a Service sends no polls to a replica that would answer 404 for jobs
it simply has not loaded yet. /health answers the same facts the way Bifrost does, for
clients and load balancers configured for a Bifrost gateway.
"""

from __future__ import annotations

import json
from importlib import resources

import yaml
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from asyncjobs.api import state
from asyncjobs.api.errors import ApiError
from asyncjobs.api.openapi_document import encoded_for
from asyncjobs.api.responses import json_response

# The contract ships inside the package (package data), so an installed API, the image
# included, serves it; api/README.md explains it.
OPENAPI = web.AppKey("openapi", bytes)


async def healthz(_request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    context = request.app[state.CONTEXT]
    jobs_ready = context.store.ready()
    keys_ready = context.keys.synced
    body = {"jobs_synced": jobs_ready, "virtual_keys_synced": keys_ready}
    return json_response(body, status=200 if jobs_ready and keys_ready else 503)


def health_answer(jobs_synced: bool, keys_synced: bool) -> dict[str, object]:
    """Bifrost's /health body when its stores answer (its `db_pings` are pings of the
    stores it depends on; ours are the caches of the Kubernetes API). Raises the 503
    BifrostError Bifrost sends, naming the first store that is not available."""
    if not jobs_synced:
        raise ApiError(503, "job store not available")
    if not keys_synced:
        raise ApiError(503, "virtual key store not available")
    return {"status": "ok", "components": {"db_pings": "ok"}}


async def health(request: web.Request) -> web.Response:
    context = request.app[state.CONTEXT]
    return json_response(health_answer(context.store.ready(), context.keys.synced))


async def metrics(request: web.Request) -> web.Response:
    registry = request.app[state.CONTEXT].metrics.registry
    return web.Response(
        body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def openapi(request: web.Request) -> web.Response:
    document = request.app.get(OPENAPI)
    if document is None:
        raise ApiError(404, "openapi document not available")
    providers = request.app[state.CONTEXT].providers.current
    return web.Response(body=encoded_for(document, providers), content_type="application/json")


def load_openapi() -> bytes | None:
    """The OpenAPI document as JSON bytes, converted once at start."""
    document = resources.files("asyncjobs.api").joinpath("openapi.yaml")
    if not document.is_file():
        return None
    return json.dumps(yaml.safe_load(document.read_text()), separators=(",", ":")).encode()
