"""The list of a caller's jobs (`GET /v1/async/jobs`), an extension: Bifrost has none.

Who sees what: a caller with a virtual key sees the jobs of that key; a caller without
one sees every job when the install has a gateway token (which it then passed) and
nothing otherwise, because a job submitted without a key has its id as its only
credential and a list must not hand ids out.

Jobs come newest first (created_at, then id, both descending), filtered by status and
request type, `limit` at a time; `next_cursor` is an opaque position after the last
job of a page, so a page never repeats or skips a job that existed when the first page
was read, whatever is submitted meanwhile. Expired jobs are left out, as polls answer
them 404. The cache keeps the jobs in this order, all and per key (job_order.py), so a
page costs about its size; only filters that exclude most jobs make it read more. Each
item is the job as a poll answers it, without its result or error, plus its request
type and model.

The answer comes from this replica's watch-fed job cache: complete once synced (503
before), and as fresh as the watch, so a job another replica created a moment ago may
appear a moment later. Pure functions here; views.py is the adapter.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from asyncjobs.api.errors import ApiError
from asyncjobs.api.settings import Settings
from asyncjobs.api.virtual_keys import KeyRing, from_headers
from asyncjobs.core.jobs import JobView, Phase, format_time
from asyncjobs.core.request_types import RequestType

PATH: Final = "/v1/async/jobs"
DEFAULT_LIMIT: Final = 20
MAX_LIMIT: Final = 100
_STATUSES = {phase.api_status: phase for phase in Phase}
_REQUEST_TYPES = {member.value for member in RequestType}


class Everyone:
    """The scope of a caller who passed the gateway token without a virtual key."""


EVERYONE: Final = Everyone()
# A virtual key's id, everyone, or None: nobody (an anonymous caller sees nothing).
Scope = str | Everyone | None


def scope_of(keys: KeyRing, headers: Mapping[str, str], settings: Settings) -> Scope:
    """Whose jobs the caller may list (the gateway token was checked already): its
    virtual key's (ApiError(400) for an unknown key, as a submit), else everyone's with
    a gateway token, else nobody's."""
    key = from_headers(headers)
    if key is not None:
        key_id = keys.resolve(key)
        if key_id is None:
            raise ApiError(400, "virtual key not found")
        return key_id
    return EVERYONE if settings.gateway_token is not None else None


@dataclass(frozen=True)
class ListQuery:
    status: Phase | None = None
    request_type: str | None = None
    limit: int = DEFAULT_LIMIT
    # (created_at, id) of the last job of the previous page.
    after: tuple[str, str] | None = None


def parse_query(query: Mapping[str, str]) -> ListQuery:
    """The list's parameters; ApiError(400) naming the one that is wrong."""
    status = query.get("status")
    if status is not None and status not in _STATUSES:
        raise ApiError(400, "status must be one of pending, processing, completed, failed")
    request_type = query.get("request_type")
    if request_type is not None and request_type not in _REQUEST_TYPES:
        raise ApiError(400, "request_type must be one of " + ", ".join(sorted(_REQUEST_TYPES)))
    return ListQuery(
        status=_STATUSES[status] if status is not None else None,
        request_type=request_type,
        limit=_limit(query.get("limit")),
        after=decode_cursor(query["cursor"]) if "cursor" in query else None,
    )


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise ApiError(400, f"limit must be an integer from 1 to {MAX_LIMIT}")
    return int(text)


def encode_cursor(view: JobView) -> str:
    raw = json.dumps([view.created_at, view.job_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, job_id = json.loads(raw)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ApiError(400, "cursor is not one this API returned") from exc
    if not isinstance(created_at, str) or not isinstance(job_id, str):
        raise ApiError(400, "cursor is not one this API returned")
    return created_at, job_id


# The answer to a caller who may list nothing.
NOTHING: Final[dict[str, Any]] = {"object": "list", "data": [], "has_more": False}


def page(newest: Iterable[JobView], query: ListQuery, now: datetime) -> dict[str, Any]:
    """The list's answer: the first `limit` jobs of `newest` (the caller's jobs after
    the cursor, newest first: job_order.py) that pass the filters."""
    chosen: Iterable[JobView] = newest
    if query.status is not None:
        chosen = (view for view in chosen if view.phase is query.status)
    if query.request_type is not None:
        chosen = (view for view in chosen if view.request_type == query.request_type)
    chosen = (view for view in chosen if view.expires_at is None or now < view.expires_at)
    # One more than the page, to tell whether a page follows.
    taken = list(itertools.islice(chosen, query.limit + 1))
    shown = taken[: query.limit]
    document: dict[str, Any] = {
        "object": "list",
        "data": [item(view) for view in shown],
        "has_more": len(taken) > query.limit,
    }
    if document["has_more"]:
        document["next_cursor"] = encode_cursor(shown[-1])
    return document


def item(view: JobView) -> dict[str, Any]:
    """A job as a poll answers it without `result` and `error`, plus its type and model."""
    document: dict[str, Any] = {"id": view.job_id}
    if view.request_id:
        document["request_id"] = view.request_id
    document["status"] = view.phase.api_status
    document["created_at"] = view.created_at
    if view.phase.terminal:
        if view.completed_at:
            document["completed_at"] = view.completed_at
        if view.expires_at is not None:
            document["expires_at"] = format_time(view.expires_at)
        if view.status_code is not None:
            document["status_code"] = view.status_code
        else:
            document["status_code"] = 200 if view.phase is Phase.COMPLETED else 500
    document["request_type"] = view.request_type
    document["model"] = view.model
    return document
