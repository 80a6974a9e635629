"""Anthropic: chat completions and Responses through the Messages API.

POST `{baseURL}/messages` with the key in `x-api-key` and the API version in
`anthropic-version`; the translation both ways is anthropic_messages'. Anthropic's error
body is `{"type": "error", "error": {"type", "message"}}`: its type (rate_limit_error,
overloaded_error, ...) becomes the error type, and its 529 "overloaded" is retryable
like any 5xx.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Set
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asyncjobs.core.providers import anthropic_messages
from asyncjobs.core.providers.base import ProviderRequest
from asyncjobs.core.providers.openai_wire import dump, json_body
from asyncjobs.core.providers.transport import (
    Answer,
    CommonWire,
    UnsupportedRequestType,
    WireCall,
)
from asyncjobs.core.request_types import RequestType as T

DEFAULT_BASE_URL = "https://api.anthropic.com/v1"
DEFAULT_VERSION = "2023-06-01"
SUPPORTED: frozenset[T] = frozenset({T.CHAT_COMPLETION, T.RESPONSES})

_CONVERSIONS: dict[
    T,
    tuple[
        Callable[[dict[str, Any], str], dict[str, Any]],
        Callable[[dict[str, Any], int], dict[str, Any]],
    ],
] = {
    T.CHAT_COMPLETION: (anthropic_messages.chat_request, anthropic_messages.chat_answer),
    T.RESPONSES: (anthropic_messages.responses_request, anthropic_messages.responses_answer),
}


@dataclass(frozen=True)
class AnthropicWire(CommonWire):
    base_url: str = DEFAULT_BASE_URL
    version: str = DEFAULT_VERSION
    supported: Set[T] = SUPPORTED

    def build(self, request: ProviderRequest) -> WireCall:
        conversion = _CONVERSIONS.get(request.request_type)
        if conversion is None or request.request_type not in self.supported:
            raise UnsupportedRequestType(request.request_type)
        to_messages, from_message = conversion
        return WireCall(
            url=self.base_url.rstrip("/") + "/messages",
            body=dump(to_messages(json_body(request), request.model)),
            content_type="application/json",
            decode=functools.partial(_decode_message, from_message),
            headers={"anthropic-version": self.version},
        )

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"x-api-key": key}


def _decode_message(
    from_message: Callable[[dict[str, Any], int], dict[str, Any]], answer: Answer, now: datetime
) -> dict[str, Any]:
    """A WireCall's decode: module-level (with functools.partial), so a call built in the
    CPU worker process can be sent back to the loop."""
    return from_message(answer.json_object(), int(now.timestamp()))
