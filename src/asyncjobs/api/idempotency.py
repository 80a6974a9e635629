"""Idempotent submits: an `Idempotency-Key` header names the job it creates.

The job's name is derived from (virtual key id, idempotency key, window bucket) by a
SHA-256, so every API replica derives the same name and the apiserver's create
conflict (409 AlreadyExists) is the index: of two submits racing with one key, one
creates the job and the other finds it. No replica keeps any state of its own.

The window (default 24 h) is cut into buckets of its own length; a submit looks for
the job of its key in the current bucket and in the one before, and answers a job
found there that was submitted less than a window ago. So a key means one job for
exactly a window after its first submit, across a bucket boundary too, and nothing is
ever deleted to make room: past the window the same key names a job in a new bucket.

A job found for the key is the answer (202, its id) when it was made from the same
request: the same route's request type and the same body (compared by the SHA-256 the
job records of its stored request, spec.requestRef.sha256). Anything else is a 409.

Pure functions; store.py and submit_and_poll.py are the adapters.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Final

from asyncjobs.api.errors import ApiError
from asyncjobs.core.jobs import JobView, parse_time

HEADER: Final = "Idempotency-Key"
MAX_LENGTH: Final = 255
DEFAULT_WINDOW_SECONDS: Final = 24 * 3600
# Printable ASCII (spaces inside only): what a header carries safely everywhere.
_ACCEPTED = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]{0,253}[\x21-\x7e])?")

INVALID_KEY = f"{HEADER} must be 1 to {MAX_LENGTH} printable ASCII characters"
REUSED_KEY = (
    f"{HEADER} was already used with a different request: "
    "an idempotent retry must send the same body to the same route with the same virtual key"
)


def key_of(headers: Mapping[str, str]) -> str | None:
    """The submit's idempotency key; None when it sent none, ApiError(400) when the
    header is there but not a key (empty, too long, control or non-ASCII characters)."""
    value = headers.get(HEADER)
    if value is None:
        return None
    key = value.strip(" \t")
    if not _ACCEPTED.fullmatch(key):
        raise ApiError(400, INVALID_KEY)
    return key


def job_names(key_id: str | None, key: str, now: datetime, window: timedelta) -> list[str]:
    """The names the key's job may have: this bucket's first (where a new job goes),
    then the previous bucket's."""
    bucket = int(now.timestamp() // window.total_seconds())
    return [_job_name(key_id, key, bucket), _job_name(key_id, key, bucket - 1)]


def _job_name(key_id: str | None, key: str, bucket: int) -> str:
    # NUL cannot occur in a key id or a header value, so the fields cannot run together.
    material = "\0".join(("asyncjobs-idempotency-v1", key_id or "", str(bucket), key))
    digest = bytearray(hashlib.sha256(material.encode()).digest()[:16])
    # Shaped as a UUID v4, so it is a job id like any other (polls check that form).
    digest[6] = (digest[6] & 0x0F) | 0x40
    digest[8] = (digest[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(digest)))


def within_window(view: JobView, now: datetime, window: timedelta) -> bool:
    """Whether the key's job was submitted less than a window ago (it still answers)."""
    if not view.created_at:
        return False
    return now - parse_time(view.created_at) < window


def replays(view: JobView, key_id: str | None, request_type: str, body_sha256: str) -> bool:
    """Whether the found job was made from this very request (the same key, route and
    body); False means the key was reused for another request."""
    return (
        view.virtual_key_id == key_id
        and view.request_type == request_type
        and view.request_sha256 == body_sha256
    )


def conflict() -> ApiError:
    return ApiError(409, REUSED_KEY)
