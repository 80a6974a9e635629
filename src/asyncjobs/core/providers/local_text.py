"""The local provider's answers for the text request types, as pure functions.

Completions, chat, responses, embeddings and rerank each get a body in OpenAI's shape
(or, for rerank, the shape OpenAI-compatible rerank servers share), computed only from
the request and a seed derived from it: the same request always gets the same answer,
which makes the offline system testable end to end. Token counts are word counts — an
approximation that keeps `usage` plausible without a tokenizer.

A small request can ask for a large answer (many inputs times many dimensions, many
prompts times `n`, a long prompt echoed into every choice), so each answer is checked
against the provider's `LocalLimits` before and while it is built: past a bound it
fails as a non-retryable 400 that names the option, without building the rest.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

from asyncjobs.core.provider_config import LocalLimits
from asyncjobs.core.providers.base import ProviderError

DEFAULT_EMBEDDING_DIMENSIONS = 128
# Estimated JSON bytes per embedding value: a float's repr and ", " (~22), or base64 (~5.3).
_FLOAT_JSON_BYTES = 24
_FLOAT_BASE64_BYTES = 6
# The keys, index and punctuation around each choice, result or vector.
_ITEM_OVERHEAD_BYTES = 160


def over_bound(message: str, param: str | None = None) -> ProviderError:
    """The error for a request whose answer would pass one of the local provider's bounds."""
    return ProviderError(
        message,
        status_code=400,
        retryable=False,
        error_type="invalid_request_error",
        code="local_output_limit",
        param=param,
    )


class OutputBudget:
    """Counts the bytes an answer will take while it is built, and stops at the bound."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.spent = 0

    def spend(self, size: int) -> None:
        self.spent += size
        if self.spent > self.limit:
            raise over_bound(
                f"the answer grows past {self.limit} bytes; the local provider answers"
                f" at most {self.limit} bytes (option localLimits.maxOutputBytes)"
            )


@dataclass(frozen=True)
class Context:
    """What every answer needs besides the body: the model, a seed and a timestamp."""

    model: str
    seed: bytes  # sha256 of the model and the request body
    created: int  # Unix seconds
    limits: LocalLimits = field(default_factory=LocalLimits)
    budget: OutputBudget = field(
        default_factory=lambda: OutputBudget(LocalLimits().max_output_bytes)
    )

    def make_id(self, prefix: str) -> str:
        return f"{prefix}{self.seed.hex()[:24]}"


def text_of(content: Any) -> str:
    """The text of a message content: a string, or a list of parts with `text`."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def word_count(*texts: str) -> int:
    return sum(len(text.split()) for text in texts)


def _reply(ctx: Context, prompt: str, limit: Any, index: int) -> tuple[str, str]:
    """A reply that names the model and echoes the prompt; cut at `limit` words."""
    words = [f"Local reply {index + 1} from {ctx.model}:", *prompt.split()[:48]]
    words = " ".join(words).split()
    if isinstance(limit, int) and 0 < limit < len(words):
        return " ".join(words[:limit]), "length"
    return " ".join(words), "stop"


def _choice_count(body: dict[str, Any]) -> int:
    n = body.get("n")
    return n if isinstance(n, int) and 1 <= n <= 16 else 1


def _usage(prompt: str, completions: list[str]) -> dict[str, int]:
    prompt_tokens = word_count(prompt)
    completion_tokens = word_count(*completions)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_completion(ctx: Context, body: dict[str, Any]) -> dict[str, Any]:
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    user_texts = [text_of(m.get("content")) for m in messages if m.get("role") == "user"]
    last_user = user_texts[-1] if user_texts else ""
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    wants_json = (body.get("response_format") or {}).get("type") in ("json_object", "json_schema")
    choices: list[dict[str, Any]] = []
    contents: list[str] = []
    for index in range(_choice_count(body)):
        text, finish = _reply(ctx, last_user, limit, index)
        # JSON mode promises parseable content, so wrap the reply rather than break it.
        content = json.dumps({"reply": text}) if wants_json else text
        ctx.budget.spend(len(content) + _ITEM_OVERHEAD_BYTES)
        contents.append(content)
        choices.append(
            {
                "index": index,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": finish,
            }
        )
    prompt = " ".join(text_of(m.get("content")) for m in messages)
    return {
        "id": ctx.make_id("chatcmpl-"),
        "object": "chat.completion",
        "created": ctx.created,
        "model": ctx.model,
        "choices": choices,
        "usage": _usage(prompt, contents),
        "system_fingerprint": "local",
    }


def text_completion(ctx: Context, body: dict[str, Any]) -> dict[str, Any]:
    raw = body.get("prompt")
    prompts = [raw] if isinstance(raw, str) else [p for p in raw or [] if isinstance(p, str)]
    prompts = prompts or [""]
    n = _choice_count(body)
    if len(prompts) * n > ctx.limits.max_choices:
        raise over_bound(
            f"the request asks for {len(prompts) * n} choices ({len(prompts)} prompts x n={n});"
            f" the local provider answers at most {ctx.limits.max_choices}"
            " (option localLimits.maxChoices)",
            param="prompt",
        )
    choices: list[dict[str, Any]] = []
    texts: list[str] = []
    for prompt in prompts:
        for _ in range(n):
            text, finish = _reply(ctx, prompt, body.get("max_tokens"), len(choices))
            ctx.budget.spend(len(text) + _ITEM_OVERHEAD_BYTES)
            texts.append(text)
            choices.append(
                {"text": text, "index": len(choices), "logprobs": None, "finish_reason": finish}
            )
    return {
        "id": ctx.make_id("cmpl-"),
        "object": "text_completion",
        "created": ctx.created,
        "model": ctx.model,
        "choices": choices,
        "usage": _usage(" ".join(prompts), texts),
    }


