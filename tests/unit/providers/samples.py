"""Sample stored requests of every type, as the API would hand them to the operator."""

from __future__ import annotations

import json
from typing import Any

from asyncjobs.core import multipart
from asyncjobs.core.providers.base import ProviderRequest
from asyncjobs.core.request_types import RequestType

# A few bytes that stand in for an uploaded file; providers must pass them through.
SAMPLE_FILE = b"RIFF\x00\x00\x00\x00fake-audio-or-image"

JSON_BODIES: dict[RequestType, dict[str, Any]] = {
    RequestType.TEXT_COMPLETION: {"prompt": "Say this is a test", "max_tokens": 20},
    RequestType.CHAT_COMPLETION: {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        "temperature": 0.2,
    },
    RequestType.RESPONSES: {"input": "Write a haiku about queues."},
    RequestType.EMBEDDING: {"input": ["first text", "second text"]},
    RequestType.SPEECH: {"input": "Hello there", "voice": "alloy"},
    RequestType.IMAGE_GENERATION: {"prompt": "a red square", "n": 2, "size": "256x256"},
    RequestType.RERANK: {
        "query": "capital of france",
        "documents": [{"text": "Berlin is in Germany"}, {"text": "Paris is the capital of France"}],
        "top_n": 2,
    },
    RequestType.OCR: {"document": {"type": "document_url", "document_url": "https://x/doc.pdf"}},
}

FORM_FIELDS: dict[RequestType, list[tuple[str, str]]] = {
    RequestType.TRANSCRIPTION: [("language", "en")],
    RequestType.IMAGE_EDIT: [("prompt", "add a hat"), ("n", "1")],
    RequestType.IMAGE_VARIATION: [("n", "1")],
}

FORM_FILES: dict[RequestType, list[tuple[str, str, str]]] = {
    RequestType.TRANSCRIPTION: [("file", "hello.wav", "audio/wav")],
    RequestType.IMAGE_EDIT: [("image[]", "a.png", "image/png"), ("image[]", "b.png", "image/png")],
    RequestType.IMAGE_VARIATION: [("image[]", "a.png", "image/png")],
}


def json_request(
    request_type: RequestType, model: str = "gpt-test", **overrides: Any
) -> ProviderRequest:
    body = {"model": f"openai/{model}", **JSON_BODIES[request_type], **overrides}
    return ProviderRequest(request_type, model, json.dumps(body).encode(), "application/json")


def form_request(
    request_type: RequestType,
    model: str = "gpt-test",
    extra_fields: list[tuple[str, str]] | None = None,
) -> ProviderRequest:
    fields = [("model", f"openai/{model}"), *FORM_FIELDS[request_type], *(extra_fields or [])]
    files = [
        multipart.FilePart(name, filename, content_type, SAMPLE_FILE)
        for name, filename, content_type in FORM_FILES[request_type]
    ]
    body, content_type = multipart.encode(multipart.Form(fields, files))
    return ProviderRequest(request_type, model, body, content_type)


def sample_request(request_type: RequestType, model: str = "gpt-test") -> ProviderRequest:
    if request_type in FORM_FIELDS:
        return form_request(request_type, model)
    return json_request(request_type, model)
