"""Failed answers of OpenAI-compatible servers, mapped to ProviderError (pure functions).

The client needs the provider's own words: the `type`, `code`, `message` and `param` of
OpenAI's `{"error": {...}}` body, kept as they came. Compatible servers vary (an error
string, a top-level `message` or `detail`), so those are read too. The parts every
provider shares (Retry-After, retryable statuses, timeouts) live in `failures`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from asyncjobs.core.providers.base import ProviderError
from asyncjobs.core.providers.failures import (
    MAX_MESSAGE_CHARS,
    connection_error,
    from_parts,
    is_retryable_status,
    json_object,
    parse_retry_after,
    raw_text,
    timeout_error,
)

__all__ = [
    "MAX_MESSAGE_CHARS",
    "connection_error",
    "error_from_response",
    "is_retryable_status",
    "parse_retry_after",
    "timeout_error",
]


def error_from_response(
    status: int, headers: Mapping[str, str], body: bytes, now: datetime
) -> ProviderError:
    """The ProviderError for a non-2xx answer."""
    details = _error_details(body)
    return from_parts(
        status,
        headers,
        now,
        message=details.get("message"),
        error_type=details.get("type"),
        code=details.get("code"),
        param=details.get("param"),
    )


def _error_details(body: bytes) -> dict[str, Any]:
    try:
        json.loads(body)
    except ValueError:
        message = raw_text(body)
        return {"message": message} if message else {}
    parsed = json_object(body)
    if parsed is None:
        return {}
    error = parsed.get("error")
    if isinstance(error, dict):
        return error
    if isinstance(error, str):
        return {"message": error, "type": parsed.get("type"), "code": parsed.get("code")}
    message = parsed.get("message", parsed.get("detail"))
    if message is None:
        return {}
    # Mistral-style bodies put type, code and param beside a top-level message.
    return {
        "message": message if isinstance(message, str) else json.dumps(message),
        "type": parsed.get("type"),
        "code": parsed.get("code"),
        "param": parsed.get("param"),
    }
