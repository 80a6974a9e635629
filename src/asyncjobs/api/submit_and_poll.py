"""Submit and poll as plain functions: what every async route decides, without HTTP.

The generic views and the provider-compatible routes differ only in how they shape
their answers, so the decisions live here once: the gateway token, the submit's virtual
key, creating a job, finding a job the caller may see with its result, and the job
document (spec §3). The inputs are plain values (a headers mapping, the body bytes and
its content type, a job id) and the ApiContext, which holds the store, the key ring and
the clock; tests call these functions with a fake store and a fixed clock, no server.
Every refusal is an ApiError, answered by the middleware.
"""

from __future__ import annotations

import functools
import json
import re
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from asyncjobs.api import idempotency, quota
from asyncjobs.api.errors import ApiError
from asyncjobs.api.key_governance import governance_decision
from asyncjobs.api.responses import dumps
from asyncjobs.api.settings import Settings
from asyncjobs.api.state import ApiContext
from asyncjobs.api.store import JobExists
from asyncjobs.api.validation import Accepted, Rejected, max_json_values, result_ttl, validate
from asyncjobs.api.virtual_keys import KeyRing, from_headers, header_text, token_matches
from asyncjobs.api.webhook_opt_in import resolve_webhook
from asyncjobs.core import fair_share, large_bytes, payloads
from asyncjobs.core.jobs import JobSpec, JobView, Phase, format_time
from asyncjobs.core.request_types import BodyKind, RequestType, RequestTypeInfo

TTL_HEADER = "x-bf-async-job-result-ttl"
NOT_FOUND = "job not found or expired"

# Job ids are lowercase UUID v4; anything else cannot name a job and is not looked up.
_JOB_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


@dataclass(frozen=True)
class Submission:
    """A submit as it came off the wire."""

    # Looked up case-insensitively, as aiohttp's request headers are.
    headers: Mapping[str, str]
    body: bytes
    content_type: str
    # The request's id (request_ids.py), recorded on the job it creates.
    request_id: str


# Bifrost's answer when governance requires a virtual key (enforce_governance_header) and
# a request carries none: its type, status and message, word for word.
VIRTUAL_KEY_REQUIRED = "virtual key is required. Provide a virtual key via the x-bf-vk header."
VIRTUAL_KEY_REQUIRED_TYPE = "virtual_key_required"


def authorize(headers: Mapping[str, str], settings: Settings) -> None:
    """Checks what a request must carry before anything else is read: the gateway token
    (ApiError(401) `Unauthorized`) and, when required, some virtual key (ApiError(401)
    as Bifrost answers it). Whether the key is known is decided later, after the body
    is validated (spec §4 order), but a client with no key at all costs no body read.
    """
    if settings.gateway_token is not None and not _has_token(headers, settings.gateway_token):
        raise ApiError(401, "Unauthorized")
    if settings.require_virtual_key and from_headers(headers) is None:
        raise ApiError(401, VIRTUAL_KEY_REQUIRED, outer_type=VIRTUAL_KEY_REQUIRED_TYPE)


def _has_token(headers: Mapping[str, str], gateway_token: str) -> bool:
    scheme, _, value = header_text(headers, "Authorization").partition(" ")
    bearer = value.strip() if scheme.lower() == "bearer" else None
    if token_matches(bearer, gateway_token):
        return True
    return token_matches(header_text(headers, "x-api-key") or None, gateway_token)


# --- submit ----------------------------------------------------------------------------------


async def submit(
    context: ApiContext, info: RequestTypeInfo, submission: Submission
) -> JobSpec | JobView:
    """Validates a submit to the generic route and creates its job (or finds the job of
    its Idempotency-Key); ApiError otherwise."""
    arguments = (
        info,
        submission.body,
        submission.content_type,
        context.providers.current,
        max_json_values(context.settings.max_request_bytes),
    )
    # Multipart parsing is bounded by its part limits and stays on the loop; a JSON body
    # with many values is parsed in the body worker.
    if info.body is BodyKind.MULTIPART:
        outcome = validate(*arguments)
    else:
        outcome = await context.body_worker.run(submission.body, validate, *arguments)
    if isinstance(outcome, Rejected):
        raise ApiError(400, outcome.message)
    # JSON bodies are stored as application/json whatever the client labelled them;
    # multipart keeps its Content-Type, whose boundary is needed to parse it again.
    stored_type = submission.content_type if info.body is BodyKind.MULTIPART else "application/json"
    return await create_job(
        context, info.request_type, outcome, submission, submission.body, stored_type
    )


