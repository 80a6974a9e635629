"""Failed answers of OpenAI-compatible servers, mapped to ProviderError (pure functions).

The failure policy needs two facts from an error: may it pass (429 and 5xx) and how long
to wait (Retry-After, in seconds or as an HTTP date, or OpenAI's `retry-after-ms`). The
client needs the provider's own words: the `type`, `code`, `message` and `param` of
OpenAI's `{"error": {...}}` body, kept as they came. Compatible servers vary (an error
string, a top-level `message` or `detail`), so those are read too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from asyncjobs.core.providers.base import ProviderError

MAX_MESSAGE_CHARS = 1000


def is_retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


def parse_retry_after(headers: Mapping[str, str], now: datetime) -> float | None:
    """Seconds to wait, from `retry-after-ms` or `Retry-After`; None when absent or bad."""
    millis = _number(headers.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _number(value)
    if seconds is not None:
        return seconds
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - now).total_seconds())


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if number >= 0 and number == number else None  # rejects NaN


def error_from_response(
    status: int, headers: Mapping[str, str], body: bytes, now: datetime
) -> ProviderError:
    """The ProviderError for a non-2xx answer."""
    details = _error_details(body)
    message = _text(details.get("message")) or f"provider answered HTTP {status}"
    return ProviderError(
        message[:MAX_MESSAGE_CHARS],
        status_code=status,
        retryable=is_retryable_status(status),
        retry_after=parse_retry_after(headers, now),
        error_type=_text(details.get("type")),
        code=_text(details.get("code")),
        param=_text(details.get("param")),
    )


def _error_details(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", errors="replace").strip()
        return {"message": text} if text else {}
    if not isinstance(parsed, dict):
        return {}
    error = parsed.get("error")
    if isinstance(error, dict):
        return error
    if isinstance(error, str):
        return {"message": error, "type": parsed.get("type"), "code": parsed.get("code")}
    message = parsed.get("message", parsed.get("detail"))
    if message is None:
        return {}
    return {"message": message if isinstance(message, str) else json.dumps(message)}


def _text(value: Any) -> str | None:
    # OpenAI sends code and param as strings, some compatible servers as numbers.
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)


def timeout_error(seconds: float) -> ProviderError:
    return ProviderError(
        f"provider did not answer within {seconds:g} seconds",
        status_code=None,
        retryable=True,
        error_type="timeout",
    )


def connection_error(detail: str) -> ProviderError:
    return ProviderError(
        f"cannot reach the provider: {detail}",
        status_code=None,
        retryable=True,
        error_type="connection_error",
    )
