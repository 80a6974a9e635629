"""What one completion-webhook delivery is, decided without the network.

The contract (shared/spec/bifrost-webhooks.md) fixes the delivery's wire form and its
retry policy; everything here is a pure function of a job, an endpoint's settings, a
clock reading and a random draw, so the sender that uses them stays thin and the rules
are tested exactly:

- `delivery_id`: the `webhook-id`, derived from the job's uid, so every retry and every
  redelivery of a job's notification carries the same one (receivers deduplicate by it).
- `event_of` / `payload`: the event and the JSON body.
- `signature` / `headers`: the Standard Webhooks signature over id, timestamp and body.
- `classify` / `retry_delay`: which outcomes are retried, and after how long.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import json
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asyncjobs.core.webhook_endpoints import (
    EVENT_COMPLETED,
    EVENT_FAILED,
    MAX_ATTEMPTS,
    MAX_TIMEOUT_SECONDS,
    SECRET_PREFIX,
)

USER_AGENT = "asyncjobs-webhooks/1"
# Retries wait 30 s, 1 min, 2 min, 4 min (then 4 min again), each ±20 %.
FIRST_RETRY_SECONDS = 30.0
MAX_RETRY_SECONDS = 240.0
JITTER = 0.2
# A result or error is inlined (include_response) only below this size.
INLINE_LIMIT_BYTES = 256 * 1024

# The namespace of delivery ids: a fixed UUID, so the same job always maps to the same id.
_DELIVERY_NAMESPACE = uuid.UUID("6f1d2a8e-4b7c-4e21-9a53-0c5d7e9f3b10")


def delivery_id(job_uid: str) -> str:
    return str(uuid.uuid5(_DELIVERY_NAMESPACE, job_uid))


def event_of(phase: str) -> str | None:
    """The event a terminal phase announces; None for a phase that is not terminal."""
    return {"Completed": EVENT_COMPLETED, "Failed": EVENT_FAILED}.get(phase)


# What an endpoint with include_response gets beside `data`: ("response" or "error", the
# stored JSON, or None when it is too large to inline).
Inline = tuple[str, bytes | None]


def payload(
    event: str,
    created_at: str,
    data: Mapping[str, Any],
    *,
    inline: Inline | None = None,
) -> bytes:
    """The body: `{"event", "created_at", "data"}`. `inline` is ("response" or "error",
    the stored JSON) for an endpoint with include_response: spliced in when it is under
    the limit, otherwise `<key>_omitted: true`."""
    document: dict[str, Any] = dict(data)
    spliced: tuple[str, bytes] | None = None
    if inline is not None:
        key, raw = inline
        if raw is not None and len(raw) < INLINE_LIMIT_BYTES:
            spliced = (key, raw)
        else:
            document[f"{key}_omitted"] = True
    text = json.dumps(
        {"event": event, "created_at": created_at, "data": document}, separators=(",", ":")
    )
    if spliced is None:
        return text.encode()
    key, raw = spliced
    # The stored JSON goes in as it is (it may be megabytes of base64), before the two
    # closing braces of data and of the body.
    separator = "," if document else ""
    return f'{text[:-2]}{separator}"{key}":'.encode() + raw + b"}}"


def inline_key(phase: str) -> str | None:
    """Which field an include_response delivery inlines for a terminal phase."""
    return {"Completed": "response", "Failed": "error"}.get(phase)


def fits_inline(size: int) -> bool:
    """Whether a stored body of `size` bytes is inlined (else omitted, unread)."""
    return size < INLINE_LIMIT_BYTES


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_…` secret: the base64 after the prefix; ValueError for a
    secret that is not one."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a signing secret starts with whsec_")
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256>` over `{id}.{timestamp}.{body}` (Standard Webhooks)."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(
    secret: str,
    message_id: str,
    timestamp: int,
    body: bytes,
    event: str,
    extra: Mapping[str, str],
) -> dict[str, str]:
    """Every header of the POST; the endpoint's own first, so none can replace these
    (the CRD and the API refuse the reserved names anyway)."""
    return {
        **extra,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, message_id, timestamp, body),
        "X-Bifrost-Event": event,
    }


class Outcome(enum.StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    FAILED = "failed"


def classify(status_code: int | None) -> Outcome:
    """An attempt's outcome: any 2xx is delivered; 408, 429, 5xx and no answer at all
    (None: a network error or a timeout) are retried; anything else, 3xx included
    (redirects are never followed), fails for good."""
    if status_code is None or status_code in (408, 429) or status_code >= 500:
        return Outcome.RETRY
    if 200 <= status_code < 300:
        return Outcome.DELIVERED
    return Outcome.FAILED


def retry_delay(attempts_made: int, draw: float) -> float:
    """Seconds before the next attempt after `attempts_made` (≥ 1) failed ones; `draw`
    in [0, 1) picks the jitter, so the caller owns the randomness."""
    base = min(math.ldexp(FIRST_RETRY_SECONDS, attempts_made - 1), MAX_RETRY_SECONDS)
    return base * (1 - JITTER + 2 * JITTER * draw)


def longest_delivery_seconds() -> float:
    """The longest a delivery can take by the policy: the most attempts an endpoint may
    ask for, each timing out, after the longest backoffs (jitter at its top). A job's
    expiry waits at most this long for its pending notification."""
    waits = sum(retry_delay(made, 1.0) for made in range(1, MAX_ATTEMPTS))
    return waits + MAX_ATTEMPTS * MAX_TIMEOUT_SECONDS


@dataclass(frozen=True)
class Attempt:
    """One attempt as recorded on the job (never the payload)."""

    at: datetime
    status_code: int | None
    latency_ms: int
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "time": self.at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "latencyMs": self.latency_ms,
        }
        if self.status_code is not None:
            record["statusCode"] = self.status_code
        if self.error:
            record["error"] = self.error[:256]
        return record