async def create_job(
    context: ApiContext,
    request_type: RequestType,
    accepted: Accepted,
    submission: Submission,
    body: bytes,
    content_type: str,
) -> JobView | JobSpec:
    """Creates the job of a valid submit and stores its body; with an Idempotency-Key,
    the job that key already made from this request instead (its JobView).

    The virtual key is looked up only now, once the body is valid, as Bifrost does
    (spec §4 order): an unknown key is ApiError(400), the key reused for another
    request ApiError(409), a full quota or a key over its submit rate ApiError(429), a
    failing store ApiError(5xx). A replay is answered before the quota and rate: it
    creates nothing.
    """
    headers = submission.headers
    idempotency_key = idempotency.key_of(headers)
    priority = _priority(headers)
    key_id = _submit_key_id(context.keys, headers)
    webhook_id = await resolve_webhook(context.webhooks, headers)
    settings = context.settings
    job_id = str(uuid.uuid4())
    # A request is stored under its job's name; an idempotent one also under a number
    # of its own attempt, so a retry of a half-failed submit never meets (nor, on
    # failure, removes) the bytes of an earlier attempt at the same name.
    attempt = None
    # Hashed once, off the loop for a large body (a 25 MiB one takes 45-100 ms of a core).
    sha256 = await large_bytes.sha256_hex(body)
    if idempotency_key is not None:
        names = idempotency.job_names(
            key_id, idempotency_key, context.clock(), settings.idempotency_window
        )
        found = await _idempotent_job(context, names, key_id, request_type, sha256)
        if found is not None:
            return found
        job_id = names[0]
        attempt = secrets.randbits(48)
    if key_id is not None:
        _govern(context, key_id, accepted, len(body))
    else:
        full = quota.refusal(context.store.usage(), settings.quota, len(body))
        if full is not None:
            raise full
    spec = JobSpec(
        job_id=job_id,
        request_type=request_type,
        model=accepted.model,
        fallbacks=accepted.fallbacks,
        result_ttl_seconds=result_ttl(
            headers.get(TTL_HEADER), settings.default_result_ttl, settings.max_result_ttl
        ),
        request_ref=payloads.describe(
            job_id,
            "request",
            body,
            content_type,
            call=attempt,
            backend=settings.payload_backend,
            sha256=sha256,
        ),
        submitted_at=context.clock(),
        webhook_id=webhook_id,
        virtual_key_id=key_id,
        # What the operator's fair share needs, copied so it never reads the keys.
        key_weight=context.keys.weight(key_id) if key_id is not None else None,
        priority=priority,
        request_id=submission.request_id,
        idempotent=attempt is not None,
    )
    try:
        await context.store.create(spec, body)
    except JobExists as exists:
        # Another replica (or a concurrent retry) created the key's job first.
        if not idempotency.replays(exists.view, key_id, request_type.value, sha256):
            raise idempotency.conflict() from exists
        return exists.view
    context.metrics.submitted.labels(request_type.value).inc()
    return spec


