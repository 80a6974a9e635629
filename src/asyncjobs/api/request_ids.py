"""The request id of each request: the client's `x-request-id` when it is a safe one,
otherwise one generated here.

A submit's request id is stored on its AsyncJob (spec.requestId) and answered by every
poll as `request_id`, as newer Bifrost versions do; every request's id is also in the
access log, so a client's id finds its lines there.

A client's value is used only when it is 1 to 128 characters of letters, digits and
`. _ : -`: enough for UUIDs, ULIDs and the ids proxies add, and nothing that could
split a log line, inject into JSON or carry user content. Any other value is replaced
by a generated id rather than refused: a request id is for correlation, and a proxy's
odd format must not fail an inference request.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Final

from aiohttp import web

HEADER: Final = "x-request-id"
MAX_LENGTH: Final = 128
# The CRD's pattern for spec.requestId is the same set.
_ACCEPTED = re.compile(r"[A-Za-z0-9._:-]{1,128}")

# Where the middleware leaves the id for the views.
KEY: Final = web.RequestKey("request_id", str)


def accepted(value: str | None) -> str | None:
    """The client's request id when it may be stored and logged as it is, else None."""
    if value is None:
        return None
    value = value.strip()
    return value if _ACCEPTED.fullmatch(value) else None


def of_request(headers: Mapping[str, str]) -> str:
    """The request's id: the client's when accepted, otherwise a new UUID v4."""
    return accepted(headers.get(HEADER)) or str(uuid.uuid4())


def of(request: web.Request) -> str:
    """The id the middleware gave this request (a new one when it ran without it)."""
    found = request.get(KEY)
    return found if found is not None else of_request(request.headers)
