"""Google Gemini (the Generative Language API): chat and embeddings, translated both ways.

Chat goes to `models/{model}:generateContent` (gemini_chat translates); one embedding
input goes to `:embedContent`, several to `:batchEmbedContents`, and either answer
becomes OpenAI's embedding list. The key travels in `x-goog-api-key`, never in the URL,
so it cannot leak into access logs. Google's error body
(`{"error": {"code", "message", "status", "details"}}`) gives the type (`status`, e.g.
RESOURCE_EXHAUSTED), the code (the ErrorInfo reason, e.g. API_KEY_INVALID), the param
(the first field violation) and a retry delay (RetryInfo). An invalid key is a 400
there, so key rotation looks at the reason too. The model name is part of the path, so
only names shaped like Google's (`<id>`, `models/<id>`, `tunedModels/<id>`) are sent
(model_names).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Set
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asyncjobs.core.providers import failures, gemini_chat, model_names
from asyncjobs.core.providers.base import ProviderError, ProviderRequest
from asyncjobs.core.providers.convert import embedding_list
from asyncjobs.core.providers.openai_wire import dump, json_body
from asyncjobs.core.providers.transport import (
    Answer,
    BadRequestBody,
    UnsupportedRequestType,
    WireCall,
    rejects_key_by_status,
)
from asyncjobs.core.request_types import RequestType as T

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"
SUPPORTED: frozenset[T] = frozenset({T.CHAT_COMPLETION, T.EMBEDDING})
# ErrorInfo reasons that mean "this key", so another key may do better.
KEY_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED", "API_KEY_SERVICE_BLOCKED"})


def model_path(model: str) -> str:
    # Tuned models are addressed as tunedModels/...; plain names live under models/. A
    # name that could leave that path is refused (model_names).
    return model_names.gemini_resource(model)


def embedding_request(body: dict[str, Any], model: str) -> tuple[str, dict[str, Any]]:
    """(method, body) for an OpenAI embeddings body: one input embeds, several batch."""
    raw = body.get("input")
    given = raw if isinstance(raw, list) else [raw]
    texts = [text for text in given if isinstance(text, str)]
    if not texts or len(texts) != len(given):
        raise BadRequestBody("invalid request format: gemini embeds strings only, not token arrays")
    options: dict[str, Any] = {}
    if body.get("dimensions") is not None:
        options["outputDimensionality"] = body["dimensions"]
    task_type = body.get("task_type", body.get("taskType"))
    if task_type is not None:
        options["taskType"] = task_type
    name = model_path(model)

    def one(text: str) -> dict[str, Any]:
        return {"model": name, "content": {"parts": [{"text": text}]}, **options}

    if not isinstance(raw, list):
        return "embedContent", one(texts[0])
    return "batchEmbedContents", {"requests": [one(text) for text in texts]}


def embedding_answer(answer: dict[str, Any], model: str, encoding_format: Any) -> dict[str, Any]:
    found = [answer["embedding"]] if "embedding" in answer else answer.get("embeddings") or []
    return embedding_list([vector["values"] for vector in found], model, encoding_format)


def error_from_answer(answer: Answer, now: datetime) -> ProviderError:
    parsed = failures.json_object(answer.body) or {}
    error = parsed.get("error")
    if not isinstance(error, dict):
        message = None if parsed else failures.raw_text(answer.body)
        return failures.from_parts(answer.status, answer.headers, now, message=message)
    reason = param = delay = None
    for detail in error.get("details") or []:
        kind = str(detail.get("@type", ""))
        if kind.endswith("ErrorInfo"):
            reason = detail.get("reason")
        elif kind.endswith("BadRequest"):
            violations = detail.get("fieldViolations") or [{}]
            param = violations[0].get("field")
        elif kind.endswith("RetryInfo"):
            delay = failures.number(str(detail.get("retryDelay", "")).removesuffix("s"))
    return failures.from_parts(
        answer.status,
        answer.headers,
        now,
        message=error.get("message"),
        error_type=error.get("status"),
        code=reason,
        param=param,
        retry_after=delay,
    )


@dataclass(frozen=True)
class GeminiWire:
    base_url: str = DEFAULT_BASE_URL
    supported: Set[T] = SUPPORTED

    def build(self, request: ProviderRequest) -> WireCall:
        if request.request_type not in self.supported or request.request_type not in SUPPORTED:
            raise UnsupportedRequestType(request.request_type)
        model = request.model
        path = model_path(model)  # first: a refused name fails before the body is read
        body = json_body(request)
        # Partials of module-level functions, so a call built in the CPU worker process
        # can be sent back to the loop.
        decode: Callable[[Answer, datetime], dict[str, Any]]
        if request.request_type is T.CHAT_COMPLETION:
            method, sent = "generateContent", gemini_chat.chat_request(body)
            decode = functools.partial(_decode_chat, model)
        else:
            method, sent = embedding_request(body, model)
            decode = functools.partial(_decode_embedding, model, body.get("encoding_format"))

        return WireCall(
            url=f"{self.base_url.rstrip('/')}/{path}:{method}",
            body=dump(sent),
            content_type="application/json",
            decode=decode,
        )

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"x-goog-api-key": key}

    def error(self, answer: Answer, now: datetime) -> ProviderError:
        return error_from_answer(answer, now)

    def rejects_key(self, error: ProviderError) -> bool:
        return rejects_key_by_status(error) or error.code in KEY_REASONS


def _decode_chat(model: str, answer: Answer, now: datetime) -> dict[str, Any]:
    return gemini_chat.chat_answer(answer.json_object(), model, int(now.timestamp()))


def _decode_embedding(
    model: str, encoding_format: Any, answer: Answer, now: datetime
) -> dict[str, Any]:
    return embedding_answer(answer.json_object(), model, encoding_format)
