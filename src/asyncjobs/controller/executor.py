"""Runs one job: the I/O around the decisions of core/lifecycle.py.

For each call the job waits for an admission slot, reads its request body (the API
writes the Secret a moment after the AsyncJob, so a missing one is awaited for a grace
period), records the attempt in its status, calls the provider, and then asks the
lifecycle what follows: a retry after a delay, the next fallback, or the terminal
status. A provider answer is stored (retried in place while the apiserver is away, so
a Kubernetes error never pays the provider twice) before the terminal status names it,
and once stored it is final: a job resumed after its operator stopped first looks for
the result of the interrupted call and finishes from it. Each call's outcome is reported
to the admission queue before its slot is released, so an overloaded provider's circuit
breaker holds the other jobs before they spend an attempt; a job held past its deadline
fails at once with the provider's state (ProviderOverloaded). The whole run sits under the
job's deadline; when it passes, whatever is in progress is cancelled and the job fails
with DeadlineExceeded (unless its result is already stored). Request and result content
never reach a log line.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from asyncjobs.controller.admission import Admission, Call, ProviderCoolingDown
from asyncjobs.controller.metrics import (
    CALL_FAILED,
    CALL_NO_ANSWER,
    CALL_SUCCEEDED,
    OUTCOME_COMPLETED,
    OUTCOME_FAILED,
    RESUME_FAILED,
    RESUME_REPEATED,
    RESUME_REUSED,
    STATUS_NO_ANSWER,
    Metrics,
)
from asyncjobs.core import cpu_worker, error_summary, fair_share, large_bytes, lifecycle, results
from asyncjobs.core.conditions import Reason
from asyncjobs.core.cooldown import CAUSE_THROTTLED
from asyncjobs.core.jobs import Phase, parse_time
from asyncjobs.core.kube import ObjectClient
from asyncjobs.core.lifecycle import Job, Policy, Resume, Retry, Run, WaitForRequest, WriteStatus
from asyncjobs.core.model import AsyncJob, StatusPatch, Usage
from asyncjobs.core.payloads import (
    SECRETS,
    PayloadCorrupt,
    PayloadMissing,
    PayloadNotOwned,
    PayloadRef,
    PayloadStore,
    PayloadStoreError,
)
from asyncjobs.core.providers.base import Provider, ProviderError, ProviderRequest, ProviderResult
from asyncjobs.core.request_types import RequestType

log = logging.getLogger(__name__)


class StatusWriter(Protocol):
    """Writes a job's status and Events (controller/writer.py JobWriter)."""

    async def patch_status(
        self, name: str, status: StatusPatch, resource_version: str | None = None
    ) -> AsyncJob | None:
        """The job after the merge patch; None when it is gone. With a resource
        version, raises writer.Conflict when the job changed since."""
        ...

    async def post_event(self, job: AsyncJob, reason: str, message: str) -> None: ...


@dataclass
class Context:
    """What every job run shares."""

    client: ObjectClient
    namespace: str
    payloads: PayloadStore
    providers: Mapping[str, Provider]
    admission: Admission
    writer: StatusWriter
    metrics: Metrics
    policy: Policy
    wall: Callable[[], datetime]
    # Pauses between tries to store a result while the apiserver is unavailable; the
    # last repeats until the job's deadline.
    store_retry_delays: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0, 5.0)

    def __post_init__(self) -> None:
        # The cooldown metrics read the admission queue, which knows nothing of metrics.
        self.admission.on_cooldown = self.metrics.count_cooldown
        self.metrics.cooldowns_active.set_function(self.admission.cooling_down)
        self.metrics.jobs_held.set_function(self.admission.held)
        self.metrics.waiting_by_key.source = self.admission.waiting_by_group


