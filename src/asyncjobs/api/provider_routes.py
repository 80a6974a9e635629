"""Provider-compatible async routes (spec §1, last paragraph).

`POST /openai/v1/responses` and `POST /anthropic/v1/messages` take async jobs through
headers: a non-empty `x-bf-async` submits, `x-bf-async-id: <job_id>` retrieves, and
every answer is in that provider's own shape so an OpenAI or Anthropic SDK can parse
it. Only these async forms are served; a plain synchronous call is refused.

OpenAI Responses bodies are stored as they are (a `responses` job). Anthropic Messages
bodies are translated to a chat completion on submit (a `chat_completion` job, which
the operator already knows how to run) and the chat result is translated back into a
Message on retrieval; content blocks without a chat equivalent are refused. Both
translations live in core.providers.anthropic_messages, beside the operator's
translation of chat to Messages and back.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web

from asyncjobs.api import request_ids, state, submit_and_poll
from asyncjobs.api.errors import ApiError
from asyncjobs.api.responses import dumps, json_response
from asyncjobs.api.state import ApiContext
from asyncjobs.api.submit_and_poll import Submission
from asyncjobs.api.validation import (
    Accepted,
    FormatError,
    Rejected,
    max_json_values,
    parse_object,
    split_model,
    validate_json_fields,
)
from asyncjobs.api.views import read_body
from asyncjobs.core.jobs import JobSpec, JobView, Phase, parse_time
from asyncjobs.core.providers import anthropic_messages
from asyncjobs.core.providers.transport import BadRequestBody
from asyncjobs.core.request_types import RequestType

ASYNC_HEADER = "x-bf-async"
ASYNC_ID_HEADER = "x-bf-async-id"
SYNC_REFUSED = (
    "only async requests are served here: send x-bf-async to submit a job "
    "or x-bf-async-id to retrieve one"
)


@dataclass(frozen=True)
class Dialect:
    """How one provider's route differs: its job type, its shapes and its errors."""

    provider: str
    request_type: RequestType
    to_job_body: Callable[[dict[str, Any]], dict[str, Any]]
    # (job id, phase, created, model or None) -> the answer while the job runs
    pending: Callable[[str, Phase, datetime, str | None], dict[str, Any]]
    # (job id, stored result) -> the answer once it completed
    completed: Callable[[str, bytes], dict[str, Any]]
    # (status, message, the failed job's stored BifrostError or None) -> the error body
    error: Callable[[int, str, dict[str, Any] | None], dict[str, Any]]

    def refusal(self, refused: ApiError) -> dict[str, Any]:
        """A refusal (ApiError) in this provider's error shape; the middleware asks."""
        return self.error(refused.status, refused.message, None)


# --- OpenAI Responses ----------------------------------------------------------------------


def _openai_pending(
    job_id: str, phase: Phase, created: datetime, model: str | None
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": job_id,
        "object": "response",
        "created_at": int(created.timestamp()),
        "status": "in_progress" if phase is Phase.PROCESSING else "queued",
        "output": [],
    }
    if model:
        document["model"] = model
    return document


def _openai_completed(_job_id: str, result: bytes) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(result)
    return document


def _openai_error(status: int, message: str, stored: dict[str, Any] | None) -> dict[str, Any]:
    inner = (stored or {}).get("error") or {}
    error_type = inner.get("type") or (stored or {}).get("type")
    return {
        "error": {
            "message": inner.get("message") or message,
            "type": error_type or ("invalid_request_error" if status < 500 else "server_error"),
            "param": inner.get("param"),
            "code": inner.get("code"),
        }
    }


# --- Anthropic Messages --------------------------------------------------------------------

_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def _anthropic_pending(
    job_id: str, _phase: Phase, _created: datetime, model: str | None
) -> dict[str, Any]:
    return anthropic_messages.empty_message(job_id, model)


def _anthropic_completed(job_id: str, result: bytes) -> dict[str, Any]:
    return anthropic_messages.answer_as_message(json.loads(result), job_id)


def _anthropic_error(status: int, message: str, stored: dict[str, Any] | None) -> dict[str, Any]:
    inner = (stored or {}).get("error") or {}
    return {
        "type": "error",
        "error": {
            "type": _ANTHROPIC_ERROR_TYPES.get(status, "api_error"),
            "message": inner.get("message") or message,
        },
    }


def _anthropic_request_as_chat(body: dict[str, Any]) -> dict[str, Any]:
    """request_as_chat, after the shapes it reads without checking: an object where
    Messages has one (`metadata`, an image block's `source`), else a 400."""
    if not isinstance(body.get("metadata") or {}, dict):
        raise BadRequestBody("invalid request format: metadata must be an object")
    for turn in body.get("messages") or []:
        content = turn.get("content") if isinstance(turn, dict) else None
        for block in content if isinstance(content, list) else []:
            if (
                isinstance(block, dict)
                and block.get("type") == "image"
                and not isinstance(block.get("source") or {}, dict)
            ):
                raise BadRequestBody(
                    "invalid request format: image blocks need a base64 or url source"
                )
    return anthropic_messages.request_as_chat(body)


