"""The eleven request types of the async API and the facts each one carries.

Everything that differs between request types is data in this table (the path family,
how the body arrives, the word used in "stream is not supported" messages), so the API
has one submit path and one poll path instead of a handler per endpoint.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class BodyKind(enum.Enum):
    JSON = "json"
    MULTIPART = "multipart"


class RequestType(enum.StrEnum):
    TEXT_COMPLETION = "text_completion"
    CHAT_COMPLETION = "chat_completion"
    RESPONSES = "responses"
    EMBEDDING = "embedding"
    SPEECH = "speech"
    TRANSCRIPTION = "transcription"
    IMAGE_GENERATION = "image_generation"
    IMAGE_EDIT = "image_edit"
    IMAGE_VARIATION = "image_variation"
    RERANK = "rerank"
    OCR = "ocr"


@dataclass(frozen=True)
class RequestTypeInfo:
    request_type: RequestType
    path: str  # the path family under /v1/async, e.g. "chat/completions"
    body: BodyKind
    # Completes "stream is not supported for async ..."; None where no stream flag exists.
    stream_noun: str | None

    @property
    def submit_path(self) -> str:
        return f"/v1/async/{self.path}"

    @property
    def openai_path(self) -> str:
        """The synchronous endpoint under an OpenAI-style /v1: the same family."""
        return f"/{self.path}"


REQUEST_TYPES: dict[RequestType, RequestTypeInfo] = {
    info.request_type: info
    for info in (
        RequestTypeInfo(
            RequestType.TEXT_COMPLETION, "completions", BodyKind.JSON, "text completions"
        ),
        RequestTypeInfo(
            RequestType.CHAT_COMPLETION, "chat/completions", BodyKind.JSON, "chat completions"
        ),
        RequestTypeInfo(RequestType.RESPONSES, "responses", BodyKind.JSON, "responses"),
        RequestTypeInfo(RequestType.EMBEDDING, "embeddings", BodyKind.JSON, None),
        RequestTypeInfo(RequestType.SPEECH, "audio/speech", BodyKind.JSON, "speech"),
        RequestTypeInfo(
            RequestType.TRANSCRIPTION, "audio/transcriptions", BodyKind.MULTIPART, "transcriptions"
        ),
        RequestTypeInfo(
            RequestType.IMAGE_GENERATION, "images/generations", BodyKind.JSON, "image generations"
        ),
        RequestTypeInfo(RequestType.IMAGE_EDIT, "images/edits", BodyKind.MULTIPART, "image edits"),
        RequestTypeInfo(RequestType.IMAGE_VARIATION, "images/variations", BodyKind.MULTIPART, None),
        RequestTypeInfo(RequestType.RERANK, "rerank", BodyKind.JSON, None),
        RequestTypeInfo(RequestType.OCR, "ocr", BodyKind.JSON, None),
    )
}
