"""The submit quota: how much a namespace may hold before new jobs are refused.

Two kinds of limit, both checked before anything is written:

- the backlog (`max_pending_jobs`, and per virtual key): jobs not yet terminal. Every
  waiting job costs the operator memory and the queue a slot; past the cap a client
  waits (429, Retry-After) instead of the operator running out of memory.
- what is stored (`max_jobs`, `max_stored_bytes`), which matters with the secrets
  backend:

With the `secrets` payload backend every body lands in etcd, the one database the whole
cluster depends on, so the API refuses a submit that would take the stored bodies or
the number of jobs past their limits, before anything is written. The usage is the API's
own job cache (every replica watches every job), so the check costs no round trip; a
few submits racing on several replicas may overshoot by what is in flight, which the
chart's ResourceQuota (a hard count of AsyncJobs and Secrets) bounds.

A full quota is 429 with Retry-After: jobs finish and results expire, so waiting is the
remedy.
"""

from __future__ import annotations

from dataclasses import dataclass

from asyncjobs.api.errors import ApiError

# Seconds a client is told to wait; results expire continuously, so a short wait often
# finds room.
RETRY_AFTER_SECONDS = 30
# A backlog drains at the operator's pace: look again sooner.
BACKLOG_RETRY_AFTER_SECONDS = 5


@dataclass(frozen=True)
class Usage:
    jobs: int
    stored_bytes: int
    # Jobs not yet terminal: all of them, and those of the submitting virtual key.
    pending: int = 0
    pending_of_key: int = 0


@dataclass(frozen=True)
class Limits:
    """None: no limit."""

    max_jobs: int | None = None
    max_stored_bytes: int | None = None
    max_pending_jobs: int | None = None
    max_pending_per_key: int | None = None


def refusal(
    usage: Usage, limits: Limits, body_size: int, *, with_key: bool = False
) -> ApiError | None:
    """The 429 a submit of `body_size` bytes gets (`with_key`: it names a virtual key,
    whose own backlog counts too), or None when it fits."""
    backlog = _backlog_refusal(usage, limits, with_key)
    if backlog is not None:
        return backlog
    if limits.max_jobs is not None and usage.jobs >= limits.max_jobs:
        message = (
            f"job quota exceeded: {usage.jobs} jobs are stored and at most "
            f"{limits.max_jobs} are allowed; retry after some expire"
        )
    elif (
        limits.max_stored_bytes is not None
        and usage.stored_bytes + body_size > limits.max_stored_bytes
    ):
        message = (
            f"storage quota exceeded: {usage.stored_bytes} bytes are stored, this request "
            f"adds {body_size} and at most {limits.max_stored_bytes} are allowed; retry after "
            "some results expire"
        )
    else:
        return None
    return ApiError(429, message, {"Retry-After": str(RETRY_AFTER_SECONDS)})


def _backlog_refusal(usage: Usage, limits: Limits, with_key: bool) -> ApiError | None:
    if limits.max_pending_jobs is not None and usage.pending >= limits.max_pending_jobs:
        message = (
            f"backlog full: {usage.pending} jobs are waiting or running and at most "
            f"{limits.max_pending_jobs} are allowed; retry later"
        )
    elif (
        with_key
        and limits.max_pending_per_key is not None
        and usage.pending_of_key >= limits.max_pending_per_key
    ):
        message = (
            f"backlog full for this virtual key: {usage.pending_of_key} of its jobs are "
            f"waiting or running and at most {limits.max_pending_per_key} are allowed; "
            "retry later"
        )
    else:
        return None
    return ApiError(429, message, {"Retry-After": str(BACKLOG_RETRY_AFTER_SECONDS)})