OPENAI = Dialect(
    "openai", RequestType.RESPONSES, dict, _openai_pending, _openai_completed, _openai_error
)
ANTHROPIC = Dialect(
    "anthropic",
    RequestType.CHAT_COMPLETION,
    _anthropic_request_as_chat,
    _anthropic_pending,
    _anthropic_completed,
    _anthropic_error,
)
# app.py routes each path to `handler(dialect)` and answers refusals there in `dialect.refusal`.
DIALECTS = {"/openai/v1/responses": OPENAI, "/anthropic/v1/messages": ANTHROPIC}


def _qualified(model: Any, dialect: Dialect, providers: frozenset[str]) -> Any:
    """SDKs send bare model names; on a provider's route that provider is implied."""
    if isinstance(model, str) and model and split_model(model, providers) is None:
        return f"{dialect.provider}/{model}"
    return model


def handler(dialect: Dialect) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The view of one provider's route: x-bf-async-id retrieves, x-bf-async submits."""

    async def provider_async(request: web.Request) -> web.Response:
        context = request.app[state.CONTEXT]
        submit_and_poll.authorize(request.headers, context.settings)
        job_id = request.headers.get(ASYNC_ID_HEADER, "").strip()
        if job_id:
            status, document = await retrieve(context, dialect, job_id, request.headers)
            return json_response(document, status=status)
        if not request.headers.get(ASYNC_HEADER, "").strip():
            raise ApiError(400, SYNC_REFUSED)
        body = await read_body(request, context.settings.max_request_bytes)
        submission = Submission(
            request.headers, body, request.headers.get("Content-Type", ""), request_ids.of(request)
        )
        job = await submit(context, dialect, submission)
        if isinstance(job, JobView):
            # An idempotent replay: the key's job as it now stands, as a retrieve answers.
            status, document = await retrieve(context, dialect, job.job_id, request.headers)
            return json_response(document, status=status)
        return json_response(
            with_request_id(
                dialect.pending(job.job_id, Phase.PENDING, job.submitted_at, job.model),
                job.request_id,
            )
        )

    return provider_async


def with_request_id(document: dict[str, Any], request_id: str | None) -> dict[str, Any]:
    """A pending job's answer with `request_id` right after `id`, as the generic routes
    answer it. Only the documents this API builds carry it: a completed job's answer is
    the provider's own body and an error the provider's error shape, both unchanged."""
    if not request_id:
        return document
    ordered = {"id": document["id"], "request_id": request_id}
    ordered.update(document)
    return ordered


async def submit(
    context: ApiContext, dialect: Dialect, submission: Submission
) -> JobSpec | JobView:
    """Translates the provider's request body into a job and creates it; ApiError(400)
    for a body the job cannot be made from."""
    prepared = await context.body_worker.run(
        submission.body,
        prepare,
        dialect,
        submission.body,
        context.providers.current,
        max_json_values(context.settings.max_request_bytes),
    )
    if isinstance(prepared, Rejected):
        raise ApiError(400, prepared.message)
    outcome, job_body = prepared
    return await submit_and_poll.create_job(
        context,
        dialect.request_type,
        outcome,
        submission,
        job_body,
        "application/json",
    )


def prepare(
    dialect: Dialect, body: bytes, providers: frozenset[str], max_values: int
) -> tuple[Accepted, bytes] | Rejected:
    """The job a provider's request body makes (its decision and the body to store), or
    the 400 message; pure, so a large body can be prepared in the body worker."""
    try:
        fields = parse_object(body, max_values)
        fields["model"] = _qualified(fields.get("model"), dialect, providers)
        job_fields = dialect.to_job_body(fields)
    except BadRequestBody as exc:  # its message is the client's answer
        return Rejected(str(exc))
    except FormatError as exc:
        return Rejected(f"invalid request format: {exc}")
    outcome = validate_json_fields(dialect.request_type, job_fields, providers)
    if isinstance(outcome, Rejected):
        return outcome
    return outcome, _encoded(job_fields)


def _encoded(fields: dict[str, Any]) -> bytes:
    """The translated body as UTF-8 JSON. JSON may escape half a surrogate pair, which
    UTF-8 cannot carry: such a body keeps every non-ASCII character escaped instead, as
    valid JSON that reads back the same (Bifrost's decoder makes each half U+FFFD)."""
    try:
        return dumps(fields).encode()
    except UnicodeEncodeError:
        return json.dumps(fields, separators=(",", ":")).encode()


async def retrieve(
    context: ApiContext, dialect: Dialect, job_id: str, headers: Mapping[str, str]
) -> tuple[int, dict[str, Any]]:
    """The status and body that answer a retrieve in the provider's shape."""
    view, result = await submit_and_poll.poll(context, dialect.request_type, job_id, headers)
    # A completed job whose result is unreadable comes back failed, so this goes first.
    if view.phase is Phase.FAILED:
        status = submit_and_poll.status_code(view)
        return status, dialect.error(
            status, "job failed", submit_and_poll.failed_error(view, result)
        )
    if result is None:
        created = parse_time(view.created_at) if view.created_at else context.clock()
        return 200, with_request_id(
            dialect.pending(view.job_id, view.phase, created, None), view.request_id
        )
    return 200, dialect.completed(view.job_id, result)
