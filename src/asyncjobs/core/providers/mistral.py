"""Mistral: chat, embeddings and OCR on La Plateforme's OpenAI-like API.

Mistral copies OpenAI's paths and shapes but refuses fields it does not know (a 422),
and spells a few differently: `max_tokens` (not max_completion_tokens), `random_seed`,
`output_dimension`. So bodies are rewritten here rather than sent through openai_wire
untouched. Answers are already in OpenAI's shape (OCR's is the one the spec uses).
Errors are either OpenAI-like with the fields at the top level, or FastAPI's 422
`{"detail": [{"loc", "msg", "type"}]}`, whose first entry names the param.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asyncjobs.core.providers import failures, openai_errors
from asyncjobs.core.providers.base import ProviderError, ProviderRequest
from asyncjobs.core.providers.convert import refuse
from asyncjobs.core.providers.openai_wire import decoder, dump, json_body
from asyncjobs.core.providers.transport import (
    Answer,
    CommonWire,
    UnsupportedRequestType,
    WireCall,
)
from asyncjobs.core.request_types import RequestType as T

DEFAULT_BASE_URL = "https://api.mistral.ai/v1"
PATHS = {T.CHAT_COMPLETION: "/chat/completions", T.EMBEDDING: "/embeddings", T.OCR: "/ocr"}
SUPPORTED: frozenset[T] = frozenset(PATHS)

# OpenAI fields Mistral has no use for; their usual values change nothing, so they go.
_DROPPED = ("user", "store", "metadata", "service_tier", "stream_options", "logprobs")
# OpenAI spelling -> Mistral spelling.
_RENAMED = {
    T.CHAT_COMPLETION: {"max_completion_tokens": "max_tokens", "seed": "random_seed"},
    T.EMBEDDING: {"dimensions": "output_dimension"},
    T.OCR: {},
}


def mistral_body(request_type: T, body: dict[str, Any], model: str) -> dict[str, Any]:
    if request_type is T.CHAT_COMPLETION:
        refuse(body, "mistral", logprobs=(False, None))
    out = {k: v for k, v in body.items() if k not in _DROPPED}
    for openai_name, mistral_name in _RENAMED[request_type].items():
        if openai_name in out:
            # Overwrites: an explicit max_completion_tokens wins over max_tokens, as on OpenAI.
            out[mistral_name] = out.pop(openai_name)
    if request_type is T.EMBEDDING and out.get("encoding_format") not in (None, "float"):
        refuse(out, "mistral", encoding_format=("float",))
    out["model"] = model
    return out


def error_from_answer(answer: Answer, now: datetime) -> ProviderError:
    parsed = failures.json_object(answer.body)
    detail = parsed.get("detail") if parsed else None
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        first = detail[0]
        location = [str(part) for part in first.get("loc") or [] if part != "body"]
        return failures.from_parts(
            answer.status,
            answer.headers,
            now,
            message=first.get("msg"),
            error_type=first.get("type"),
            param=".".join(location) or None,
        )
    return openai_errors.error_from_response(answer.status, answer.headers, answer.body, now)


@dataclass(frozen=True)
class MistralWire(CommonWire):
    base_url: str = DEFAULT_BASE_URL
    supported: Set[T] = SUPPORTED

    def build(self, request: ProviderRequest) -> WireCall:
        path = PATHS.get(request.request_type)
        if path is None or request.request_type not in self.supported:
            raise UnsupportedRequestType(request.request_type)
        body = mistral_body(request.request_type, json_body(request), request.model)
        return WireCall(
            url=self.base_url.rstrip("/") + path,
            body=dump(body),
            content_type="application/json",
            decode=decoder(request.request_type),
        )

    def error(self, answer: Answer, now: datetime) -> ProviderError:
        return error_from_answer(answer, now)
