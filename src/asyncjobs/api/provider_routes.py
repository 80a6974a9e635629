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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web

from asyncjobs.api import jobs_api, state
from asyncjobs.api.responses import dumps, json_response
from asyncjobs.api.validation import Rejected, split_model, validate_json_fields
from asyncjobs.core.jobs import JobView, Phase, parse_time
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
    pending: Callable[[JobView, str | None], dict[str, Any]]
    completed: Callable[[JobView, bytes], dict[str, Any]]
    error: Callable[[int, str, dict[str, Any] | None], dict[str, Any]]


# --- OpenAI Responses ----------------------------------------------------------------------


def _unix(text: str) -> int:
    return int(parse_time(text).timestamp()) if text else int(datetime.now().timestamp())


def _openai_pending(view: JobView, model: str | None) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": view.job_id,
        "object": "response",
        "created_at": _unix(view.created_at),
        "status": "in_progress" if view.phase is Phase.PROCESSING else "queued",
        "output": [],
    }
    if model:
        document["model"] = model
    return document


def _openai_completed(view: JobView, result: bytes) -> dict[str, Any]:
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


def _anthropic_pending(view: JobView, model: str | None) -> dict[str, Any]:
    return anthropic_messages.empty_message(view.job_id, model)


def _anthropic_completed(view: JobView, result: bytes) -> dict[str, Any]:
    return anthropic_messages.answer_as_message(json.loads(result), view.job_id)


def _anthropic_error(status: int, message: str, stored: dict[str, Any] | None) -> dict[str, Any]:
    inner = (stored or {}).get("error") or {}
    return {
        "type": "error",
        "error": {
            "type": _ANTHROPIC_ERROR_TYPES.get(status, "api_error"),
            "message": inner.get("message") or message,
        },
    }


OPENAI = Dialect(
    "openai", RequestType.RESPONSES, dict, _openai_pending, _openai_completed, _openai_error
)
ANTHROPIC = Dialect(
    "anthropic",
    RequestType.CHAT_COMPLETION,
    anthropic_messages.request_as_chat,
    _anthropic_pending,
    _anthropic_completed,
    _anthropic_error,
)
_ROUTES = {"/openai/v1/responses": OPENAI, "/anthropic/v1/messages": ANTHROPIC}


def _qualified(model: Any, dialect: Dialect, providers: frozenset[str]) -> Any:
    """SDKs send bare model names; on a provider's route that provider is implied."""
    if isinstance(model, str) and model and split_model(model, providers) is None:
        return f"{dialect.provider}/{model}"
    return model


async def provider_async(request: web.Request) -> web.Response:
    dialect = _ROUTES[request.match_info.route.resource.canonical]  # type: ignore[union-attr]

    def error(status: int, message: str, stored: dict[str, Any] | None = None) -> web.Response:
        return json_response(dialect.error(status, message, stored), status=status)

    try:
        jobs_api.authorize(request)
        job_id = request.headers.get(ASYNC_ID_HEADER, "").strip()
        if job_id:
            return await _retrieve(request, dialect, job_id, error)
        if not request.headers.get(ASYNC_HEADER, "").strip():
            return error(400, SYNC_REFUSED)
        return await _submit(request, dialect, error)
    except jobs_api.Refusal as refusal:
        return error(refusal.status, refusal.message)


async def _submit(
    request: web.Request, dialect: Dialect, error: Callable[..., web.Response]
) -> web.Response:
    raw = await jobs_api.read_body(request)
    providers = request.app[state.PROVIDERS].current
    try:
        body = json.loads(raw)
        if not isinstance(body, dict):
            raise BadRequestBody("invalid request format: expected a JSON object")
        body["model"] = _qualified(body.get("model"), dialect, providers)
        fields = dialect.to_job_body(body)
    except BadRequestBody as exc:  # its message is the client's answer
        return error(400, str(exc))
    except (ValueError, UnicodeDecodeError) as exc:
        return error(400, f"invalid request format: {exc}")
    outcome = validate_json_fields(dialect.request_type, fields, providers)
    if isinstance(outcome, Rejected):
        return error(400, outcome.message)
    key_id = jobs_api.submit_key_id(request)
    stored = dumps(fields).encode()
    spec = await jobs_api.create_job(
        request, dialect.request_type, outcome, stored, "application/json", key_id
    )
    view = JobView(
        job_id=spec.job_id,
        uid="",
        request_type=spec.request_type.value,
        phase=Phase.PENDING,
        created_at=jobs_api.accepted_document(spec)["created_at"],
        virtual_key_id=key_id,
    )
    return json_response(dialect.pending(view, outcome.model))


async def _retrieve(
    request: web.Request, dialect: Dialect, job_id: str, error: Callable[..., web.Response]
) -> web.Response:
    view = await jobs_api.visible_job(request, job_id, dialect.request_type)
    # A completed job whose result is unreadable comes back failed, so this goes first.
    view, result = await jobs_api.job_result(request, view)
    if view.phase is Phase.FAILED:
        status = jobs_api.status_code(view)
        return error(status, "job failed", view.error)
    if result is None:
        return json_response(dialect.pending(view, None))
    return json_response(dialect.completed(view, result))


def add_routes(app: web.Application) -> None:
    for path in _ROUTES:
        app.router.add_post(path, provider_async)
