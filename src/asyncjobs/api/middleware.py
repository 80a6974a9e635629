"""The one middleware: every error as BifrostError JSON, then metrics and an access log.

Errors are mapped in one place so no view can leak a stack trace or an HTML error page
to a client: an ApiError becomes its BifrostError (or, on a provider-compatible route,
that provider's error shape), an aiohttp HTTP error (404, 405, 413) a BifrostError with
its status (a 405 keeps its Allow header), and anything else a plain 500 whose trace goes
to the log only. The access log records who asked for what and how it went (method,
route, path, status, size, duration, and the request id of request_ids.py, which is
checked to hold no user content) and never another header value or a body: request and
result content are user data.

Both jobs share one middleware because every layer costs a coroutine and a call on each
request, and polls are answered in well under a millisecond of CPU.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import Counter, Histogram

from asyncjobs.api import request_ids
from asyncjobs.api.errors import ApiError, body_too_large
from asyncjobs.api.metrics import UNMATCHED_ROUTE, ApiMetrics
from asyncjobs.api.responses import dumps, json_response

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


class RequestMetrics:
    """The request counter and latency histogram, with their children looked up once.

    prometheus_client's `labels()` validates, stringifies and locks on every call; the
    label sets are few (route templates x methods x statuses), so each child is kept.
    """

    def __init__(self, metrics: ApiMetrics) -> None:
        self._metrics = metrics
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self._metrics.requests.labels(route, method, str(status)),
                self._metrics.latency.labels(route, method),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


# Renders an ApiError in a route's own error shape, by route template.
ErrorShape = Callable[[ApiError], dict[str, Any]]


def request_middleware(
    metrics: ApiMetrics, max_request_bytes: int, error_shapes: Mapping[str, ErrorShape]
) -> Middleware:
    """`error_shapes` gives the routes whose ApiErrors are not answered as BifrostErrors."""
    recorder = RequestMetrics(metrics)

    @web.middleware
    async def serve(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        route = route_template(request)
        request_id = request_ids.of_request(request.headers)
        request[request_ids.KEY] = request_id
        try:
            response = await handler(request)
        except ApiError as exc:
            shape = error_shapes.get(route)
            response = _answer(exc) if shape is None else json_response(shape(exc), exc.status)
            response.headers.update(exc.headers)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = _answer(_http_error(exc, max_request_bytes))
            if isinstance(exc, web.HTTPMethodNotAllowed):
                # RFC 9110 requires a 405 to say which methods the resource has.
                response.headers["Allow"] = allow_header(exc.allowed_methods)
        except Exception:
            # The trace goes to our log only; the client gets a plain 500.
            log.exception("unhandled error on %s %s", request.method, route)
            response = _answer(ApiError(500, "internal server error"))
        elapsed = time.perf_counter() - started
        recorder.observe(route, request.method, response.status, elapsed)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(_access_line(request, route, response, elapsed, request_id))
        return response

    return serve


def allow_header(methods: Iterable[str]) -> str:
    """The Allow value for a 405, in a stable order."""
    return ", ".join(sorted(methods))


def _answer(error: ApiError) -> web.Response:
    return json_response(error.error.to_dict(), error.status)


def _http_error(exc: web.HTTPException, max_request_bytes: int) -> ApiError:
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return body_too_large(max_request_bytes)
    return ApiError(exc.status, _HTTP_MESSAGES.get(exc.status, exc.reason.lower()))


def _access_line(
    request: web.Request,
    route: str,
    response: web.StreamResponse,
    elapsed: float,
    request_id: str,
) -> str:
    return dumps(
        {
            "request_id": request_id,
            "method": request.method,
            "route": route,
            "path": request.path,
            "status": response.status,
            "bytes": _size(response),
            "ms": round(elapsed * 1000, 3),
            "remote": request.remote,
        }
    )


def _size(response: web.StreamResponse) -> int | None:
    if isinstance(response, web.Response) and isinstance(response.body, bytes):
        return len(response.body)
    return None
