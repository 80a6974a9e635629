"""The submit quota: how much a namespace may hold before new jobs are refused.

With the `secrets` payload backend every body lands in etcd, the one database the whole
cluster depends on, so the API refuses a submit that would take the stored bodies or
the number of jobs past their limits, before anything is written. The usage is the API's
own job cache (every replica watches every job), so the check costs no round trip; a
few submits racing on several replicas may overshoot by what is in flight, which the
chart's ResourceQuota (a hard count of AsyncJobs and Secrets) bounds.

A full quota is 429 with Retry-After: results expire, so waiting is the remedy.
"""

from __future__ import annotations

from dataclasses import dataclass

from asyncjobs.api.errors import ApiError

# Seconds a client is told to wait; results expire continuously, so a short wait often
# finds room.
RETRY_AFTER_SECONDS = 30


@dataclass(frozen=True)
class Usage:
    jobs: int
    stored_bytes: int


@dataclass(frozen=True)
class Limits:
    """None: no limit."""

    max_jobs: int | None = None
    max_stored_bytes: int | None = None


def refusal(usage: Usage, limits: Limits, body_size: int) -> ApiError | None:
    """The 429 a submit of `body_size` bytes gets, or None when it fits."""
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