def responses(ctx: Context, body: dict[str, Any]) -> dict[str, Any]:
    raw = body.get("input")
    if isinstance(raw, str):
        prompt = raw
    else:
        items = [i for i in raw or [] if isinstance(i, dict) and i.get("role", "user") == "user"]
        prompt = text_of(items[-1].get("content")) if items else ""
    text, finish = _reply(ctx, prompt, body.get("max_output_tokens"), 0)
    ctx.budget.spend(len(text) + _ITEM_OVERHEAD_BYTES)
    usage = _usage(prompt + " " + text_of(body.get("instructions")), [text])
    return {
        "id": ctx.make_id("resp_"),
        "object": "response",
        "created_at": ctx.created,
        "status": "completed" if finish == "stop" else "incomplete",
        "incomplete_details": None if finish == "stop" else {"reason": "max_output_tokens"},
        "model": ctx.model,
        "output": [
            {
                "type": "message",
                "id": ctx.make_id("msg_"),
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "usage": {
            "input_tokens": usage["prompt_tokens"],
            "output_tokens": usage["completion_tokens"],
            "total_tokens": usage["total_tokens"],
        },
    }


def embedding_vector(model: str, item: str, dimensions: int) -> list[float]:
    """A unit vector derived from a hash of the model and the input."""
    # Joined once: appending to bytes in the loop copied the stream on every digest.
    digests = -(-dimensions * 4 // 32)
    stream = b"".join(
        hashlib.sha256(f"{model}\0{item}\0{counter}".encode()).digest()
        for counter in range(digests)
    )
    raw = [value / 2**31 for value in struct.unpack(f"<{dimensions}i", stream[: dimensions * 4])]
    norm = math.sqrt(sum(value * value for value in raw)) or 1.0
    return [value / norm for value in raw]


def embedding(ctx: Context, body: dict[str, Any]) -> dict[str, Any]:
    raw = body.get("input")
    # A list of ints is one tokenised input; any other list is a batch of inputs.
    if isinstance(raw, str) or (isinstance(raw, list) and all(isinstance(t, int) for t in raw)):
        raw = [raw]
    items = [item if isinstance(item, str) else json.dumps(item) for item in raw or []]
    dimensions = body.get("dimensions")
    if not isinstance(dimensions, int) or not 1 <= dimensions <= 4096:
        dimensions = DEFAULT_EMBEDDING_DIMENSIONS
    _check_embedding_bounds(ctx.limits, len(items), dimensions)
    as_base64 = body.get("encoding_format") == "base64"
    per_value = _FLOAT_BASE64_BYTES if as_base64 else _FLOAT_JSON_BYTES
    data = []
    for index, item in enumerate(items):
        ctx.budget.spend(dimensions * per_value + _ITEM_OVERHEAD_BYTES)
        vector = embedding_vector(ctx.model, item, dimensions)
        encoded: Any = vector
        if as_base64:
            encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    tokens = word_count(*items)
    return {
        "object": "list",
        "data": data,
        "model": ctx.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _check_embedding_bounds(limits: LocalLimits, inputs: int, dimensions: int) -> None:
    if inputs > limits.max_embedding_inputs:
        raise over_bound(
            f"the embedding request has {inputs} inputs; the local provider answers at most"
            f" {limits.max_embedding_inputs} (option localLimits.maxEmbeddingInputs)",
            param="input",
        )
    if inputs * dimensions > limits.max_embedding_values:
        raise over_bound(
            f"the embedding request asks for {inputs} inputs x {dimensions} dimensions ="
            f" {inputs * dimensions} values; the local provider answers at most"
            f" {limits.max_embedding_values} (option localLimits.maxEmbeddingValues)",
            param="input",
        )


def rerank_score(model: str, query: str, document: str) -> float:
    """Word overlap (Jaccard) between query and document, with a hashed tie-breaker."""
    query_words = set(query.lower().split())
    document_words = set(document.lower().split())
    union = query_words | document_words
    overlap = len(query_words & document_words) / len(union) if union else 0.0
    tie = hashlib.sha256(f"{model}\0{query}\0{document}".encode()).digest()[0] / 255
    return round(0.9 * overlap + 0.1 * tie, 6)


def rerank(ctx: Context, body: dict[str, Any]) -> dict[str, Any]:
    query = body["query"] if isinstance(body.get("query"), str) else ""
    raw_documents = body.get("documents") or []
    documents = [text_of([d]) if isinstance(d, dict) else str(d) for d in raw_documents]
    scores = [rerank_score(ctx.model, query, text) for text in documents]
    # Highest score first; equal scores keep the documents' order.
    scored = sorted(enumerate(scores), key=lambda pair: (-pair[1], pair[0]))
    top_n = body.get("top_n")
    if isinstance(top_n, int) and top_n >= 1:
        scored = scored[:top_n]
    results = []
    for index, score in scored:
        result: dict[str, Any] = {"index": index, "relevance_score": score}
        if body.get("return_documents"):
            result["document"] = {"text": documents[index]}
            ctx.budget.spend(len(documents[index]))
        ctx.budget.spend(_ITEM_OVERHEAD_BYTES)
        results.append(result)
    tokens = word_count(query, *documents)
    return {
        "id": ctx.make_id("rerank-"),
        "model": ctx.model,
        "results": results,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
