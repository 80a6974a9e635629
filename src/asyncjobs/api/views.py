"""The generic submit and poll views: HTTP in and out, the decisions in submit_and_poll.

A route's name carries its request type ("submit:chat_completion"), so one view serves
all eleven submit paths and one serves all eleven poll paths (the route table is in
app.py). A view checks the gateway token, reads what it needs off the request, calls
submit_and_poll and writes the answer; every refusal is an ApiError that the middleware
answers.
"""

from __future__ import annotations

from aiohttp import web

from asyncjobs.api import job_list, request_ids, state, submit_and_poll
from asyncjobs.api.errors import ApiError, body_too_large
from asyncjobs.api.responses import json_response
from asyncjobs.api.submit_and_poll import Submission
from asyncjobs.core.jobs import JobView, Phase
from asyncjobs.core.request_types import REQUEST_TYPES, RequestTypeInfo

_SUBMIT = "submit"
_POLL = "poll"

# A completed poll whose result is larger is written in slices of this size.
STREAM_ABOVE_BYTES = 1024 * 1024
_SLICE_BYTES = 256 * 1024


def submit_route_name(info: RequestTypeInfo) -> str:
    return f"{_SUBMIT}:{info.request_type.value}"


def poll_route_name(info: RequestTypeInfo) -> str:
    return f"{_POLL}:{info.request_type.value}"


# Route name -> request type, built once: parsing the name into a RequestType on every
# request costs more than the rest of a cached poll's own work.
_ROUTE_INFO: dict[str, RequestTypeInfo] = {
    name(info): info
    for info in REQUEST_TYPES.values()
    for name in (submit_route_name, poll_route_name)
}


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, or ApiError(413) beyond `limit`, before anything is written."""
    if request.content_length is not None and request.content_length > limit:
        raise body_too_large(limit)
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise body_too_large(limit) from exc


async def submit(request: web.Request) -> web.Response:
    info = _ROUTE_INFO[request.match_info.route.name or ""]
    context = request.app[state.CONTEXT]
    submit_and_poll.authorize(request.headers, context.settings)
    body = await read_body(request, context.settings.max_request_bytes)
    submission = Submission(
        request.headers, body, request.headers.get("Content-Type", ""), request_ids.of(request)
    )
    job = await submit_and_poll.submit(context, info, submission)
    return json_response(submit_and_poll.accepted_document(job), status=202)


async def list_jobs(request: web.Request) -> web.Response:
    """The caller's jobs, newest first (job_list.py), from this replica's job cache."""
    context = request.app[state.CONTEXT]
    submit_and_poll.authorize(request.headers, context.settings)
    query = job_list.parse_query(request.query)
    scope = job_list.scope_of(context.keys, request.headers, context.settings)
    if not context.store.ready():
        # Before the cache has synced it may miss jobs: a list must not look complete.
        raise ApiError(503, "the job list is not available yet, retry later")
    if scope is None:
        return json_response(job_list.NOTHING)
    key_id = None if isinstance(scope, job_list.Everyone) else scope
    newest = context.store.newest_first(key_id, query.after)
    return json_response(job_list.page(newest, query, context.clock()))


async def poll(request: web.Request) -> web.StreamResponse:
    info = _ROUTE_INFO[request.match_info.route.name or ""]
    context = request.app[state.CONTEXT]
    submit_and_poll.authorize(request.headers, context.settings)
    view, result = await submit_and_poll.poll(
        context, info.request_type, request.match_info["job_id"], request.headers
    )
    if view.phase is Phase.COMPLETED and result is not None and len(result) > STREAM_ABOVE_BYTES:
        return await _stream_result(request, view, result)
    return web.Response(
        body=submit_and_poll.job_document(view, result),
        status=200 if view.phase.terminal else 202,
        content_type="application/json",
        charset="utf-8",
    )


async def _stream_result(request: web.Request, view: JobView, result: bytes) -> web.StreamResponse:
    """A large result written as it is held, in slices: the job document around it is
    small, so nothing is copied. Assembling the whole document (decode, splice, encode)
    cost three copies of the result, and a single write of it a fourth in the socket's
    buffer; bench/poll_memory_bench.py measures both."""
    # The document without the result, then the result spliced in as job_document does.
    head = submit_and_poll.job_document(view, None)[:-1] + b',"result":'
    response = web.StreamResponse(status=200)
    response.content_type = "application/json"
    response.charset = "utf-8"
    response.content_length = len(head) + len(result) + 1
    await response.prepare(request)
    await response.write(head)
    whole = memoryview(result)
    for start in range(0, len(whole), _SLICE_BYTES):
        # Each write waits while the socket's buffer is full, so at most a slice or two
        # of the result is ever copied.
        await response.write(whole[start : start + _SLICE_BYTES])
    await response.write(b"}")
    await response.write_eof()
    return response
