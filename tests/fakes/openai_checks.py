"""What a real OpenAI server would insist on, checked on every request the fake receives.

A fake that accepts anything proves nothing; this one answers 400 when the request is
not what OpenAI documents for the path (missing fields, Bifrost-only fields leaking
through, a `provider/` prefix left on the model, the wrong file field names), and
records why, so a test can assert that no violation happened.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

JSON_PATHS = {
    "/v1/completions",
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/embeddings",
    "/v1/audio/speech",
    "/v1/images/generations",
    "/v1/rerank",
    "/v1/ocr",
}
FORM_PATHS = {"/v1/audio/transcriptions", "/v1/images/edits", "/v1/images/variations"}


@dataclass
class ReceivedForm:
    """A multipart body as the fake saw it: text fields, and file parts by field name."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)  # (filename, data)


def _required(*names: str) -> Callable[[dict[str, Any]], list[str]]:
    def check(body: dict[str, Any]) -> list[str]:
        return [f"{name} is required" for name in names if body.get(name) in (None, "", [])]

    return check


def _chat(body: dict[str, Any]) -> list[str]:
    problems = _required("messages")(body)
    if "max_tokens" in body:
        problems.append("max_tokens must be sent as max_completion_tokens for chat")
    messages = body.get("messages")
    if isinstance(messages, list) and not all(
        isinstance(m, dict) and "role" in m for m in messages
    ):
        problems.append("every message needs a role")
    return problems


def _rerank(body: dict[str, Any]) -> list[str]:
    problems = _required("query", "documents")(body)
    if "documents" in body and not isinstance(body["documents"], list):
        problems.append("documents must be a list")
    return problems


def _ocr(body: dict[str, Any]) -> list[str]:
    document = body.get("document")
    if not isinstance(document, dict):
        return ["document is required"]
    kind = document.get("type")
    if kind not in ("document_url", "image_url") or not document.get(kind):
        return ["document needs type document_url or image_url and that URL"]
    return []


JSON_CHECKS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "/v1/completions": _required("prompt"),
    "/v1/chat/completions": _chat,
    "/v1/responses": _required("input"),
    "/v1/embeddings": _required("input"),
    "/v1/audio/speech": _required("input", "voice"),
    "/v1/images/generations": _required("prompt"),
    "/v1/rerank": _rerank,
    "/v1/ocr": _ocr,
}


def check_model(model: Any, forbidden_prefixes: Sequence[str]) -> list[str]:
    if not isinstance(model, str) or not model:
        return ["model is required"]
    return [
        f"model {model!r} still carries the gateway prefix {prefix!r}"
        for prefix in forbidden_prefixes
        if model.startswith(prefix)
    ]


def check_json(path: str, body: Any, forbidden_prefixes: Sequence[str]) -> list[str]:
    if not isinstance(body, dict):
        return ["the body must be a JSON object"]
    problems = check_model(body.get("model"), forbidden_prefixes)
    if "fallbacks" in body:
        problems.append("fallbacks is a gateway field and must not reach the provider")
    if body.get("stream") is True:
        problems.append("stream must not be requested by an async job")
    return problems + JSON_CHECKS[path](body)


def check_form(path: str, form: ReceivedForm, forbidden_prefixes: Sequence[str]) -> list[str]:
    models = form.fields.get("model", [])
    problems = [] if len(models) == 1 else [f"exactly one model field expected, got {models}"]
    problems += check_model(models[0] if models else None, forbidden_prefixes)
    if "fallbacks" in form.fields:
        problems.append("fallbacks is a gateway field and must not reach the provider")
    if path == "/v1/audio/transcriptions" and len(form.files.get("file", [])) != 1:
        problems.append("exactly one file part named file is required")
    if path == "/v1/images/edits":
        if not form.files.get("image") and not form.files.get("image[]"):
            problems.append("at least one image (image or image[]) is required")
        if not form.fields.get("prompt"):
            problems.append("prompt is required")
    if path == "/v1/images/variations" and (
        len(form.files.get("image", [])) != 1 or "image[]" in form.files
    ):
        problems.append("variations take exactly one file part named image")
    return problems


def check_authorization(header: str | None) -> list[str]:
    if header is None:
        return ["Authorization header is missing"]
    scheme, _, token = header.partition(" ")
    if scheme != "Bearer" or not token.strip():
        return ["Authorization must be 'Bearer <key>'"]
    return []