def _govern(context: ApiContext, key_id: str, accepted: Accepted, body_size: int) -> None:
    """A keyed submit's checks, in Bifrost's order (providers and models, then limits),
    all before anything is written: ApiError when one refuses, counted by reason. The
    submit rate comes last because it spends a submit; nothing else spends anything."""
    settings = context.settings
    rules = context.keys.governance(key_id)
    now = context.clock()
    models = (accepted.model, *accepted.fallbacks)
    blocked = governance_decision(replace(rules, token_budget=None), models, 0, now)
    if blocked is not None:
        _refused(context, key_id, blocked)
    limits = settings.quota
    if rules.max_pending_jobs is not None:
        limits = replace(limits, max_pending_per_key=rules.max_pending_jobs or None)
    full = quota.refusal(context.store.usage(key_id), limits, body_size, with_key=True)
    if full is not None:
        backlog = full.message.startswith("backlog full")
        _refused(context, key_id, full, "backlog_full" if backlog else "quota_exceeded")
    budget = rules.token_budget
    if budget is not None:
        used = context.store.key_usage().tokens_used(key_id, budget.period, now)
        over = governance_decision(rules, models, used, now)
        if over is not None:
            _refused(context, key_id, over)
    rate = quota.key_rate(
        settings.quota.submit_rate_per_key, context.keys.submits_per_minute(key_id)
    )
    limited = context.submit_rates.take(key_id, rate, now.timestamp())
    if limited is not None:
        _refused(context, key_id, limited)


def _refused(context: ApiContext, key_id: str, error: ApiError, reason: str | None = None) -> None:
    """Counts a keyed submit's refusal by its reason (Bifrost's decision type), raises it."""
    label = reason or error.error.outer_type or "refused"
    context.metrics.key_refusals.labels(key_id, label).inc()
    raise error


async def _idempotent_job(
    context: ApiContext,
    names: list[str],
    key_id: str | None,
    request_type: RequestType,
    sha256: str,
) -> JobView | None:
    """The job an Idempotency-Key already made within its window, if any; ApiError(409)
    when that job was made from another request."""
    now = context.clock()
    for name in names:
        view = await context.store.find(name)
        if view is None or not idempotency.within_window(
            view, now, context.settings.idempotency_window
        ):
            continue
        if not idempotency.replays(view, key_id, request_type.value, sha256):
            raise idempotency.conflict()
        return view
    return None


def _priority(headers: Mapping[str, str]) -> int | None:
    """The submit's x-asyncjobs-priority; ApiError(400) for anything but a whole number
    in range (core/fair_share.py)."""
    try:
        return fair_share.parse_priority(headers.get(fair_share.PRIORITY_HEADER))
    except ValueError as invalid:
        raise ApiError(400, str(invalid)) from None


def _submit_key_id(keys: KeyRing, headers: Mapping[str, str]) -> str | None:
    key = from_headers(headers)
    if key is None:
        return None
    key_id = keys.resolve(key)
    if key_id is None:
        raise ApiError(400, "virtual key not found")
    return key_id


def accepted_document(job: JobSpec | JobView) -> dict[str, Any]:
    """The submit's answer: the new job, or (an idempotent replay) the key's job as it
    now stands, whose status may have moved on."""
    if isinstance(job, JobView):
        rest = {"status": job.phase.api_status, "created_at": job.created_at}
        return _with_request_id(job.job_id, job.request_id, rest)
    return _with_request_id(
        job.job_id,
        job.request_id,
        {"status": Phase.PENDING.api_status, "created_at": format_time(job.submitted_at)},
    )


def _with_request_id(job_id: str, request_id: str | None, rest: dict[str, Any]) -> dict[str, Any]:
    """`id`, then `request_id` when the job has one (as Bifrost orders them), then the rest."""
    document: dict[str, Any] = {"id": job_id}
    if request_id:
        document["request_id"] = request_id
    document.update(rest)
    return document


# --- poll ------------------------------------------------------------------------------------