class JobRun:
    """One job from its first (or resumed) attempt to its terminal status."""

    def __init__(self, ctx: Context, obj: AsyncJob) -> None:
        self.ctx = ctx
        self.obj = obj
        self.name: str = obj["metadata"]["name"]
        self.request: bytes | None = None
        self.first_start: datetime | None = None
        self.missing_since: datetime | None = None
        # The terminal status of a result already stored: final whatever happens next.
        self.stored: WriteStatus | None = None

    @property
    def obj(self) -> AsyncJob:
        return self._obj

    @obj.setter
    def obj(self, value: AsyncJob) -> None:
        # Parsed once per version of the object: the job's facts are read on every step.
        self._obj = value
        self.job = Job.from_object(value, self.ctx.policy)

    @property
    def policy(self) -> Policy:
        return self.ctx.policy

    async def run(self, first: Run | Resume) -> AsyncJob | None:
        """Carries the job to a terminal status; the job as written, or None when it
        was deleted meanwhile."""
        if isinstance(first, Resume):
            resumed = await self._resume(first)
            if isinstance(resumed, WriteStatus):
                return await self.finish(resumed)
            first = resumed
        remaining = (self.job.deadline - self.ctx.wall()).total_seconds()
        try:
            async with asyncio.timeout(max(0.0, remaining)) as scope:
                final = await self._calls(first)
        except TimeoutError:
            if not scope.expired():
                raise
            final = self.stored or lifecycle.deadline_passed(self.job, self.ctx.wall())
        return None if final is None else await self.finish(final)

    async def finish(self, step: WriteStatus) -> AsyncJob | None:
        """Writes the terminal status; the job as written, None when it is gone."""
        updated = await self.ctx.writer.patch_status(self.name, step.status)
        if updated is None:
            return None
        self.obj = updated
        self._count_finished(step)
        if step.phase is Phase.FAILED:
            await self.ctx.writer.post_event(updated, step.reason.value, step.message)
        return updated

    async def _resume(self, step: Resume) -> Run | WriteStatus:
        """An operator stopped during call `step.call`: finish from its stored result if
        there is one, else let the lifecycle decide whether to repeat the call."""
        interruptions = self.ctx.metrics.interruptions
        found = await self.ctx.payloads.find_result(self.obj, step.call)
        if found is not None:
            ref, body = found
            interruptions.labels(RESUME_REUSED).inc()
            log.info("job %s: finishing from the result stored by call %d", self.name, step.call)
            return lifecycle.succeeded(
                self.job,
                self.job.current_target,
                ref.to_dict(),
                await _stored_usage(body),
                self.ctx.wall(),
                after_interruption=True,
            )
        decision = lifecycle.interrupted_call_lost(self.job, self.ctx.wall(), self.policy)
        interruptions.labels(RESUME_REPEATED if isinstance(decision, Run) else RESUME_FAILED).inc()
        return decision

    async def _calls(self, first: Run) -> WriteStatus | None:
        run = first
        precondition = self.obj["metadata"].get("resourceVersion")
        while True:
            chosen = self.job.targets[run.target]
            provider = self.ctx.providers.get(chosen.provider)
            if provider is None:
                message = f"provider {chosen.provider!r} is not configured"
                return lifecycle.unrunnable(
                    self.job, Reason.PROVIDER_NOT_CONFIGURED, message, self.ctx.wall(), 400
                )
            outcome: ProviderResult | ProviderError | None = None
            started = 0.0
            try:
                async with self._slot(chosen.provider) as call:
                    if self.request is None:
                        loaded = await self._load_request()
                        if isinstance(loaded, WriteStatus):
                            return loaded
                        self.request = loaded
                    if self.request is not None:
                        if not await self._record_attempt(run, precondition):
                            return None
                        precondition = None
                        started = asyncio.get_running_loop().time()
                        outcome = await self._call(provider, chosen.model, self.request)
                        call.report(outcome)
            except ProviderCoolingDown as held:
                return self._held_past_deadline(run.target, held)
            if outcome is None:
                now = self.ctx.wall()
                self.missing_since = self.missing_since or now
                waiting = lifecycle.request_missing(self.job, self.missing_since, now, self.policy)
                if not isinstance(waiting, WaitForRequest):
                    return waiting
                await asyncio.sleep(waiting.delay)
                continue
            if isinstance(outcome, ProviderResult):
                latency = asyncio.get_running_loop().time() - started
                return await self._store_result(run.target, outcome, latency)
            after = lifecycle.provider_failed(
                self.job, run.target, run.tries_on_target + 1, outcome, self.ctx.wall(), self.policy
            )
            if not isinstance(after, Retry):
                return await self._keep_error_private(after)
            self.ctx.metrics.retries.labels(chosen.provider, after.reason.value).inc()
            await asyncio.sleep(after.delay)
            run = Run(after.target, after.tries_on_target, after.reason)

    def _slot(self, provider: str) -> AbstractAsyncContextManager[Call]:
        """A call slot, shared fairly between virtual keys and, within the job's key,
        the highest priority then the oldest job first; the deadline, on the queue's
        clock, lets the queue turn the job away when the provider is held past it."""
        admission = self.ctx.admission
        left = (self.job.deadline - self.ctx.wall()).total_seconds()
        spec = self.obj["spec"]
        return admission.slot(
            provider,
            fair_share.order_of(spec, self.job.submitted_at, self.name),
            admission.now() + left,
            group=fair_share.group_of(spec),
            weight=fair_share.weight_of(spec),
        )

    def _held_past_deadline(self, target: int, held: ProviderCoolingDown) -> WriteStatus:
        now = self.ctx.wall()
        until = now + timedelta(seconds=max(0.0, held.until - self.ctx.admission.now()))
        status = 429 if held.cause == CAUSE_THROTTLED else 503
        log.info("job %s: %s holds calls past the job's deadline", self.name, held.provider)
        return lifecycle.overloaded_past_deadline(self.job, target, until, status, now)

    async def _load_request(self) -> bytes | WriteStatus | None:
        """The request body; None while it is missing; a failure when it is not usable."""
        ref = PayloadRef.from_dict(self.obj["spec"]["requestRef"])
        try:
            return await self.ctx.payloads.get(ref, owner=self.obj)
        except PayloadMissing:
            return None
        except PayloadNotOwned:
            message = f"the stored request {ref.name} does not belong to this job"
            reason = Reason.REQUEST_NOT_OWNED
        except PayloadCorrupt:
            message = "the stored request does not match its size and checksum"
            reason = Reason.REQUEST_INVALID
        return lifecycle.unrunnable(self.job, reason, message, self.ctx.wall(), 400)

    async def _record_attempt(self, run: Run, precondition: str | None) -> bool:
        """Writes the attempt into the status before the call; False if the job is gone."""
        now = self.ctx.wall()
        step = lifecycle.attempt_starting(self.job, run, now)
        updated = await self.ctx.writer.patch_status(self.name, step.status, precondition)
        if updated is None:
            return False
        self.obj = updated
        if run.reason is Reason.RESUMED:
            self.ctx.metrics.repeated_calls.inc()
        if self.first_start is None:
            self.first_start = now
            if run.reason is Reason.CLAIMED:
                wait = (now - self.job.submitted_at).total_seconds()
                self.ctx.metrics.queue_wait.observe(max(0.0, wait))
        return True

    async def _call(
        self, provider: Provider, model: str, body: bytes
    ) -> ProviderResult | ProviderError:
        request = ProviderRequest(
            request_type=RequestType(self.job.request_type),
            model=model,
            body=body,
            content_type=self.obj["spec"]["requestRef"]["contentType"],
        )
        metrics = self.ctx.metrics
        loop = asyncio.get_running_loop()
        started = loop.time()
        metrics.in_flight.inc()
        outcome: ProviderResult | ProviderError
        try:
            outcome = await provider.call(request)
            status, counted = str(outcome.status_code), CALL_SUCCEEDED
        except ProviderError as error:
            outcome = error
            status = str(error.status_code) if error.status_code else STATUS_NO_ANSWER
            counted = CALL_FAILED if error.status_code else CALL_NO_ANSWER
        except Exception as error:  # a provider bug or an unwrapped transport error
            kind = type(error).__name__
            log.warning("job %s: provider %s raised %s", self.name, provider.name, kind)
            outcome = ProviderError(
                f"the provider call failed ({kind})",
                status_code=None,
                retryable=True,
            )
            status, counted = STATUS_NO_ANSWER, CALL_NO_ANSWER
        finally:
            metrics.in_flight.dec()
        metrics.provider_calls.labels(provider.name, counted).inc()
        metrics.provider_latency.labels(provider.name, status).observe(loop.time() - started)
        return outcome

    async def _store_result(
        self, target: int, outcome: ProviderResult, latency: float
    ) -> WriteStatus:
        """Stores the answer under this call's own name, trying again in place while
        the apiserver is unavailable (the deadline bounds it), then decides the status."""
        chosen = self.job.targets[target]
        # A large answer arrives prepared by the CPU worker: only joined here, not parsed.
        prepared = outcome.for_storage()
        parts = results.stored_parts(
            prepared,
            request_type=self.job.request_type,
            provider=chosen.provider,
            model_requested=chosen.model,
            latency_ms=round(latency * 1000),
        )
        body = await large_bytes.joined(parts)
        for delay in _repeating_last(self.ctx.store_retry_delays):
            try:
                ref = await self.ctx.payloads.put(
                    self.obj, "result", body, results.CONTENT_TYPE, call=self.job.calls
                )
                break
            except PayloadStoreError as error:
                if not error.transient:
                    raise
                log.warning("job %s: storing the result failed (%s); retrying", self.name, error)
            await asyncio.sleep(delay)
        if ref.backend == SECRETS:
            self.ctx.metrics.apiserver_writes.labels("POST", "secrets").inc(ref.chunks)
        self.stored = lifecycle.succeeded(
            self.job, target, ref.to_dict(), prepared.usage, self.ctx.wall()
        )
        return self.stored

    async def _keep_error_private(self, step: WriteStatus) -> WriteStatus:
        """A provider's error may quote the request: the whole error is stored with the
        job's bodies (for the API to return to the job's submitter) and the status,
        which `view` can read, keeps a summary of it (core/error_summary.py). If it
        cannot be stored, the client gets the summary too; the message is never kept
        where it should not be."""
        error = step.status.get("error")
        if not error_summary.is_provider_error(error):
            return step
        try:
            ref = await self.ctx.payloads.put(
                self.obj,
                error_summary.ERROR_KIND,
                error_summary.stored_body(error),
                error_summary.CONTENT_TYPE,
                call=self.job.calls,
            )
        except PayloadStoreError as failure:
            log.warning("job %s: storing the provider's error failed (%s)", self.name, failure)
        else:
            step.status["resultRef"] = ref.to_dict()
            if ref.backend == SECRETS:
                self.ctx.metrics.apiserver_writes.labels("POST", "secrets").inc(ref.chunks)
        step.status["error"] = error_summary.summary(error)
        return step

    def _count_finished(self, step: WriteStatus) -> None:
        metrics = self.ctx.metrics
        status = self.obj.get("status") or {}
        outcome = OUTCOME_COMPLETED if step.phase is Phase.COMPLETED else OUTCOME_FAILED
        metrics.jobs_finished.labels(
            self.job.request_type, status.get("provider", ""), outcome, step.reason.value
        ).inc()
        spec = self.obj["spec"]
        key_id = spec.get("virtualKeyId")
        if key_id:
            labels = (key_id, status.get("provider", ""), spec.get("model", ""))
            metrics.key_requests.labels(*labels, outcome).inc()
            usage = status.get("usage") or {}
            metrics.key_tokens.labels(*labels, "input").inc(usage.get("promptTokens", 0))
            metrics.key_tokens.labels(*labels, "output").inc(usage.get("completionTokens", 0))
        done = parse_time(status["completionTime"])
        metrics.end_to_end.observe(max(0.0, (done - self.job.submitted_at).total_seconds()))
        if self.first_start is not None:
            metrics.execution.observe(max(0.0, (done - self.first_start).total_seconds()))


def _repeating_last(delays: tuple[float, ...]) -> Iterator[float]:
    yield from delays
    while True:
        yield delays[-1]


async def _stored_usage(body: bytes) -> Usage | None:
    """The usage a stored result records. A large result is parsed in the CPU worker:
    parsing tens of MiB of JSON would hold the loop (and the member Lease's renewals)
    for seconds; inline only when the worker cannot take it (the usage must not be lost:
    token budgets count it)."""
    if cpu_worker.is_heavy(body):
        try:
            return await cpu_worker.shared().run(_usage_of_stored, body)
        except (cpu_worker.WorkerBusy, cpu_worker.WorkerStopped):
            log.warning("the CPU worker cannot take a stored result; parsing it here")
    return _usage_of_stored(body)


def _usage_of_stored(body: bytes) -> Usage | None:
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    return results.usage_of(parsed) if isinstance(parsed, dict) else None
