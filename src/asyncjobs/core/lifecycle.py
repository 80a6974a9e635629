"""The AsyncJob state machine: pure decisions from (job, event, now) to the next step.

Every choice the operator makes about a job (claim it, resume it after a crash, retry,
fall back, complete, fail, delete) is taken here, from the object as the apiserver
returned it, an event saying what just happened, and the time, which the caller passes
in. Nothing here does I/O or reads a clock, so the rules are table-tested
(tests/unit/test_lifecycle.py) and the kopf adapter only carries the steps out.

Counting: `attempts` is the number of provider calls started, persisted before each
call, so a call interrupted by an operator crash still counts. Each target (the model,
then each fallback in order) gets 1 + backoffLimit tries for retryable failures (429,
5xx, timeouts, connection errors); any other failure moves to the next target at once,
and with none left the job fails. A restarted operator resumes an interrupted job while
attempts < (1 + backoffLimit) x targets, the most an uninterrupted run could use, so a
job that keeps crashing the operator still ends, with BackoffLimitExceeded.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from asyncjobs.core.conditions import ConditionType, Reason, set_condition
from asyncjobs.core.errors import BifrostError, ExtraFields
from asyncjobs.core.jobs import Phase, format_time, parse_time
from asyncjobs.core.kube import KubeObject
from asyncjobs.core.providers.base import ProviderError

# The status code of a failure that has no provider answer to report (spec §3).
NO_PROVIDER_STATUS = 500


@dataclass(frozen=True)
class Policy:
    """Defaults for what a job's spec leaves unset, and the retry timing."""

    default_deadline_seconds: int = 3600
    default_backoff_limit: int = 3
    default_ttl_seconds: int = 3600
    backoff_base_seconds: float = 1.0
    backoff_max_seconds: float = 60.0
    # The API creates the AsyncJob a moment before its request Secret.
    request_grace_seconds: float = 30.0
    request_poll_seconds: float = 0.5


@dataclass(frozen=True)
class Target:
    """One provider/model pair to try."""

    provider: str
    model: str

    @classmethod
    def parse(cls, text: str) -> Target:
        provider, _, model = text.partition("/")
        return cls(provider, model)

    def __str__(self) -> str:
        return f"{self.provider}/{self.model}"


@dataclass(frozen=True)
class Job:
    """The facts about one AsyncJob the decisions need, read from its object."""

    name: str
    uid: str
    generation: int | None
    request_type: str
    targets: tuple[Target, ...]
    ttl_seconds: int
    submitted_at: datetime
    deadline: datetime
    backoff_limit: int
    status: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_object(cls, obj: KubeObject, policy: Policy) -> Job:
        metadata = obj["metadata"]
        spec = obj.get("spec") or {}
        submitted_text = spec.get("submittedAt") or metadata["creationTimestamp"]
        submitted_at = parse_time(submitted_text)
        deadline_seconds = spec.get("activeDeadlineSeconds") or policy.default_deadline_seconds
        backoff_limit = spec.get("backoffLimit")
        return cls(
            name=metadata["name"],
            uid=metadata.get("uid", ""),
            generation=metadata.get("generation"),
            request_type=spec.get("requestType", ""),
            targets=tuple(
                Target.parse(text) for text in [spec.get("model", ""), *spec.get("fallbacks", [])]
            ),
            ttl_seconds=spec.get("resultTTLSeconds") or policy.default_ttl_seconds,
            submitted_at=submitted_at,
            deadline=submitted_at + timedelta(seconds=deadline_seconds),
            backoff_limit=policy.default_backoff_limit if backoff_limit is None else backoff_limit,
            status=obj.get("status") or {},
        )

    @property
    def phase(self) -> Phase:
        return Phase(self.status.get("phase", Phase.PENDING.value))

    @property
    def attempts(self) -> int:
        return int(self.status.get("attempts", 0))

    @property
    def max_attempts(self) -> int:
        return (1 + self.backoff_limit) * len(self.targets)


# --- events: what just happened ---------------------------------------------------


@dataclass(frozen=True)
class Observed:
    """The job was seen (listed or watched) and no task of this process runs it."""


@dataclass(frozen=True)
class AttemptStarting:
    """A provider call is about to start on targets[target]."""

    target: int
    reason: Reason


@dataclass(frozen=True)
class Succeeded:
    target: int
    result_ref: Mapping[str, Any]
    usage: Mapping[str, int] | None = None


@dataclass(frozen=True)
class ProviderFailed:
    target: int
    tries_on_target: int  # including the call that just failed
    error: ProviderError


@dataclass(frozen=True)
class RequestMissing:
    """The request Secret does not exist (yet)."""


@dataclass(frozen=True)
class Unrunnable:
    """The job cannot run as specified (bad request body, provider not configured)."""

    reason: Reason
    message: str
    status_code: int = NO_PROVIDER_STATUS


@dataclass(frozen=True)
class DeadlinePassed:
    pass


Event = (
    Observed
    | AttemptStarting
    | Succeeded
    | ProviderFailed
    | RequestMissing
    | Unrunnable
    | DeadlinePassed
)