async def poll(
    context: ApiContext, request_type: RequestType, job_id: str, headers: Mapping[str, str]
) -> tuple[JobView, bytes | None]:
    """The job as a poll answers it, and its stored result while it is completed (or,
    failed, the provider's whole error, which its status keeps only a summary of).

    A job this caller may not see on this path family is ApiError(404) with the
    contract's message. A completed job whose result is missing or corrupt comes back
    failed (and is counted); one deleted or expired meanwhile is ApiError(404).
    """
    view = await find_visible(context, request_type, job_id, headers)
    if view.phase is Phase.FAILED and view.result_ref is not None:
        return view, await _stored_error(context, view)
    if view.phase is not Phase.COMPLETED or view.result_ref is None:
        return view, None
    # The job is found, visible and completed: only now may the cache stand in for the
    # read of the result its reference names (immutable bytes, checked on first read).
    cached = context.results.get(view.result_ref)
    if cached is not None:
        return view, cached
    finished = await context.store.result(view)
    if finished is None:
        raise ApiError(404, NOT_FOUND)
    if finished.unreadable is not None:
        context.metrics.results_unreadable.labels(finished.unreadable.value).inc()
    elif finished.result is not None and finished.view.result_ref is not None:
        context.results.put(finished.view.result_ref, finished.result)
    return finished.view, finished.result


async def find_visible(
    context: ApiContext, request_type: RequestType, job_id: str, headers: Mapping[str, str]
) -> JobView:
    """The job, when this caller may see it on this path family (a poll's key check);
    otherwise ApiError(404) with the contract's message."""
    view = await context.store.find(job_id) if _JOB_ID.fullmatch(job_id) else None
    if view is None or view.expired(context.clock()):
        raise ApiError(404, NOT_FOUND)
    if view.virtual_key_id is not None or context.settings.require_virtual_key:
        # With keys required, even a job submitted without one (before keys were
        # required) is shown only to a caller whose key is known.
        _check_poll_key(context.keys, headers, view.virtual_key_id)
    if view.request_type != request_type.value:
        raise ApiError(404, "operation type mismatch")
    return view


async def _stored_error(context: ApiContext, view: JobView) -> bytes | None:
    """The provider's error as the operator stored it for the job's submitter (who alone
    passes the key check above); immutable like a result, so the cache keeps it too."""
    assert view.result_ref is not None
    cached = context.results.get(view.result_ref)
    if cached is not None:
        return cached
    stored = await context.store.stored_error(view)
    if stored is not None:
        context.results.put(view.result_ref, stored)
    return stored


def failed_error(view: JobView, stored: bytes | None) -> dict[str, Any] | None:
    """The error a failed job answers with: the stored provider error when it could be
    read (the status holds only its summary), else the status's own."""
    if stored is not None:
        try:
            error = json.loads(stored)
        except ValueError:
            error = None
        if isinstance(error, dict):
            return error
    return view.error


def _check_poll_key(keys: KeyRing, headers: Mapping[str, str], job_key_id: str | None) -> None:
    key = from_headers(headers)
    if key is None:
        raise ApiError(404, "virtual key is required")
    key_id = keys.resolve(key)
    if key_id is None:
        raise ApiError(404, "virtual key not found")
    if job_key_id is not None and key_id != job_key_id:
        raise ApiError(404, "virtual key mismatch")


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
        return _running_document(
            view.job_id, view.request_id, view.phase.api_status, view.created_at
        )
    document = _with_request_id(
        view.job_id,
        view.request_id,
        {"status": view.phase.api_status, "created_at": view.created_at},
    )
    if view.completed_at:
        document["completed_at"] = view.completed_at
    if view.expires_at is not None:
        document["expires_at"] = format_time(view.expires_at)
    document["status_code"] = status_code(view)
    if view.phase is Phase.FAILED:
        document["error"] = failed_error(view, result) or {
            "is_bifrost_error": False,
            "status_code": status_code(view),
            "error": {"message": "job failed"},
            "extra_fields": {},
        }
    text = dumps(document)
    if result is not None and view.phase is Phase.COMPLETED:
        text = f'{text[:-1]},"result":{result.decode()}}}'
    return text.encode()


# A job that is not finished polls as the same three fields thousands of times; the
# memo is keyed by all of them, so it can never answer stale, and the bound keeps it
# small however many jobs pass through.
@functools.lru_cache(maxsize=16_384)
def _running_document(job_id: str, request_id: str | None, status: str, created_at: str) -> bytes:
    return dumps(
        _with_request_id(job_id, request_id, {"status": status, "created_at": created_at})
    ).encode()
