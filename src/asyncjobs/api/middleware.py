"""Middlewares: every error as BifrostError JSON, and an access log plus metrics.

Errors are mapped in one place so no view can leak a stack trace or an HTML error page
to a client. The access log records who asked for what and how it went (method, route,
path, status, size, duration) and never a header value or a body: request and result
content are user data.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from asyncjobs.api.metrics import UNMATCHED_ROUTE, ApiMetrics
from asyncjobs.api.responses import dumps, error_response

access_log = logging.getLogger("asyncjobs.api.access")
log = logging.getLogger(__name__)

_HTTP_MESSAGES = {
    404: "not found",
    405: "method not allowed",
    413: "request body too large",
}


def route_template(request: web.Request) -> str:
    """The matched route's template (e.g. /v1/async/ocr/{job_id}), bounded for labels."""
    resource = request.match_info.route.resource
    if resource is None:
        return UNMATCHED_ROUTE
    return resource.canonical


def error_middleware(max_request_bytes: int) -> Middleware:
    @web.middleware
    async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return error_response(
                413, f"request body exceeds the maximum size of {max_request_bytes} bytes"
            )
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error_response(exc.status, _HTTP_MESSAGES.get(exc.status, exc.reason.lower()))
        except Exception:
            # The trace goes to our log only; the client gets a plain 500.
            log.exception("unhandled error on %s %s", request.method, route_template(request))
            return error_response(500, "internal server error")

    return errors_as_json


def access_middleware(metrics: ApiMetrics) -> Middleware:
    @web.middleware
    async def access(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        response = await handler(request)
        elapsed = time.perf_counter() - started
        route = route_template(request)
        metrics.requests.labels(route, request.method, str(response.status)).inc()
        metrics.latency.labels(route, request.method).observe(elapsed)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(
                dumps(
                    {
                        "method": request.method,
                        "route": route,
                        "path": request.path,
                        "status": response.status,
                        "bytes": _size(response),
                        "ms": round(elapsed * 1000, 3),
                        "remote": request.remote,
                    }
                )
            )
        return response

    return access


def _size(response: web.StreamResponse) -> int | None:
    if isinstance(response, web.Response) and isinstance(response.body, bytes):
        return len(response.body)
    return None
