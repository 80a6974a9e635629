"""The Cohere v2 dialect of the fake provider server.

Checks what Cohere documents for `/v2/chat`, `/v2/embed` and `/v2/rerank`: a Bearer
key, Cohere's parameter names (no `top_p`, `stop`, `max_completion_tokens`), upper-case
tool_choice, `texts` with the `input_type` v3 models require, and rerank documents as
strings. It answers in Cohere's shapes (content parts, finish reasons such as
COMPLETE and TOOL_CALL, `embeddings.float`, billed units) and errors as
`{"id", "message"}`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .wire_server import Answer, Incoming, Route, Step, bearer, forbidden, json_answer, required

OPENAI_NAMES = ("top_p", "stop", "max_completion_tokens", "n", "user", "fallbacks", "input")
INPUT_TYPES = {"search_document", "search_query", "classification", "clustering", "image"}
ERRORS = {
    400: "invalid request: message must be at least 1 token long.",
    401: "invalid api token",
    404: "model 'nonesuch' not found, make sure the correct model ID was used",
    429: "You are using a Trial key, which is limited to 10 API calls / minute.",
    500: "internal server error, this has been reported to our developers.",
}


def check_chat(body: dict[str, Any]) -> list[str]:
    problems = required(body, "model", "messages")
    problems += forbidden(body, *OPENAI_NAMES, why="is not a Cohere v2 chat field")
    for message in body.get("messages") or []:
        if message.get("role") not in ("system", "user", "assistant", "tool"):
            problems.append(f"invalid role {message.get('role')!r}")
        if message.get("role") == "tool" and not message.get("tool_call_id"):
            problems.append("tool messages need tool_call_id")
    if body.get("tool_choice") not in (None, "REQUIRED", "NONE"):
        problems.append("tool_choice must be REQUIRED or NONE")
    return problems


def answer_chat(body: dict[str, Any]) -> Answer:
    tools = body.get("tools") or []
    last = body["messages"][-1]
    if tools and last.get("role") != "tool" and body.get("tool_choice") != "NONE":
        name = tools[0]["function"]["name"]
        message: dict[str, Any] = {
            "role": "assistant",
            "tool_plan": "I will look up the weather.",
            "tool_calls": [{"id": "get_weather_fake1", "type": "function",
                            "function": {"name": name, "arguments": '{"city":"Paris"}'}}],
        }  # fmt: skip
        reason = "TOOL_CALL"
    else:
        words = ["Paris", "is", "the", "capital", "of", "France."]
        limit = body.get("max_tokens") or 100
        reason = "MAX_TOKENS" if limit < len(words) else "COMPLETE"
        message = {
            "role": "assistant",
            "content": [{"type": "text", "text": " ".join(words[:limit])}],
        }
    usage = {"billed_units": {"input_tokens": 9, "output_tokens": 6},
             "tokens": {"input_tokens": 70, "output_tokens": 6}}  # fmt: skip
    return json_answer(
        {"id": "c0ffee", "finish_reason": reason, "message": message, "usage": usage}
    )


def check_embed(body: dict[str, Any]) -> list[str]:
    problems = required(body, "model", "texts", "input_type")
    problems += forbidden(
        body, "input", "dimensions", "encoding_format", why="is not a Cohere embed field"
    )
    if body.get("input_type") not in INPUT_TYPES:
        problems.append(f"input_type must be one of {sorted(INPUT_TYPES)}")
    return problems


def answer_embed(body: dict[str, Any]) -> Answer:
    size = body.get("output_dimension") or 3
    vectors = [[0.125 * (i + 1)] * size for i in range(len(body["texts"]))]
    return json_answer(
        {
            "id": "emb-fake",
            "embeddings": {"float": vectors},
            "texts": body["texts"],
            "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": 5}},
            "response_type": "embeddings_by_type",
        }
    )


def check_rerank(body: dict[str, Any]) -> list[str]:
    problems = required(body, "model", "query", "documents")
    if not all(isinstance(d, str) for d in body.get("documents") or []):
        problems.append("documents must be strings")
    return problems + forbidden(body, "return_documents", why="is not a Cohere v2 rerank field")


def answer_rerank(body: dict[str, Any]) -> Answer:
    query = set(body["query"].lower().split())
    scores = [len(query & set(d.lower().split())) / len(query) for d in body["documents"]]
    ranked = sorted(range(len(scores)), key=lambda i: -scores[i])[: body.get("top_n")]
    results = [{"index": i, "relevance_score": scores[i]} for i in ranked]
    return json_answer(
        {"id": "rr-fake", "results": results, "meta": {"billed_units": {"search_units": 1}}}
    )


ROUTES = {
    "/v2/chat": (check_chat, answer_chat),
    "/v2/embed": (check_embed, answer_embed),
    "/v2/rerank": (check_rerank, answer_rerank),
}


@dataclass
class CohereDialect:
    def key(self, incoming: Incoming) -> str | None:
        return bearer(incoming)

    def route(self, incoming: Incoming) -> Route | None:
        if incoming.method != "POST" or incoming.path not in ROUTES:
            return None
        check, build = ROUTES[incoming.path]
        body = incoming.json
        if not isinstance(body, dict):
            return Route(None, ["the body must be a JSON object"], lambda: ("", b""))
        problems = check(body)
        if bearer(incoming) is None:
            problems.append("Authorization: Bearer <key> is required")
        return Route(body.get("model"), problems, lambda: build(body))

    def error_body(self, status: int, step: Step) -> Answer:
        message = step.message or ERRORS.get(status, "error")
        return json_answer({"id": "err-fake", "message": message})
