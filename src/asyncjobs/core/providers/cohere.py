"""Cohere's v2 API: chat, embeddings and rerank, translated both ways.

Cohere v2 chat takes OpenAI-like messages but its own parameter names (`p`,
`stop_sequences`, `max_tokens`, upper-case `tool_choice`) and answers one message whose
content is a list of parts with a COMPLETE/MAX_TOKENS/TOOL_CALL finish reason. Embed
takes `texts` with a required `input_type` and answers vectors by type; rerank takes
plain document strings. Error bodies are `{"id", "message"}`, which openai_errors reads.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Set
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asyncjobs.core.providers.base import ProviderRequest
from asyncjobs.core.providers.convert import as_list, embedding_list, refuse
from asyncjobs.core.providers.openai_wire import dump, json_body
from asyncjobs.core.providers.transport import (
    Answer,
    BadRequestBody,
    CommonWire,
    UnsupportedRequestType,
    WireCall,
)
from asyncjobs.core.request_types import RequestType as T

DEFAULT_BASE_URL = "https://api.cohere.com"
PATHS = {T.CHAT_COMPLETION: "/v2/chat", T.EMBEDDING: "/v2/embed", T.RERANK: "/v2/rerank"}
SUPPORTED: frozenset[T] = frozenset(PATHS)
# Embed v3+ models require an input type; documents are the common case for a gateway.
DEFAULT_INPUT_TYPE = "search_document"

FINISH_REASONS = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "MAX_TOKENS": "length",
    "TOOL_CALL": "tool_calls",
}
_CHAT_RENAMED = {"top_p": "p", "stop": "stop_sequences", "max_completion_tokens": "max_tokens"}
_CHAT_DROPPED = {
    "user", "store", "metadata", "service_tier", "stream", "stream_options", "n", "logprobs",
    "parallel_tool_calls", "reasoning_effort",
}  # fmt: skip


def _messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise BadRequestBody("messages is required for chat completion")
    converted = []
    for message in messages:
        if not isinstance(message, dict):
            raise BadRequestBody("invalid request format: messages must be objects")
        role = "system" if message.get("role") == "developer" else message.get("role")
        if role not in ("system", "user", "assistant", "tool"):
            raise BadRequestBody(f"invalid request format: message role {role!r} is not supported")
        entry = {k: v for k, v in message.items() if k not in ("name", "refusal")}
        entry["role"] = role
        if role == "assistant" and entry.get("content") is None:
            entry.pop("content", None)
        converted.append(entry)
    return converted


def chat_request(body: dict[str, Any], model: str) -> dict[str, Any]:
    refuse(body, "cohere", n=(1, None), logprobs=(False, None))
    out = {k: v for k, v in body.items() if k not in _CHAT_DROPPED}
    if "max_completion_tokens" in out:
        out.pop("max_tokens", None)
    for openai_name, cohere_name in _CHAT_RENAMED.items():
        if openai_name in out:
            out[cohere_name] = out.pop(openai_name)
    if "stop_sequences" in out:
        out["stop_sequences"] = as_list(out["stop_sequences"])
    out["messages"] = _messages(body.get("messages"))
    choice = out.pop("tool_choice", None)
    if choice in ("required", "none"):
        out["tool_choice"] = choice.upper()
    elif choice not in (None, "auto"):
        raise BadRequestBody(f"invalid request format: tool_choice {choice!r} is not supported")
    response_format = out.pop("response_format", None)
    if isinstance(response_format, dict) and response_format.get("type") != "text":
        schema = (response_format.get("json_schema") or {}).get("schema")
        out["response_format"] = {
            "type": "json_object",
            **({"json_schema": schema} if schema else {}),
        }
    out["model"] = model
    return out


def chat_answer(answer: dict[str, Any], model: str, created: int) -> dict[str, Any]:
    message = answer.get("message") or {}
    text = "".join(
        part.get("text", "") for part in message.get("content") or [] if part.get("type") == "text"
    )
    calls = message.get("tool_calls") or []
    reply: dict[str, Any] = {
        "role": "assistant",
        "content": text if text or not calls else None,
        "refusal": None,
    }
    if calls:
        reply["tool_calls"] = [
            {"id": c.get("id"), "type": "function", "function": c.get("function") or {}}
            for c in calls
        ]
    tokens = (answer.get("usage") or {}).get("tokens") or {}
    prompt, completion = int(tokens.get("input_tokens") or 0), int(tokens.get("output_tokens") or 0)
    return {
        "id": answer.get("id"),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": reply,
                "finish_reason": FINISH_REASONS.get(answer.get("finish_reason") or "", "stop"),
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def embed_request(body: dict[str, Any], model: str) -> dict[str, Any]:
    raw = body.get("input")
    given = raw if isinstance(raw, list) else [raw]
    texts = [text for text in given if isinstance(text, str)]
    if not texts or len(texts) != len(given):
        raise BadRequestBody("invalid request format: cohere embeds strings only, not token arrays")
    out: dict[str, Any] = {
        "model": model,
        "texts": texts,
        "input_type": body.get("input_type") or DEFAULT_INPUT_TYPE,
        "embedding_types": ["float"],
    }
    if body.get("dimensions") is not None:
        out["output_dimension"] = body["dimensions"]
    if body.get("truncate") is not None:
        out["truncate"] = body["truncate"]
    return out


def embed_answer(answer: dict[str, Any], model: str, encoding_format: Any) -> dict[str, Any]:
    vectors = (answer.get("embeddings") or {}).get("float") or []
    result = embedding_list(vectors, model, encoding_format)
    billed = ((answer.get("meta") or {}).get("billed_units") or {}).get("input_tokens") or 0
    result["usage"] = {"prompt_tokens": int(billed), "total_tokens": int(billed)}
    return result


def rerank_request(body: dict[str, Any], model: str) -> dict[str, Any]:
    documents = [
        d.get("text") if isinstance(d, dict) else d for d in as_list(body.get("documents"))
    ]
    if not documents or not all(isinstance(d, str) for d in documents):
        raise BadRequestBody("invalid request format: documents must be texts")
    out: dict[str, Any] = {"model": model, "query": body.get("query"), "documents": documents}
    for name in ("top_n", "max_tokens_per_doc"):
        if body.get(name) is not None:
            out[name] = body[name]
    return out


def rerank_answer(
    answer: dict[str, Any], sent: dict[str, Any], return_documents: bool
) -> dict[str, Any]:
    results = []
    for result in answer.get("results") or []:
        entry = {"index": result["index"], "relevance_score": result["relevance_score"]}
        if return_documents:
            entry["document"] = {"text": sent["documents"][result["index"]]}
        results.append(entry)
    units = ((answer.get("meta") or {}).get("billed_units") or {}).get("search_units")
    out: dict[str, Any] = {"id": answer.get("id"), "model": sent["model"], "results": results}
    if units is not None:
        out["usage"] = {"search_units": units}
    return out


@dataclass(frozen=True)
class CohereWire(CommonWire):
    base_url: str = DEFAULT_BASE_URL
    supported: Set[T] = SUPPORTED

    def build(self, request: ProviderRequest) -> WireCall:
        path = PATHS.get(request.request_type)
        if path is None or request.request_type not in self.supported:
            raise UnsupportedRequestType(request.request_type)
        body, model = json_body(request), request.model
        decode: Callable[[Answer, datetime], dict[str, Any]]
        # Partials of module-level functions, so a call built in the CPU worker process
        # can be sent back to the loop.
        if request.request_type is T.CHAT_COMPLETION:
            sent = chat_request(body, model)
            decode = functools.partial(_decode_chat, model)
        elif request.request_type is T.EMBEDDING:
            sent = embed_request(body, model)
            decode = functools.partial(_decode_embed, model, body.get("encoding_format"))
        else:
            sent = rerank_request(body, model)
            decode = functools.partial(_decode_rerank, sent, bool(body.get("return_documents")))

        return WireCall(
            url=self.base_url.rstrip("/") + path,
            body=dump(sent),
            content_type="application/json",
            decode=decode,
        )


def _decode_chat(model: str, answer: Answer, now: datetime) -> dict[str, Any]:
    return chat_answer(answer.json_object(), model, int(now.timestamp()))


def _decode_embed(
    model: str, encoding_format: Any, answer: Answer, now: datetime
) -> dict[str, Any]:
    return embed_answer(answer.json_object(), model, encoding_format)


def _decode_rerank(
    sent: dict[str, Any], return_documents: bool, answer: Answer, now: datetime
) -> dict[str, Any]:
    return rerank_answer(answer.json_object(), sent, return_documents)
