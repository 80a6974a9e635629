"""The Anthropic Messages dialect of the fake provider server.

Checks what Anthropic documents for `POST /v1/messages`: `x-api-key` and
`anthropic-version` headers, a model without the gateway prefix, `max_tokens` present,
only user/assistant turns (the system prompt beside them), valid content blocks
(text, base64 or URL images, tool_use with an object input, tool_result with its id),
tools with `input_schema`, and no OpenAI-only fields. It answers like Claude: text, or
a tool_use block when tools are offered and no tool result came back yet, cut at
max_tokens, with usage including cache reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .wire_server import Answer, Incoming, Route, Step, forbidden, json_answer, required

ERRORS = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: (
        "permission_error",
        "Your API key does not have permission to use the specified resource.",
    ),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
    500: ("api_error", "An unexpected error has occurred internal to Anthropic's systems."),
    529: ("overloaded_error", "Overloaded"),
}

BLOCK_TYPES = {"text", "image", "tool_use", "tool_result", "document", "thinking"}
OPENAI_ONLY = ("max_completion_tokens", "stop", "n", "tool_calls", "response_format", "fallbacks")


def _check_block(block: Any, role: str) -> list[str]:
    if not isinstance(block, dict) or block.get("type") not in BLOCK_TYPES:
        return [f"unknown content block {block!r}"]
    kind = block["type"]
    if kind == "text" and not block.get("text"):
        return ["text content blocks must be non-empty"]
    if kind == "image":
        source = block.get("source") or {}
        if source.get("type") == "base64":
            return required(source, "media_type", "data")
        if source.get("type") == "url":
            return required(source, "url")
        return [f"image source type must be base64 or url, got {source!r}"]
    if kind == "tool_use":
        problems = [] if role == "assistant" else ["tool_use blocks belong to assistant turns"]
        if not isinstance(block.get("input"), dict):
            problems.append("tool_use.input must be an object")
        return problems + required(block, "id", "name")
    if kind == "tool_result":
        problems = [] if role == "user" else ["tool_result blocks belong to user turns"]
        return problems + required(block, "tool_use_id")
    return []


def check_messages_body(body: Any) -> list[str]:
    problems = required(body, "model", "max_tokens", "messages")
    if problems and "the body must be a JSON object" in problems:
        return problems
    problems += forbidden(body, *OPENAI_ONLY, why="is not a Messages API field")
    if "/" in str(body.get("model")):
        problems.append(f"model {body.get('model')!r} still carries a gateway prefix")
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        problems.append("max_tokens must be a positive integer")
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        problems.append("system must be a string or text blocks")
    for message in body.get("messages") or []:
        role = message.get("role")
        if role not in ("user", "assistant"):
            problems.append(f"message role must be user or assistant, got {role!r}")
            continue
        content = message.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list) or not content:
            problems.append("message content must be a string or a non-empty list of blocks")
            continue
        for block in content:
            problems += _check_block(block, role)
    for tool in body.get("tools") or []:
        problems += required(tool, "name", "input_schema")
    choice = body.get("tool_choice")
    if choice is not None and choice.get("type") not in ("auto", "any", "tool", "none"):
        problems.append(f"tool_choice.type is invalid: {choice!r}")
    if "metadata" in body and set(body["metadata"]) - {"user_id"}:
        problems.append("metadata takes only user_id")
    return problems


def answer_message(body: dict[str, Any]) -> Answer:
    last = body["messages"][-1]
    blocks = last["content"] if isinstance(last["content"], list) else []
    after_tool = any(block.get("type") == "tool_result" for block in blocks)
    tools = body.get("tools") or []
    wants_tool = tools and not after_tool and (body.get("tool_choice") or {}).get("type") != "none"
    if wants_tool:
        content: list[dict[str, Any]] = [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_01Fake", "name": tools[0]["name"],
             "input": {"city": "Paris"}},
        ]  # fmt: skip
        stop_reason = "tool_use"
    else:
        words = (
            "The weather is sunny." if after_tool else "Paris is the capital of France."
        ).split()
        limit = body["max_tokens"]
        stop_reason = "max_tokens" if limit < len(words) else "end_turn"
        content = [{"type": "text", "text": " ".join(words[:limit])}]
    return json_answer(
        {
            "id": "msg_01FakeMessage",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": 21,
                "output_tokens": 9,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 4,
            },
        }
    )


@dataclass
class AnthropicDialect:
    version: str = "2023-06-01"

    def key(self, incoming: Incoming) -> str | None:
        return incoming.headers.get("x-api-key")

    def route(self, incoming: Incoming) -> Route | None:
        if (incoming.method, incoming.path) != ("POST", "/v1/messages"):
            return None
        problems = []
        if incoming.headers.get("anthropic-version") != self.version:
            problems.append(f"anthropic-version must be {self.version}")
        if not incoming.headers.get("x-api-key"):
            problems.append("x-api-key header is missing")
        if "authorization" in incoming.headers:
            problems.append("Anthropic takes the key in x-api-key, not Authorization")
        if incoming.content_type != "application/json":
            problems.append("Content-Type must be application/json")
        body = incoming.json
        problems += check_messages_body(body)
        model = body.get("model") if isinstance(body, dict) else None
        return Route(model, problems, lambda: answer_message(body))

    def error_body(self, status: int, step: Step) -> Answer:
        kind, message = ERRORS.get(status, ("api_error", "Error."))
        error = {"type": step.type or kind, "message": step.message or message}
        return "application/json", json.dumps(
            {"type": "error", "error": error, "request_id": "req_011Fake"}
        ).encode()
