"""The generic submit and poll views and the one route table for all request types.

A route's name carries its request type ("submit:chat_completion"), so one view
serves all eleven submit paths and one serves all eleven poll paths.
"""

from __future__ import annotations

from aiohttp import web

from asyncjobs.api import jobs_api, state
from asyncjobs.api.responses import error_response, json_response
from asyncjobs.api.validation import Rejected, validate
from asyncjobs.core.request_types import REQUEST_TYPES, RequestTypeInfo

_SUBMIT = "submit"
_POLL = "poll"

# Route name -> request type, built once: parsing the name into a RequestType on every
# request costs more than the rest of a cached poll's own work.
_ROUTE_INFO: dict[str, RequestTypeInfo] = {
    f"{kind}:{info.request_type.value}": info
    for info in REQUEST_TYPES.values()
    for kind in (_SUBMIT, _POLL)
}


def _route_info(request: web.Request) -> RequestTypeInfo:
    return _ROUTE_INFO[request.match_info.route.name or ""]


async def submit(request: web.Request) -> web.Response:
    info = _route_info(request)
    try:
        jobs_api.authorize(request)
        body = await jobs_api.read_body(request)
        content_type = request.headers.get("Content-Type", "")
        providers = request.app[state.PROVIDERS].current
        outcome = validate(info, body, content_type, providers)
        if isinstance(outcome, Rejected):
            return error_response(400, outcome.message)
        # Bifrost looks the key up only once the body is valid (spec §4 order).
        key_id = jobs_api.submit_key_id(request)
        # JSON bodies are stored as application/json whatever the client labelled them;
        # multipart keeps its Content-Type, whose boundary is needed to parse it again.
        stored_type = content_type if info.body.value == "multipart" else "application/json"
        spec = await jobs_api.create_job(
            request, info.request_type, outcome, body, stored_type, key_id
        )
    except jobs_api.Refusal as refusal:
        return error_response(refusal.status, refusal.message)
    return json_response(jobs_api.accepted_document(spec), status=202)


async def poll(request: web.Request) -> web.Response:
    info = _route_info(request)
    try:
        jobs_api.authorize(request)
        view = await jobs_api.visible_job(request, request.match_info["job_id"], info.request_type)
        view, result = await jobs_api.job_result(request, view)
    except jobs_api.Refusal as refusal:
        return error_response(refusal.status, refusal.message)
    return web.Response(
        body=jobs_api.job_document(view, result),
        status=200 if view.phase.terminal else 202,
        content_type="application/json",
        charset="utf-8",
    )


def add_routes(app: web.Application) -> None:
    for info in REQUEST_TYPES.values():
        name = info.request_type.value
        app.router.add_post(info.submit_path, submit, name=f"{_SUBMIT}:{name}")
        app.router.add_get(f"{info.submit_path}/{{job_id}}", poll, name=f"{_POLL}:{name}")
