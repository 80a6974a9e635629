"""The Mistral dialect of the fake provider server.

Mistral's API validates strictly (unknown fields are a 422 in FastAPI's `detail` shape),
so the fake refuses the OpenAI spellings Mistral does not accept (`max_completion_tokens`,
`seed`, `dimensions`, `user`), checks the Bearer key, and answers chat, embeddings and
OCR in Mistral's (OpenAI-like) shapes. Errors come as Mistral sends them: top-level
`message`/`type`/`code` for most, `{"message": "Unauthorized"}` for a bad key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .wire_server import Answer, Incoming, Route, Step, bearer, forbidden, json_answer, required

NOT_MISTRAL = ("max_completion_tokens", "seed", "dimensions", "user", "fallbacks", "store")
ERRORS = {
    400: ("invalid_request_error", "Invalid request"),
    429: ("rate_limited", "Requests rate limit exceeded"),
    500: ("internal_server_error", "Internal server error"),
}


def check(path: str, body: Any) -> list[str]:
    problems = required(body, "model")
    if not isinstance(body, dict):
        return problems
    problems += forbidden(body, *NOT_MISTRAL, why="is not a Mistral field (422 extra_forbidden)")
    if "/" in str(body.get("model")):
        problems.append("model still carries a gateway prefix")
    if path == "/v1/chat/completions":
        problems += required(body, "messages")
        for message in body.get("messages") or []:
            if message.get("role") not in ("system", "user", "assistant", "tool"):
                problems.append(f"invalid role {message.get('role')!r}")
    elif path == "/v1/embeddings":
        problems += required(body, "input")
    elif path == "/v1/ocr":
        document = body.get("document") or {}
        kind = document.get("type")
        if kind not in ("document_url", "image_url") or not document.get(kind):
            problems.append("document needs type document_url or image_url and that URL")
    return problems


def answer(path: str, body: dict[str, Any]) -> Answer:
    if path == "/v1/chat/completions":
        return json_answer(
            {
                "id": "cmpl-mistral-fake",
                "object": "chat.completion",
                "created": 1767225600,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "Bonjour!", "tool_calls": None},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 8, "completion_tokens": 2, "total_tokens": 10},
            }
        )
    if path == "/v1/embeddings":
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        size = body.get("output_dimension") or 3
        data = [
            {"object": "embedding", "index": i, "embedding": [0.5 * (i + 1)] * size}
            for i in range(len(inputs))
        ]
        usage = {"prompt_tokens": 4, "completion_tokens": 0, "total_tokens": 4}
        return json_answer(
            {
                "id": "emb-fake",
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": usage,
            }
        )
    page = {
        "index": 0,
        "markdown": "# Mistral OCR page",
        "images": [],
        "dimensions": {"dpi": 200, "height": 2200, "width": 1700},
    }
    return json_answer(
        {"pages": [page], "model": body["model"], "usage_info": {"pages_processed": 1}}
    )


@dataclass
class MistralDialect:
    def key(self, incoming: Incoming) -> str | None:
        return bearer(incoming)

    def route(self, incoming: Incoming) -> Route | None:
        path = incoming.path
        if incoming.method != "POST" or path not in (
            "/v1/chat/completions",
            "/v1/embeddings",
            "/v1/ocr",
        ):
            return None
        body = incoming.json
        problems = check(path, body)
        if bearer(incoming) is None:
            problems.append("Authorization: Bearer <key> is required")
        model = body.get("model") if isinstance(body, dict) else None
        return Route(model, problems, lambda: answer(path, body))

    def error_body(self, status: int, step: Step) -> Answer:
        if status == 401:
            return json_answer({"message": step.message or "Unauthorized", "request_id": "fake"})
        if status == 422 and step.param:
            detail = [{"type": step.type or "missing", "loc": ["body", step.param],
                       "msg": step.message or "Field required", "input": {}}]  # fmt: skip
            return json_answer({"detail": detail})
        kind, message = ERRORS.get(status, ("api_error", "Error"))
        error = {"object": "error", "message": step.message or message,
                 "type": step.type or kind, "param": step.param, "code": step.code}  # fmt: skip
        return "application/json", json.dumps(error).encode()
