"""The Gemini (Generative Language API) dialect of the fake provider server.

Checks what Google documents for `models/{model}:generateContent`, `:embedContent` and
`:batchEmbedContents`: the key in `x-goog-api-key` (not in the URL, not a Bearer token),
`contents` of user/model turns whose parts hold exactly one kind of data, camelCase
`generationConfig` fields, function declarations, and batch requests naming the same
model as the path. Errors come in Google's shape with ErrorInfo, BadRequest and
RetryInfo details; an unknown key is a 400 API_KEY_INVALID, as on the real service.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .wire_server import Answer, Incoming, Route, Step, forbidden, json_answer, required

PATH = re.compile(r"^/v1beta/models/(?P<model>[^/:]+):(?P<method>\w+)$")
PART_KINDS = {"text", "inlineData", "fileData", "functionCall", "functionResponse"}
GENERATION_FIELDS = {
    "temperature", "topP", "topK", "candidateCount", "maxOutputTokens", "stopSequences",
    "seed", "presencePenalty", "frequencyPenalty", "responseMimeType", "responseSchema",
    "responseJsonSchema", "thinkingConfig",
}  # fmt: skip
STATUSES = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    403: ("PERMISSION_DENIED", "The caller does not have permission."),
    404: ("NOT_FOUND", "models/unknown is not found for API version v1beta."),
    429: ("RESOURCE_EXHAUSTED", "You exceeded your current quota."),
    500: ("INTERNAL", "An internal error has occurred."),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
}


def _check_part(part: Any) -> list[str]:
    kinds = set(part) & PART_KINDS if isinstance(part, dict) else set()
    if len(kinds) != 1:
        return [f"a part must hold exactly one of {sorted(PART_KINDS)}: {part!r}"]
    (kind,) = kinds
    value = part[kind]
    if kind == "inlineData":
        return required(value, "mimeType", "data")
    if kind == "fileData":
        return required(value, "mimeType", "fileUri")
    if kind == "functionCall":
        return required(value, "name") + (
            [] if isinstance(value.get("args"), dict) else ["args must be an object"]
        )
    if kind == "functionResponse":
        return required(value, "name") + (
            [] if isinstance(value.get("response"), dict) else ["response must be an object"]
        )
    return [] if isinstance(value, str) else ["text must be a string"]


def check_generate(body: Any) -> list[str]:
    problems = required(body, "contents")
    problems += forbidden(body, "messages", "model", "max_tokens", "fallbacks", "tools_choice",
                          why="is not a generateContent field")  # fmt: skip
    if not isinstance(body, dict):
        return problems
    for content in body.get("contents") or []:
        if content.get("role") not in ("user", "model"):
            problems.append(f"role must be user or model, got {content.get('role')!r}")
        for part in content.get("parts") or [None]:
            problems += _check_part(part)
    system = body.get("systemInstruction")
    if system is not None:
        for part in system.get("parts") or [None]:
            problems += _check_part(part)
    unknown = set(body.get("generationConfig") or {}) - GENERATION_FIELDS
    if unknown:
        problems.append(f"unknown generationConfig fields {sorted(unknown)}")
    for tool in body.get("tools") or []:
        for declaration in tool.get("functionDeclarations") or [None]:
            problems += required(declaration, "name")
    return problems


def answer_generate(model: str, body: dict[str, Any]) -> Answer:
    last = body["contents"][-1]["parts"]
    after_tool = any("functionResponse" in part for part in last)
    tools = body.get("tools") or []
    mode = ((body.get("toolConfig") or {}).get("functionCallingConfig") or {}).get("mode")
    if tools and not after_tool and mode != "NONE":
        name = tools[0]["functionDeclarations"][0]["name"]
        parts: list[dict[str, Any]] = [{"functionCall": {"name": name, "args": {"city": "Paris"}}}]
        reason = "STOP"
    else:
        words = ("It is sunny." if after_tool else "Paris is the capital of France.").split()
        limit = (body.get("generationConfig") or {}).get("maxOutputTokens") or 100
        reason = "MAX_TOKENS" if limit < len(words) else "STOP"
        parts = [{"text": " ".join(words[:limit])}]
    count = max(1, int((body.get("generationConfig") or {}).get("candidateCount") or 1))
    return json_answer(
        {
            "candidates": [
                {"content": {"role": "model", "parts": parts}, "finishReason": reason, "index": i}
                for i in range(count)
            ],
            "usageMetadata": {
                "promptTokenCount": 11,
                "candidatesTokenCount": 7,
                "totalTokenCount": 18,
            },
            "modelVersion": f"{model}-001",
            "responseId": "fakeResponseId",
        }
    )


def _vector(request: dict[str, Any], index: int) -> dict[str, Any]:
    size = request.get("outputDimensionality") or 3
    return {"values": [round(0.25 * (index + 1), 3)] * size}


def check_embed(model: str, request: Any) -> list[str]:
    problems = required(request, "content")
    if not isinstance(request, dict):
        return problems
    if request.get("model") not in (None, f"models/{model}"):
        problems.append(f"model must be models/{model}, got {request.get('model')!r}")
    parts = (request.get("content") or {}).get("parts") or [None]
    problems += [p for part in parts for p in _check_part(part)]
    problems += forbidden(request, "input", "dimensions", why="is not an embedContent field")
    return problems


@dataclass
class GeminiDialect:
    rejected_key_status: int = 400

    def key(self, incoming: Incoming) -> str | None:
        return incoming.headers.get("x-goog-api-key")

    def route(self, incoming: Incoming) -> Route | None:
        match = PATH.match(incoming.path)
        if incoming.method != "POST" or match is None:
            return None
        model, method, body = match["model"], match["method"], incoming.json
        problems = []
        if "key" in incoming.query:
            problems.append("the key must not travel in the URL")
        if "authorization" in incoming.headers or not incoming.headers.get("x-goog-api-key"):
            problems.append("the key belongs in x-goog-api-key")
        if method == "generateContent":
            problems += check_generate(body)
            return Route(model, problems, lambda: answer_generate(model, body))
        if method == "embedContent":
            problems += check_embed(model, body)
            return Route(model, problems, lambda: json_answer({"embedding": _vector(body, 0)}))
        if method == "batchEmbedContents":
            requests = body.get("requests") if isinstance(body, dict) else None
            if not isinstance(requests, list) or not requests:
                problems.append("requests is required")
                requests = []
            for request in requests:
                problems += check_embed(model, request)
                if isinstance(request, dict) and "model" not in request:
                    problems.append("batch requests must name their model")
            vectors = [_vector(request, i) for i, request in enumerate(requests)]
            return Route(model, problems, lambda: json_answer({"embeddings": vectors}))
        return None

    def error_body(self, status: int, step: Step) -> Answer:
        kind, message = STATUSES.get(status, ("UNKNOWN", "Unknown error."))
        details: list[dict[str, Any]] = []
        if step.rejected_key:
            kind, message = "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key."
            details.append({"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                            "reason": "API_KEY_INVALID", "domain": "googleapis.com"})  # fmt: skip
        elif step.code:
            details.append(
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": step.code}
            )
        if step.param:
            violation = {"field": step.param, "description": step.message or message}
            details.append({"@type": "type.googleapis.com/google.rpc.BadRequest",
                            "fieldViolations": [violation]})  # fmt: skip
        if status == 429:
            details.append(
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}
            )
        error = {"code": status, "message": step.message or message, "status": step.type or kind}
        if details:
            error["details"] = details
        return "application/json", json.dumps({"error": error}).encode()
