"""What every async entry point shares: gateway auth, virtual keys, reading a bounded
body, creating a job, finding a job a caller may see, and the job document (spec §3).

The generic views and the provider-compatible routes differ only in how they shape
their answers, so the decisions live here once and return either a value or the
exact contract error to answer with.
"""

from __future__ import annotations

import functools
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from asyncjobs.api import state
from asyncjobs.api.responses import dumps
from asyncjobs.api.store import StoreUnavailable
from asyncjobs.api.validation import Accepted, result_ttl
from asyncjobs.api.virtual_keys import from_headers, token_matches
from asyncjobs.core import payloads
from asyncjobs.core.jobs import JobSpec, JobView, Phase, format_time
from asyncjobs.core.request_types import RequestType

TTL_HEADER = "x-bf-async-job-result-ttl"
NOT_FOUND = "job not found or expired"

# Job ids are lowercase UUID v4; anything else cannot name a job and is not looked up.
_JOB_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


class Refusal(Exception):
    """The contract error to answer with: a status and a gateway message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def authorize(request: web.Request) -> None:
    """Checks the optional gateway token; raises Refusal(401) without it."""
    expected = request.app[state.SETTINGS].gateway_token
    if expected is None:
        return
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    bearer = value.strip() if scheme.lower() == "bearer" else None
    if token_matches(bearer, expected) or token_matches(request.headers.get("x-api-key"), expected):
        return
    raise Refusal(401, "Unauthorized")


def submit_key_id(request: web.Request) -> str | None:
    """The id of the submit's virtual key; an unknown key refuses the submit (400)."""
    key = from_headers(request.headers)
    if key is None:
        return None
    key_id = request.app[state.KEYS].resolve(key)
    if key_id is None:
        raise Refusal(400, "virtual key not found")
    return key_id


async def read_body(request: web.Request) -> bytes:
    """The whole body, or Refusal(413) beyond the configured limit, before any write."""
    limit = request.app[state.SETTINGS].max_request_bytes
    if request.content_length is not None and request.content_length > limit:
        raise Refusal(413, f"request body exceeds the maximum size of {limit} bytes")
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise Refusal(413, f"request body exceeds the maximum size of {limit} bytes") from exc


async def create_job(
    request: web.Request,
    request_type: RequestType,
    accepted: Accepted,
    body: bytes,
    content_type: str,
    key_id: str | None,
) -> JobSpec:
    """Creates the job and stores its body; Refusal(5xx) when the store fails."""
    settings = request.app[state.SETTINGS]
    job_id = str(uuid.uuid4())
    spec = JobSpec(
        job_id=job_id,
        request_type=request_type,
        model=accepted.model,
        fallbacks=accepted.fallbacks,
        result_ttl_seconds=result_ttl(request.headers.get(TTL_HEADER), settings.default_result_ttl),
        request_ref=payloads.describe(job_id, "request", body, content_type),
        submitted_at=datetime.now(UTC),
        virtual_key_id=key_id,
    )
    try:
        await request.app[state.STORE].create(spec, body)
    except StoreUnavailable as exc:
        raise Refusal(exc.status, exc.message) from exc
    request.app[state.METRICS].submitted.labels(request_type.value).inc()
    return spec


def accepted_document(spec: JobSpec) -> dict[str, Any]:
    return {
        "id": spec.job_id,
        "status": Phase.PENDING.api_status,
        "created_at": format_time(spec.submitted_at),
    }


async def visible_job(request: web.Request, job_id: str, request_type: RequestType) -> JobView:
    """The job if this caller may see it on this path family, else the 404 to answer."""
    view = await _find(request, job_id)
    if view is None or view.expired(datetime.now(UTC)):
        raise Refusal(404, NOT_FOUND)
    if view.virtual_key_id is not None:
        key = from_headers(request.headers)
        if key is None:
            raise Refusal(404, "virtual key is required")
        key_id = request.app[state.KEYS].resolve(key)
        if key_id is None:
            raise Refusal(404, "virtual key not found")
        if key_id != view.virtual_key_id:
            raise Refusal(404, "virtual key mismatch")
    if view.request_type != request_type.value:
        raise Refusal(404, "operation type mismatch")
    return view


async def _find(request: web.Request, job_id: str) -> JobView | None:
    if not _JOB_ID.fullmatch(job_id):
        return None
    try:
        return await request.app[state.STORE].find(job_id)
    except StoreUnavailable as exc:
        raise Refusal(exc.status, exc.message) from exc


async def job_result(request: web.Request, view: JobView) -> tuple[JobView, bytes | None]:
    """The job as a poll answers it, and its stored result while it is completed.

    A completed job whose result is missing or corrupt comes back failed (and is
    counted); one deleted or expired meanwhile is Refusal(404).
    """
    if view.phase is not Phase.COMPLETED or view.result_ref is None:
        return view, None
    try:
        finished = await request.app[state.STORE].result(view)
    except StoreUnavailable as exc:
        raise Refusal(exc.status, exc.message) from exc
    if finished is None:
        raise Refusal(404, NOT_FOUND)
    if finished.unreadable is not None:
        request.app[state.METRICS].results_unreadable.labels(finished.unreadable.value).inc()
    return finished.view, finished.result


def status_code(view: JobView) -> int:
    if view.status_code is not None:
        return view.status_code
    return 200 if view.phase is Phase.COMPLETED else 500


def job_document(view: JobView, result: bytes | None) -> bytes:
    """The job object (spec §3) as UTF-8 JSON, keys omitted when unset.

    The result is spliced in as stored rather than decoded and re-encoded: it is exactly
    the body the synchronous endpoint returned, and it may be megabytes of base64.
    """
    if not view.phase.terminal:
        return _running_document(view.job_id, view.phase.api_status, view.created_at)
    document: dict[str, Any] = {
        "id": view.job_id,
        "status": view.phase.api_status,
        "created_at": view.created_at,
    }
    if view.completed_at:
        document["completed_at"] = view.completed_at
    if view.expires_at is not None:
        document["expires_at"] = format_time(view.expires_at)
    document["status_code"] = status_code(view)
    if view.phase is Phase.FAILED:
        document["error"] = view.error or {
            "is_bifrost_error": False,
            "status_code": status_code(view),
            "error": {"message": "job failed"},
            "extra_fields": {},
        }
    text = dumps(document)
    if result is not None:
        text = f'{text[:-1]},"result":{result.decode()}}}'
    return text.encode()


# A job that is not finished polls as the same three fields thousands of times; the
# memo is keyed by all of them, so it can never answer stale, and the bound keeps it
# small however many jobs pass through.
@functools.lru_cache(maxsize=16_384)
def _running_document(job_id: str, status: str, created_at: str) -> bytes:
    return dumps({"id": job_id, "status": status, "created_at": created_at}).encode()
