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

Next to the caps, a rate: how many submits per minute a virtual key may make
(`SubmitRates`, a token bucket per key; a default for every key, and a key's own
`submitsPerMinute` in its Secret), answered with 429 and the seconds until the next
submit is allowed, also before anything is written. It is per API replica (see
SubmitRates).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from asyncjobs.api.errors import ApiError
from asyncjobs.api.key_governance import REQUEST_LIMITED
from asyncjobs.core.limits import TokenBucket

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
class SubmitRate:
    """Submits a virtual key may make: `per_minute` on average, `burst` at once."""

    per_minute: int
    burst: int | None = None


@dataclass(frozen=True)
class Limits:
    """None: no limit."""

    max_jobs: int | None = None
    max_stored_bytes: int | None = None
    max_pending_jobs: int | None = None
    max_pending_per_key: int | None = None
    # Submits per minute of each virtual key, unless its Secret sets its own.
    submit_rate_per_key: SubmitRate | None = None


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


# --- the submit rate per virtual key --------------------------------------------------


def key_rate(default: SubmitRate | None, override: int | None) -> SubmitRate | None:
    """The rate that applies to a key: its Secret's submitsPerMinute when it sets one
    (0: no limit for this key), else the default (None: no limit)."""
    if override is None:
        return default
    if override == 0:
        return None
    return SubmitRate(override, default.burst if default else None)


class SubmitRates:
    """A token bucket per virtual key id (core/limits.py TokenBucket), in this replica.

    The buckets live in the replica's memory, so with N API replicas a key may submit up
    to N times its rate in all: each replica holds it to the rate by itself. Dividing by
    N would need the replica count (which an autoscaler changes) and an even spread of
    each key's submits over replicas, which keep-alive connections do not give; the
    documented per-replica limit is the one that holds. Buckets are kept per key id,
    bounded by the keys defined.
    """

    def __init__(self) -> None:
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, key_id: str, rate: SubmitRate | None, now: float) -> ApiError | None:
        """Spends one submit of `key_id` at `now` (seconds); the 429 when none is left
        (nothing is spent then)."""
        if rate is None:
            self._buckets.pop(key_id, None)
            return None
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = TokenBucket(rate.per_minute, now, burst=rate.burst)
        elif (bucket.rate, bucket.burst) != (rate.per_minute / 60.0, rate.burst):
            bucket.retune(rate.per_minute, now, burst=rate.burst)
        ready = bucket.ready_at(now)
        if ready > now:
            wait = max(1, math.ceil(ready - now))
            # Bifrost's answer to a virtual key over its request limit (type
            # request_limited, "Rate limit check failed: rate limit violated for VK:
            # request limit exceeded (…)"), with what this limit is: a rate, not a count.
            message = (
                "Rate limit check failed: rate limit violated for VK: request limit "
                f"exceeded (at most {rate.per_minute} submits per minute; retry after {wait}s)"
            )
            return ApiError(429, message, {"Retry-After": str(wait)}, outer_type=REQUEST_LIMITED)
        bucket.take(now)
        return None
