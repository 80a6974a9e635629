"""POST /v1/async/<type>/{job_id}/cancel: ask the operator to cancel a job.

Modelled on OpenAI's Batch API (`POST /v1/batches/{id}/cancel`, which answers the batch
as it then is); Bifrost's async API has no cancel. The caller is checked as a poll is
(only the job's virtual key, or anyone past the gateway token for a job without one),
then the route sets the job's cancel annotation (core/cancel.py) and answers the job as
it stands:
- 202 while it is pending or processing: the operator fails it at once, and the next
  poll answers it `failed` with status_code 499 and error type `cancelled`;
- 200 with the job when it is already cancelled (a retried cancel changes nothing);
- 409 when it already completed or failed otherwise: it cannot be cancelled any more.
"""

from __future__ import annotations

from aiohttp import web

from asyncjobs.api import state, submit_and_poll
from asyncjobs.api.errors import ApiError
from asyncjobs.core import cancel
from asyncjobs.core.jobs import JobView
from asyncjobs.core.request_types import REQUEST_TYPES, RequestTypeInfo

SUFFIX = "/cancel"
_NAME = "cancel"


def route_name(info: RequestTypeInfo) -> str:
    return f"{_NAME}:{info.request_type.value}"


_ROUTE_INFO = {route_name(info): info for info in REQUEST_TYPES.values()}


def refusal(view: JobView) -> ApiError | None:
    """Why a job cannot be cancelled (it ended otherwise), or None: a job that is not
    terminal is cancelled, and one already cancelled is answered as it is."""
    if not view.phase.terminal or cancel.is_cancelled(view.status_code, view.error):
        return None
    return ApiError(409, f"job is already {view.phase.api_status} and cannot be cancelled")


async def cancel_job(request: web.Request) -> web.Response:
    info = _ROUTE_INFO[request.match_info.route.name or ""]
    context = request.app[state.CONTEXT]
    submit_and_poll.authorize(request.headers, context.settings)
    view = await submit_and_poll.find_visible(
        context, info.request_type, request.match_info["job_id"], request.headers
    )
    refused = refusal(view)
    if refused is not None:
        raise refused
    if not view.phase.terminal:
        asked = await context.store.request_cancel(view.job_id)
        if asked is None:
            raise ApiError(404, submit_and_poll.NOT_FOUND)
        view = asked
    return web.Response(
        body=submit_and_poll.job_document(view, None),
        status=200 if view.phase.terminal else 202,
        content_type="application/json",
        charset="utf-8",
    )


ROUTES: list[web.AbstractRouteDef] = [
    web.post(f"{info.submit_path}/{{job_id}}{SUFFIX}", cancel_job, name=route_name(info))
    for info in REQUEST_TYPES.values()
]