# --- steps: what to do next -------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """Start (or resume) the job: the next call goes to targets[target]."""

    target: int
    tries_on_target: int
    reason: Reason


@dataclass(frozen=True)
class Retry:
    """Wait `delay` seconds, then call targets[target]."""

    delay: float
    target: int
    tries_on_target: int
    reason: Reason


@dataclass(frozen=True)
class WriteStatus:
    """Merge-patch the status; `phase` is the phase it moves the job to."""

    status: dict[str, Any]
    phase: Phase
    reason: Reason
    message: str


@dataclass(frozen=True)
class WaitForRequest:
    delay: float


@dataclass(frozen=True)
class ExpireAt:
    """A terminal job: delete it at `at`."""

    at: datetime


@dataclass(frozen=True)
class Delete:
    pass


Step = Run | Retry | WriteStatus | WaitForRequest | ExpireAt | Delete


def decide(job: Job, event: Event, now: datetime, policy: Policy) -> Step:
    """The one entry point: the next step for a job after an event."""
    match event:
        case Observed():
            return _observed(job, now)
        case AttemptStarting(target=target, reason=reason):
            return _attempt_starting(job, target, reason, now)
        case Succeeded():
            return _succeeded(job, event, now)
        case ProviderFailed():
            return _provider_failed(job, event, now, policy)
        case RequestMissing():
            return _request_missing(job, now, policy)
        case Unrunnable(reason=reason, message=message, status_code=status_code):
            return _fail_by_gateway(job, now, reason, message, status_code)
        case DeadlinePassed():
            return _deadline(job, now)


def _observed(job: Job, now: datetime) -> Step:
    if job.phase.terminal:
        expires = _expires_at(job, now)
        return Delete() if now >= expires else ExpireAt(expires)
    if now >= job.deadline:
        return _deadline(job, now)
    if job.phase is Phase.PENDING:
        return Run(target=0, tries_on_target=0, reason=Reason.CLAIMED)
    # Processing, yet no task of ours runs it: an operator died during this attempt.
    interrupted = _target_index(job, job.status.get("modelUsed"))
    following = _next_call(job, interrupted, 1)
    if job.attempts >= job.max_attempts or following is None:
        return _fail_by_gateway(
            job,
            now,
            Reason.BACKOFF_LIMIT_EXCEEDED,
            f"the operator stopped during attempt {job.attempts} and no attempts are left",
            NO_PROVIDER_STATUS,
        )
    return Run(target=following[0], tries_on_target=following[1], reason=Reason.RESUMED)


def _attempt_starting(job: Job, target: int, reason: Reason, now: datetime) -> WriteStatus:
    chosen = job.targets[target]
    attempts = job.attempts + 1
    message = f"attempt {attempts} on {chosen}"
    status = {
        "phase": Phase.PROCESSING.value,
        "attempts": attempts,
        "startTime": format_time(now),
        "provider": chosen.provider,
        "modelUsed": str(chosen),
        "conditions": set_condition(
            job.status.get("conditions", []),
            ConditionType.PROCESSING,
            True,
            reason,
            message,
            format_time(now),
            job.generation,
        ),
        "observedGeneration": job.generation,
    }
    return WriteStatus(_without_none(status), Phase.PROCESSING, reason, message)


def _succeeded(job: Job, event: Succeeded, now: datetime) -> WriteStatus:
    chosen = job.targets[event.target]
    extra: dict[str, Any] = {"resultRef": dict(event.result_ref)}
    if event.usage:
        extra["usage"] = dict(event.usage)
    return _finish(
        job,
        now,
        completed=True,
        reason=Reason.SUCCEEDED,
        message=f"completed by {chosen}",
        status_code=200,
        target=chosen,
        extra=extra,
    )


def _provider_failed(job: Job, event: ProviderFailed, now: datetime, policy: Policy) -> Step:
    if now >= job.deadline:
        return _deadline(job, now)
    error = event.error
    if error.retryable and event.tries_on_target <= job.backoff_limit:
        delay = backoff_delay(job.name, event.tries_on_target, error.retry_after, policy)
        return Retry(delay, event.target, event.tries_on_target, Reason.RETRYING)
    if event.target + 1 < len(job.targets):
        return Retry(0.0, event.target + 1, 0, Reason.FALLING_BACK)
    chosen = job.targets[event.target]
    status_code = error.status_code or NO_PROVIDER_STATUS
    reason = Reason.BACKOFF_LIMIT_EXCEEDED if error.retryable else Reason.PROVIDER_ERROR
    bifrost = BifrostError(
        message=error.message,
        status_code=status_code,
        type=error.error_type,
        code=error.code,
        param=error.param,
        extra_fields=_extra_fields(job, chosen),
    )
    return _finish(
        job,
        now,
        completed=False,
        reason=reason,
        message=f"{chosen} answered {status_code} after {job.attempts} attempt(s)",
        status_code=status_code,
        target=chosen,
        extra={"error": bifrost.to_dict()},
    )


