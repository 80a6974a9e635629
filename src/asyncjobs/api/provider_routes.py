"""Provider-compatible async routes (spec §1, last paragraph).

`POST /openai/v1/responses` and `POST /anthropic/v1/messages` take async jobs through
headers: a non-empty `x-bf-async` submits, `x-bf-async-id: <job_id>` retrieves, and
every answer is in that provider's own shape so an OpenAI or Anthropic SDK can parse
it. Only these async forms are served; a plain synchronous call is refused.

OpenAI Responses bodies are stored as they are (a `responses` job). Anthropic Messages
bodies are translated to a chat completion on submit (a `chat_completion` job, which
the operator already knows how to run) and the chat result is translated back into a
Message on retrieval; content blocks without a chat equivalent are refused.
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
from asyncjobs.core.request_types import RequestType

ASYNC_HEADER = "x-bf-async"
ASYNC_ID_HEADER = "x-bf-async-id"
SYNC_REFUSED = (
    "only async requests are served here: send x-bf-async to submit a job "
    "or x-bf-async-id to retrieve one"
)


class TranslationError(ValueError):
    """A provider body that cannot become a job (the message is the client's answer)."""


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
_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}
# Messages parameters with the same meaning under another name in chat completions.
_RENAMED = {"stop_sequences": "stop"}
_COPIED = ("model", "fallbacks", "max_tokens", "temperature", "top_p", "stream")


def _text_of(blocks: Any, where: str) -> str:
    if isinstance(blocks, str):
        return blocks
    if not isinstance(blocks, list):
        raise TranslationError(f"{where} must be a string or a list of content blocks")
    texts = []
    for block in blocks:
        if not isinstance(block, dict) or block.get("type") != "text":
            raise TranslationError(f"{where} accepts only text blocks")
        texts.append(str(block.get("text", "")))
    return "\n".join(texts)


def _chat_part(block: Any) -> dict[str, Any]:
    if not isinstance(block, dict):
        raise TranslationError("content blocks must be objects")
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": str(block.get("text", ""))}
    if kind == "image":
        source = block.get("source") or {}
        if source.get("type") == "base64":
            url = f"data:{source.get('media_type', '')};base64,{source.get('data', '')}"
        elif source.get("type") == "url":
            url = str(source.get("url", ""))
        else:
            raise TranslationError("image blocks need a base64 or url source")
        return {"type": "image_url", "image_url": {"url": url}}
    raise TranslationError(f"content block type {kind!r} is not supported for async messages")


def _anthropic_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    chat: dict[str, Any] = {key: body[key] for key in _COPIED if key in body}
    for source, target in _RENAMED.items():
        if source in body:
            chat[target] = body[source]
    messages: list[dict[str, Any]] = []
    if body.get("system"):
        messages.append({"role": "system", "content": _text_of(body["system"], "system")})
    raw_messages = body.get("messages")
    if raw_messages is not None and not isinstance(raw_messages, list):
        raise TranslationError("messages must be a list")
    for message in raw_messages or []:
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise TranslationError("each message needs role user or assistant")
        content = message.get("content")
        if isinstance(content, list):
            content = [_chat_part(block) for block in content]
        elif not isinstance(content, str):
            raise TranslationError("message content must be a string or a list of blocks")
        messages.append({"role": message["role"], "content": content})
    chat["messages"] = messages
    user = (body.get("metadata") or {}).get("user_id")
    if user:
        chat["user"] = user
    return chat


def _anthropic_message(job_id: str, model: str | None) -> dict[str, Any]:
    return {
        "id": job_id,
        "type": "message",
        "role": "assistant",
        "model": model or "",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0},
    }


def _anthropic_pending(view: JobView, model: str | None) -> dict[str, Any]:
    return _anthropic_message(view.job_id, model)


def _anthropic_completed(view: JobView, result: bytes) -> dict[str, Any]:
    chat = json.loads(result)
    message = _anthropic_message(view.job_id, chat.get("model"))
    choice = (chat.get("choices") or [{}])[0]
    text = (choice.get("message") or {}).get("content")
    if text:
        message["content"] = [{"type": "text", "text": text}]
    message["stop_reason"] = _STOP_REASONS.get(choice.get("finish_reason") or "", "end_turn")
    usage = chat.get("usage") or {}
    message["usage"] = {
        "input_tokens": usage.get("prompt_tokens", 0),
        "output_tokens": usage.get("completion_tokens", 0),
    }
    return message


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
    _anthropic_to_chat,
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
            raise TranslationError("expected a JSON object")
        body["model"] = _qualified(body.get("model"), dialect, providers)
        fields = dialect.to_job_body(body)
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
