"""What every HTTP provider's failures have in common, as pure functions.

Each wire format has its own error body, but the failure policy asks the same questions
of all of them: may it pass (429, 5xx and provider-specific overload codes such as
Anthropic's 529), how long to wait (`Retry-After`, or OpenAI's `retry-after-ms`), and
what to tell the client (the provider's own type, code, message and param, kept as
they came). The per-format modules read their bodies and hand the parts to `from_parts`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from asyncjobs.core.providers.base import ProviderError

MAX_MESSAGE_CHARS = 1000


def is_retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


def parse_retry_after(headers: Mapping[str, str], now: datetime) -> float | None:
    """Seconds to wait, from `retry-after-ms` or `Retry-After`; None when absent or bad."""
    millis = number(headers.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = number(value)
    if seconds is not None:
        return seconds
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - now).total_seconds())


def number(value: str | None) -> float | None:
    """A non-negative finite number from a header value; None otherwise."""
    if value is None:
        return None
    try:
        parsed = float(value.strip())
    except ValueError:
        return None
    return parsed if 0 <= parsed < float("inf") else None  # also rejects NaN


def text(value: Any) -> str | None:
    """A field as a string: providers send codes and params as strings or numbers."""
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)


def json_object(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or None when it is not one."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def raw_text(body: bytes) -> str | None:
    """A non-JSON error body (an HTML page from a proxy) as a message."""
    decoded = body.decode("utf-8", errors="replace").strip()
    return decoded or None


def from_parts(
    status: int,
    headers: Mapping[str, str],
    now: datetime,
    *,
    message: Any,
    error_type: Any = None,
    code: Any = None,
    param: Any = None,
    retry_after: float | None = None,
) -> ProviderError:
    """The ProviderError of a non-2xx answer whose body has been read into parts."""
    said = text(message) or f"provider answered HTTP {status}"
    header_wait = parse_retry_after(headers, now)
    return ProviderError(
        said[:MAX_MESSAGE_CHARS],
        status_code=status,
        retryable=is_retryable_status(status),
        retry_after=header_wait if header_wait is not None else retry_after,
        error_type=text(error_type),
        code=text(code),
        param=text(param),
    )


def timeout_error(seconds: float) -> ProviderError:
    return ProviderError(
        f"provider did not answer within {seconds:g} seconds",
        status_code=None,
        retryable=True,
        error_type="timeout",
    )


def connection_error(provider: str) -> ProviderError:
    """The provider could not be reached. The message names only the provider: the
    connector's own text carries the resolved host and IP address (an internal one for a
    self-hosted model), which is for the operator's log, not for clients or the job."""
    return ProviderError(
        f"provider {provider} unreachable",
        status_code=None,
        retryable=True,
        error_type="connection_error",
    )


def invalid_request(message: str) -> ProviderError:
    """The stored request cannot be sent: failing again would not help."""
    return ProviderError(
        message, status_code=400, retryable=False, error_type="invalid_request_error"
    )


def redirected(provider: str, status: int, location: str | None) -> ProviderError:
    """A 3xx answer, which the transport does not follow: the request carries the key in
    a header, and a followed redirect would hand it (and the prompt) to the Location.

    The message names the Location's host at most: its path and query may hold tokens.
    Not retryable, since the same URL will redirect again; the status is a 502 because
    the provider, not the request, is at fault (a client polling a job sees a failure,
    not a 3xx it might try to follow).
    """
    return ProviderError(
        f"provider {provider} answered HTTP {status}, {_redirect_target(location)}; "
        "redirects are not followed, so the key is never sent elsewhere: "
        "set the provider's baseURL to the address it redirects to",
        status_code=502,
        retryable=False,
        error_type="provider_redirect",
        code="redirect_not_followed",
    )


_HOST = re.compile(r"[A-Za-z0-9.-]+|[0-9A-Fa-f:.]+")  # a name or an IPv4/IPv6 address


def _redirect_target(location: str | None) -> str:
    if not location:
        return "a redirect"
    try:
        parts = urlsplit(location.strip())
        host, port = parts.hostname, parts.port
    except ValueError:
        return "a redirect to another address"
    if not parts.netloc:
        return "a redirect within the host"
    if host is None or not _HOST.fullmatch(host):
        return "a redirect to another address"
    shown = f"[{host}]" if ":" in host else host
    return f"a redirect to {shown}" + (f":{port}" if port is not None else "")


def invalid_model_name(provider: str, what: str, shown: str, rule: str) -> ProviderError:
    """A model (or Azure deployment) name that would not stay in its place in the URL."""
    return ProviderError(
        f"invalid {what} name for provider {provider}: {shown}; {rule}",
        status_code=400,
        retryable=False,
        error_type="invalid_request_error",
        code="invalid_model_name",
        param="model",
    )


def unsupported(request_type: str, provider: str) -> ProviderError:
    """A request type the provider has no endpoint for: a 400, so fallbacks still run."""
    return ProviderError(
        f"unsupported request type {request_type} for provider {provider}",
        status_code=400,
        retryable=False,
        error_type="invalid_request_error",
        code="unsupported_request_type",
    )