def _request_missing(job: Job, now: datetime, policy: Policy) -> Step:
    waited = (now - job.submitted_at).total_seconds()
    if waited < policy.request_grace_seconds:
        remaining = policy.request_grace_seconds - waited
        return WaitForRequest(min(policy.request_poll_seconds, remaining))
    return _fail_by_gateway(
        job,
        now,
        Reason.REQUEST_NOT_FOUND,
        f"the request body was not stored within {policy.request_grace_seconds:g}s",
        NO_PROVIDER_STATUS,
    )


def _deadline(job: Job, now: datetime) -> WriteStatus:
    seconds = (job.deadline - job.submitted_at).total_seconds()
    return _fail_by_gateway(
        job,
        now,
        Reason.DEADLINE_EXCEEDED,
        f"the job did not finish within its deadline of {seconds:g}s",
        504,
    )


def result_unreadable(job: Job, now: datetime, message: str) -> WriteStatus:
    """A Completed job whose stored result is missing or does not match its reference
    ends Failed instead, so a poll answers a clear error rather than 500 forever. The
    merge patch drops the reference (null) and turns the Complete condition off."""
    step = _fail_by_gateway(job, now, Reason.RESULT_UNREADABLE, message, NO_PROVIDER_STATUS)
    step.status["resultRef"] = None
    step.status["usage"] = None
    step.status["conditions"] = set_condition(
        step.status["conditions"],
        ConditionType.COMPLETE,
        False,
        Reason.RESULT_UNREADABLE,
        message,
        format_time(now),
        job.generation,
    )
    return step


def _fail_by_gateway(
    job: Job, now: datetime, reason: Reason, message: str, status_code: int
) -> WriteStatus:
    """A failure the gateway itself reports (no provider error to pass on)."""
    chosen = job.targets[_target_index(job, job.status.get("modelUsed"))]
    bifrost = BifrostError(
        message=message,
        status_code=status_code,
        is_bifrost_error=True,
        extra_fields=_extra_fields(job, chosen),
    )
    return _finish(
        job,
        now,
        completed=False,
        reason=reason,
        message=message,
        status_code=status_code,
        target=chosen,
        extra={"error": bifrost.to_dict()},
    )


def _finish(
    job: Job,
    now: datetime,
    *,
    completed: bool,
    reason: Reason,
    message: str,
    status_code: int,
    target: Target,
    extra: dict[str, Any],
) -> WriteStatus:
    stamp = format_time(now)
    conditions = set_condition(
        job.status.get("conditions", []),
        ConditionType.PROCESSING,
        False,
        reason,
        message,
        stamp,
        job.generation,
    )
    conditions = set_condition(
        conditions,
        ConditionType.COMPLETE if completed else ConditionType.FAILED,
        True,
        reason,
        message,
        stamp,
        job.generation,
    )
    phase = Phase.COMPLETED if completed else Phase.FAILED
    status: dict[str, Any] = {
        "phase": phase.value,
        "completionTime": stamp,
        "expiresAt": format_time(now + timedelta(seconds=job.ttl_seconds)),
        "duration": format_duration((now - job.submitted_at).total_seconds()),
        "statusCode": status_code,
        "provider": target.provider,
        "modelUsed": str(target),
        "conditions": conditions,
        "observedGeneration": job.generation,
        **extra,
    }
    return WriteStatus(_without_none(status), phase, reason, message)


def _expires_at(job: Job, now: datetime) -> datetime:
    """expiresAt, or for a terminal status written without one, completion (or now) + TTL."""
    if job.status.get("expiresAt"):
        return parse_time(job.status["expiresAt"])
    completed = job.status.get("completionTime")
    return (parse_time(completed) if completed else now) + timedelta(seconds=job.ttl_seconds)


def _next_call(job: Job, target: int, tries_done: int) -> tuple[int, int] | None:
    """Where the call after `tries_done` calls on `target` goes, if anywhere."""
    if tries_done <= job.backoff_limit:
        return target, tries_done
    if target + 1 < len(job.targets):
        return target + 1, 0
    return None


def _target_index(job: Job, model_used: object) -> int:
    for index, target in enumerate(job.targets):
        if str(target) == model_used:
            return index
    return 0


def _extra_fields(job: Job, target: Target) -> ExtraFields:
    return ExtraFields(
        provider=target.provider, model_requested=target.model, request_type=job.request_type
    )


def backoff_delay(name: str, tries: int, retry_after: float | None, policy: Policy) -> float:
    """Seconds before retry number `tries`: Retry-After when the provider sent one, else
    exponential from the base, capped, plus up to 10% jitter that is stable per job (so
    jobs failing together do not retry together, and tests stay deterministic)."""
    if retry_after is not None and retry_after >= 0:
        return float(retry_after)
    exponential = min(policy.backoff_max_seconds, policy.backoff_base_seconds * 2.0 ** (tries - 1))
    spread = (zlib.crc32(f"{name}/{tries}".encode()) % 1000) / 10000
    return exponential * (1 + spread)


def format_duration(seconds: float) -> str:
    """Like kubectl's DURATION column, with tenths below ten seconds."""
    if seconds < 10:
        return f"{max(seconds, 0):.1f}s"
    whole = math.floor(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}
