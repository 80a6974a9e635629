"""The AsyncJob state machine: pure decisions from (job, what happened, now) to the next step.

Every choice the operator makes about a job (claim it, resume it after a crash, retry,
fall back, complete, fail, delete) is taken here, from the object as the apiserver
returned it, what just happened, and the time, which the caller passes in. Each thing
that can happen has its own function with an exact return type. Nothing here does I/O
or reads a clock, so the rules are table-tested (tests/unit/test_lifecycle.py) and the
operator only carries the steps out.

Counting, in the status:
- `attempts`: provider attempts, persisted before each call. Each target (the model,
  then each fallback in order) gets 1 + backoffLimit of them for retryable failures
  (429, 5xx, timeouts, connection errors); any other failure moves to the next target
  at once, and with none left the job fails. `attemptsOnModel` is the attempt's number
  on `modelUsed`, so a resumed job keeps its place in that budget.
- `interruptions`: times an operator stopped while the job was Processing (a crash, a
  node drain, a rolling upgrade). They are not the job's failures and spend no attempt;
  their own, larger limit (Policy.max_interruptions) still ends a job that crashes the
  operator every time.
- `repeatedCalls`: provider calls made again because an operator stopped during one
  and left no stored result. A stored result is final: a resumed job that finds one
  finishes from it, without calling the provider again.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from asyncjobs.core import cancel, webhook_delivery
from asyncjobs.core.conditions import ConditionType, Reason, set_condition
from asyncjobs.core.errors import BifrostError, ExtraFields
from asyncjobs.core.jobs import Phase, format_time, parse_time
from asyncjobs.core.model import (
    DEFAULT_PHASE,
    AsyncJobSpec,
    AsyncJobStatus,
    PayloadRefFields,
    StatusPatch,
    Usage,
    WebhookStatus,
    as_asyncjob,
    status_of,
    submitted_text,
)
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
    # The longest wait taken from a provider's Retry-After: a provider asking for hours
    # is probed again after this (its circuit breaker holds every job meanwhile).
    retry_after_max_seconds: float = 300.0
    # Operator stops a job survives; a job interrupted more often fails (a poison pill).
    max_interruptions: int = 20
    # The API creates the AsyncJob a moment before its request Secret; measured from
    # when the operator first finds it missing.
    request_grace_seconds: float = 30.0
    request_poll_seconds: float = 0.5


# Stands in for the request reference of an AsyncJob without a spec (never read).
_NO_REF = PayloadRefFields(secretName="", chunks=0, size=0, sha256="", contentType="")


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
    status: AsyncJobStatus = field(default_factory=lambda: AsyncJobStatus())
    cancel_requested: bool = False
    # The uid of the endpoint to notify when the job finishes (spec.webhookId).
    webhook_id: str | None = None

    @classmethod
    def from_object(cls, obj: Mapping[str, Any], policy: Policy) -> Job:
        """The facts of an AsyncJob, with the policy's defaults for what its spec
        leaves unset; raises KeyError, ValueError or TypeError for a mangled object."""
        job = as_asyncjob(obj)
        metadata = job["metadata"]
        spec = job.get("spec") or AsyncJobSpec(requestType="", model="", requestRef=_NO_REF)
        submitted_at = parse_time(submitted_text(job))
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
            status=status_of(job),
            cancel_requested=cancel.requested(metadata),
            webhook_id=spec.get("webhookId"),
        )

    @property
    def phase(self) -> Phase:
        return Phase(self.status.get("phase") or DEFAULT_PHASE)

    @property
    def attempts(self) -> int:
        return int(self.status.get("attempts", 0))

    @property
    def attempts_on_model(self) -> int:
        return int(self.status.get("attemptsOnModel", 0))

    @property
    def interruptions(self) -> int:
        return int(self.status.get("interruptions", 0))

    @property
    def repeated_calls(self) -> int:
        return int(self.status.get("repeatedCalls", 0))

    @property
    def current_target(self) -> int:
        """The index of `modelUsed` among the targets (0 before the first call)."""
        used = self.status.get("modelUsed")
        for index, target in enumerate(self.targets):
            if str(target) == used:
                return index
        return 0

    @property
    def calls(self) -> int:
        """Provider calls started so far; the latest one's number (results are stored
        per call, so a repeated call never overwrites or mixes with an earlier one)."""
        return self.attempts + self.repeated_calls


# --- steps: what to do next -------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """Start a call on targets[target], after `tries_on_target` calls already made on it.

    A RESUMED run repeats the call an operator lost when it stopped: same attempt
    number, counted as an interruption and a repeated call, not as a failure."""

    target: int
    tries_on_target: int
    reason: Reason


@dataclass(frozen=True)
class Resume:
    """A Processing job that no task of this process runs: an operator stopped during
    call number `call`. Its stored result, if any, is looked for before anything else,
    because a stored result is final."""

    call: int


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

    status: StatusPatch
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


# --- decisions: one function per thing that happened --------------------------------


def observed(job: Job, now: datetime) -> Run | Resume | WriteStatus | ExpireAt | Delete:
    """The job was seen (listed or watched) and no task of this process runs it."""
    if job.phase.terminal:
        expires = _expires_at(job, now)
        notification = job.status.get("webhook")
        if notification is not None and notification.get("pending"):
            # Deleting the job would lose its notification (and the receiver's result):
            # it waits for the delivery to end, at most as long as the longest retry
            # schedule an endpoint may set, so a deliverer that never ends cannot keep
            # it forever. The delivery's last write is watched and decides again.
            expires += timedelta(seconds=webhook_delivery.longest_delivery_seconds())
        return Delete() if now >= expires else ExpireAt(expires)
    if job.cancel_requested:
        return cancelled(job, now)
    if job.phase is Phase.PROCESSING:
        # Before the deadline is judged: a result stored just in time still counts.
        return Resume(call=job.calls)
    if now >= job.deadline:
        return deadline_passed(job, now)
    return Run(target=0, tries_on_target=0, reason=Reason.CLAIMED)


def cancelled(job: Job, now: datetime) -> WriteStatus:
    """A cancel was asked for a job that is not terminal: it fails at once (whatever
    call it had in progress is abandoned, a result stored meanwhile included), and its
    result TTL runs from now."""
    return _fail_by_gateway(
        job,
        now,
        Reason.CANCELLED,
        cancel.MESSAGE,
        cancel.STATUS_CODE,
        error_type=cancel.ERROR_TYPE,
    )


def interrupted_call_lost(job: Job, now: datetime, policy: Policy) -> Run | WriteStatus:
    """The interrupted call left no stored result: repeat it, unless the deadline has
    passed or the job has been interrupted too often (a job that crashes the operator
    every time must still end). Interruptions spend no provider attempt."""
    if now >= job.deadline:
        return deadline_passed(job, now)
    if job.interruptions >= policy.max_interruptions:
        message = (
            f"the operator stopped {job.interruptions + 1} times while running this job "
            f"(at most {policy.max_interruptions} interruptions are allowed)"
        )
        return _fail_by_gateway(
            job, now, Reason.INTERRUPTION_LIMIT_EXCEEDED, message, NO_PROVIDER_STATUS
        )
    target = job.current_target
    return Run(target, max(0, job.attempts_on_model - 1), Reason.RESUMED)


def attempt_starting(job: Job, run: Run, now: datetime) -> WriteStatus:
    """The status written before a provider call, so a crash during it is known."""
    chosen = job.targets[run.target]
    repeated = run.reason is Reason.RESUMED
    attempts = max(job.attempts, 1) if repeated else job.attempts + 1
    message = f"attempt {attempts} on {chosen}"
    if repeated:
        message += " (repeated: the operator stopped during it)"
    status = StatusPatch(
        phase=Phase.PROCESSING.value,
        attempts=attempts,
        attemptsOnModel=run.tries_on_target + 1,
        # Set once, like a Kubernetes Job's: when the first call started.
        startTime=job.status.get("startTime") or format_time(now),
        provider=chosen.provider,
        modelUsed=str(chosen),
        conditions=set_condition(
            job.status.get("conditions", []),
            ConditionType.PROCESSING,
            True,
            run.reason,
            message,
            format_time(now),
            job.generation,
        ),
    )
    if repeated:
        status["interruptions"] = job.interruptions + 1
        status["repeatedCalls"] = job.repeated_calls + 1
    if job.generation is not None:
        status["observedGeneration"] = job.generation
    return WriteStatus(status, Phase.PROCESSING, run.reason, message)


def succeeded(
    job: Job,
    target: int,
    result_ref: PayloadRefFields,
    usage: Usage | None,
    now: datetime,
    *,
    after_interruption: bool = False,
) -> WriteStatus:
    """The provider answered and its result is stored. `after_interruption`: the result
    was found stored by a resumed job, whose previous operator stopped before finishing."""
    chosen = job.targets[target]
    extra = StatusPatch(resultRef=result_ref)
    if usage:
        extra["usage"] = usage
    if after_interruption:
        extra["interruptions"] = job.interruptions + 1
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


def provider_failed(
    job: Job,
    target: int,
    tries_on_target: int,
    error: ProviderError,
    now: datetime,
    policy: Policy,
) -> Retry | WriteStatus:
    """A call failed; `tries_on_target` includes it."""
    if now >= job.deadline:
        return deadline_passed(job, now)
    if error.retryable and tries_on_target <= job.backoff_limit:
        if error.retry_after is not None:
            # The provider's own word: no call before then. Waiting past the deadline
            # would only end in a 504 that hides why.
            until = now + timedelta(seconds=max(0.0, error.retry_after))
            if until >= job.deadline:
                status = error.status_code or 429
                return overloaded_past_deadline(job, target, until, status, now)
        delay = backoff_delay(job.name, tries_on_target, error.retry_after, policy)
        return Retry(delay, target, tries_on_target, Reason.RETRYING)
    if target + 1 < len(job.targets):
        return Retry(0.0, target + 1, 0, Reason.FALLING_BACK)
    chosen = job.targets[target]
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
        extra=StatusPatch(error=bifrost.to_dict()),
    )


def request_missing(
    job: Job, missing_since: datetime, now: datetime, policy: Policy
) -> WaitForRequest | WriteStatus:
    """The request Secret is not there (yet). The grace runs from when this process
    first found it missing, on its own clock: neither the API's clock nor apiserver
    latency can shorten it, and the deadline still bounds the wait."""
    waited = (now - missing_since).total_seconds()
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


def unrunnable(
    job: Job, reason: Reason, message: str, now: datetime, status_code: int = NO_PROVIDER_STATUS
) -> WriteStatus:
    """The job cannot run as specified (bad request body, provider not configured, a
    request Secret that is not the job's own)."""
    return _fail_by_gateway(job, now, reason, message, status_code)


def overloaded_past_deadline(
    job: Job, target: int, until: datetime, status_code: int, now: datetime
) -> WriteStatus:
    """The provider takes no call from this job before `until` (its Retry-After, or its
    circuit breaker's cooldown), which is after the job's deadline: fail now, saying so.
    `status_code` is 429 when the provider rate-limited, else the 5xx it failed with."""
    chosen = job.targets[target]
    state = "rate limited" if status_code == 429 else "unavailable"
    message = (
        f"provider {chosen.provider} is {state} until {format_time(until)}, beyond the "
        f"job's deadline ({format_time(job.deadline)})"
    )
    return _fail_by_gateway(
        job, now, Reason.PROVIDER_OVERLOADED, message, status_code, target=chosen
    )


def deadline_passed(job: Job, now: datetime) -> WriteStatus:
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
    job: Job,
    now: datetime,
    reason: Reason,
    message: str,
    status_code: int,
    *,
    target: Target | None = None,
    error_type: str | None = None,
) -> WriteStatus:
    """A failure the gateway itself reports (no provider error to pass on), about
    `target` (default: the job's current one)."""
    chosen = target or job.targets[job.current_target]
    bifrost = BifrostError(
        message=message,
        status_code=status_code,
        is_bifrost_error=True,
        type=error_type,
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
        extra=StatusPatch(error=bifrost.to_dict()),
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
    extra: StatusPatch,
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
    status = StatusPatch(
        phase=phase.value,
        completionTime=stamp,
        expiresAt=format_time(now + timedelta(seconds=job.ttl_seconds)),
        duration=format_duration((now - job.submitted_at).total_seconds()),
        statusCode=status_code,
        provider=target.provider,
        modelUsed=str(target),
        conditions=conditions,
    )
    if job.generation is not None:
        status["observedGeneration"] = job.generation
    if job.webhook_id and "webhook" not in job.status:
        # In the same patch as the terminal phase: the notification is owed from the
        # moment the job is finished, whatever happens to this process next.
        status["webhook"] = WebhookStatus(
            pending=True, deliveryId=webhook_delivery.delivery_id(job.uid), attempts=0
        )
    status.update(extra)
    return WriteStatus(status, phase, reason, message)


def _expires_at(job: Job, now: datetime) -> datetime:
    """expiresAt, or for a terminal status written without one, completion (or now) + TTL."""
    if job.status.get("expiresAt"):
        return parse_time(job.status["expiresAt"])
    completed = job.status.get("completionTime")
    return (parse_time(completed) if completed else now) + timedelta(seconds=job.ttl_seconds)


def _extra_fields(job: Job, target: Target) -> ExtraFields:
    return ExtraFields(
        provider=target.provider, model_requested=target.model, request_type=job.request_type
    )


def backoff_delay(name: str, tries: int, retry_after: float | None, policy: Policy) -> float:
    """Seconds before retry number `tries`: Retry-After when the provider sent one (at
    most retry_after_max_seconds), else exponential from the base, capped; either plus
    up to 10% jitter that is stable per job (so jobs throttled together do not retry
    together, and tests stay deterministic)."""
    if retry_after is not None and retry_after >= 0:
        wait = min(float(retry_after), policy.retry_after_max_seconds)
    else:
        wait = min(policy.backoff_max_seconds, policy.backoff_base_seconds * 2.0 ** (tries - 1))
    spread = (zlib.crc32(f"{name}/{tries}".encode()) % 1000) / 10000
    return wait * (1 + spread)


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
