"""OpenAI's wire format for requests and successful answers, as pure functions.

The stored request is the client's Bifrost body: `model` carries the `provider/` prefix,
`fallbacks` is Bifrost's own, chat's `max_tokens` is OpenAI's deprecated name. This
module turns it into the body OpenAI expects for the request type's path, and turns the
provider's successful answer into the JSON the job stores (speech's binary audio becomes
base64, a plain-text transcription becomes `{"text": ...}`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Set
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from asyncjobs.core import multipart
from asyncjobs.core.providers.base import ProviderRequest, speech_result
from asyncjobs.core.providers.transport import (
    Answer,
    BadRequestBody,
    CommonWire,
    UnsupportedRequestType,
    WireCall,
)
from asyncjobs.core.request_types import REQUEST_TYPES, BodyKind, RequestType

__all__ = ["BadRequestBody", "OpenAIWire", "WireRequest", "prepare"]

# Fields only the gateway understands; a provider would reject or ignore them.
GATEWAY_ONLY_FIELDS = ("fallbacks",)


@dataclass(frozen=True)
class WireRequest:
    path: str
    body: bytes
    content_type: str


def prepare(request: ProviderRequest, model: str | None = None) -> WireRequest:
    """The path, body and content type to send for a stored request.

    `model` replaces the model name sent (Azure sends its deployment name there).
    """
    path = REQUEST_TYPES[request.request_type].openai_path
    sent_model = request.model if model is None else model
    if REQUEST_TYPES[request.request_type].body is BodyKind.MULTIPART:
        body, content_type = _prepare_form(request, sent_model)
        return WireRequest(path, body, content_type)
    return WireRequest(path, _prepare_json(request, sent_model), "application/json")


def json_body(request: ProviderRequest) -> dict[str, Any]:
    """The stored JSON body without the gateway's own fields; every wire format starts here."""
    try:
        body = json.loads(request.body)
    except ValueError as error:
        raise BadRequestBody(f"invalid request format: {error}") from error
    if not isinstance(body, dict):
        raise BadRequestBody("invalid request format: the body must be a JSON object")
    for name in GATEWAY_ONLY_FIELDS:
        body.pop(name, None)
    return body


def dump(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _prepare_json(request: ProviderRequest, model: str) -> bytes:
    body = json_body(request)
    body["model"] = model
    if request.request_type is RequestType.CHAT_COMPLETION and "max_tokens" in body:
        # The spec maps max_tokens to max_completion_tokens; an explicit
        # max_completion_tokens wins when a client sent both.
        max_tokens = body.pop("max_tokens")
        body.setdefault("max_completion_tokens", max_tokens)
    return dump(body)


def _prepare_form(request: ProviderRequest, model: str) -> tuple[bytes, str]:
    try:
        form = multipart.parse(request.body, request.content_type)
    except multipart.MultipartError as error:
        raise BadRequestBody(f"failed to parse multipart form: {error}") from error
    fields = [(k, v) for k, v in form.fields if k != "model" and k not in GATEWAY_ONLY_FIELDS]
    files = list(form.files)
    if request.request_type is RequestType.IMAGE_VARIATION:
        # Bifrost accepts `image[]` for variations, but OpenAI's endpoint takes exactly one
        # file named `image`.
        images = form.files_named("image", "image[]")[:1]
        others = [part for part in files if part.field not in ("image", "image[]")]
        files = [
            multipart.FilePart("image", part.filename, part.content_type, part.data)
            for part in images
        ] + others
    return multipart.encode(multipart.Form([("model", model), *fields], files))


def success_body(request_type: RequestType, content_type: str, body: bytes) -> dict[str, Any]:
    """The JSON a job stores for a 2xx answer; raises ValueError if it is unreadable."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if request_type is RequestType.SPEECH:
        return speech_result(body, media_type or "application/octet-stream")
    if request_type is RequestType.TRANSCRIPTION and media_type != "application/json":
        # response_format text, srt or vtt answers plain text.
        return {"text": body.decode("utf-8", errors="replace")}
    parsed = json.loads(body)
    if not isinstance(parsed, dict):
        raise ValueError("the answer is JSON but not an object")
    return parsed


@dataclass(frozen=True)
class OpenAIWire(CommonWire):
    """OpenAI's wire format at a base URL, with the request types that server serves."""

    base_url: str
    supported: Set[RequestType] = field(default_factory=lambda: frozenset(RequestType))

    def build(self, request: ProviderRequest) -> WireCall:
        if request.request_type not in self.supported:
            raise UnsupportedRequestType(request.request_type)
        wire = prepare(request)
        return WireCall(
            url=self.base_url.rstrip("/") + wire.path,
            body=wire.body,
            content_type=wire.content_type,
            decode=decoder(request.request_type),
        )


def decoder(request_type: RequestType) -> Callable[[Answer, datetime], dict[str, Any]]:
    """The decode function of a WireCall whose answer is already in OpenAI's shape (a
    partial, so a call built in the CPU worker process can be sent back to the loop)."""
    return functools.partial(_decode_openai_shaped, request_type)


def _decode_openai_shaped(request_type: RequestType, answer: Answer, _: datetime) -> dict[str, Any]:
    return success_body(request_type, answer.content_type, answer.body)
