"""Runs one job: the I/O around the decisions of core/lifecycle.py.

For each call the job waits for an admission slot, reads its request body (the API
writes the Secret a moment after the AsyncJob, so a missing one is awaited for a grace
period), records the attempt in its status, calls the provider, and then asks the
lifecycle what follows: a retry after a delay, the next fallback, or the terminal
status, which is written only after the result Secret exists. The whole run sits under
the job's deadline; when it passes, whatever is in progress is cancelled and the job
fails with DeadlineExceeded. Request and result content never reach a log line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from asyncjobs.controller.admission import Admission
from asyncjobs.controller.metrics import OUTCOME_COMPLETED, OUTCOME_FAILED, Metrics
from asyncjobs.controller.writer import JobWriter
from asyncjobs.core import payloads, results
from asyncjobs.core.conditions import Reason
from asyncjobs.core.jobs import Phase, parse_time
from asyncjobs.core.kube import KubeClient, KubeError, KubeObject
from asyncjobs.core.lifecycle import (
    AttemptStarting,
    DeadlinePassed,
    Job,
    Policy,
    ProviderFailed,
    RequestMissing,
    Retry,
    Run,
    Step,
    Succeeded,
    Unrunnable,
    WaitForRequest,
    WriteStatus,
    decide,
)
from asyncjobs.core.payloads import PayloadRef
from asyncjobs.core.providers.base import Provider, ProviderError, ProviderRequest, ProviderResult
from asyncjobs.core.request_types import RequestType

log = logging.getLogger(__name__)


@dataclass
class Context:
    """What every job run shares."""

    client: KubeClient
    namespace: str
    providers: Mapping[str, Provider]
    admission: Admission
    writer: JobWriter
    metrics: Metrics
    policy: Policy
    wall: Callable[[], datetime]
    on_terminal: Callable[[KubeObject], None]


class JobRun:
    """One job from its first (or resumed) attempt to its terminal status."""

    def __init__(self, ctx: Context, obj: KubeObject) -> None:
        self.ctx = ctx
        self.obj = obj
        self.name: str = obj["metadata"]["name"]
        self.request: bytes | None = None
        self.first_start: datetime | None = None

    @property
    def obj(self) -> KubeObject:
        return self._obj

    @obj.setter
    def obj(self, value: KubeObject) -> None:
        # Parsed once per version of the object: the job's facts are read on every step.
        self._obj = value
        self.job = Job.from_object(value, self.ctx.policy)

    async def run(self, first: Run) -> None:
        """Carries the job to a terminal status (or until it is deleted)."""
        remaining = (self.job.deadline - self.ctx.wall()).total_seconds()
        try:
            async with asyncio.timeout(max(0.0, remaining)) as scope:
                final = await self._calls(first)
        except TimeoutError:
            if not scope.expired():
                raise
            step = decide(self.job, DeadlinePassed(), self.ctx.wall(), self.ctx.policy)
            final = step if isinstance(step, WriteStatus) else None
        if final is not None:
            await self.finish(final)

    async def finish(self, step: WriteStatus) -> None:
        updated = await self.ctx.writer.patch_status(self.name, step.status)
        if updated is None:
            return  # deleted meanwhile
        self.obj = updated
        self.ctx.on_terminal(updated)
        self._count_finished(step)
        if step.phase is Phase.FAILED:
            await self.ctx.writer.post_event(updated, step.reason.value, step.message)

    async def _calls(self, first: Run) -> WriteStatus | None:
        target, tries, reason = first.target, first.tries_on_target, first.reason
        precondition = self.obj["metadata"].get("resourceVersion")
        while True:
            chosen = self.job.targets[target]
            provider = self.ctx.providers.get(chosen.provider)
            if provider is None:
                message = f"provider {chosen.provider!r} is not configured"
                step = self._decide(Unrunnable(Reason.PROVIDER_NOT_CONFIGURED, message, 400))
                return step if isinstance(step, WriteStatus) else None
            outcome: ProviderResult | ProviderError | None = None
            started = 0.0
            priority = (self.job.submitted_at.timestamp(), self.name)
            async with self.ctx.admission.slot(chosen.provider, priority):
                if self.request is None:
                    self.request = await self._load_request()
                if self.request is not None:
                    if not await self._record_attempt(target, reason, precondition):
                        return None
                    precondition = None
                    started = asyncio.get_running_loop().time()
                    outcome = await self._call(provider, chosen.model, self.request)
            if outcome is None:
                step = self._decide(RequestMissing())
                if isinstance(step, WaitForRequest):
                    await asyncio.sleep(step.delay)
                    continue
                return step if isinstance(step, WriteStatus) else None
            if isinstance(outcome, ProviderResult):
                latency = asyncio.get_running_loop().time() - started
                return await self._store_result(target, outcome, latency)
            step = self._decide(ProviderFailed(target, tries + 1, outcome))
            if not isinstance(step, Retry):
                return step if isinstance(step, WriteStatus) else None
            self.ctx.metrics.retries.labels(chosen.provider, step.reason.value).inc()
            await asyncio.sleep(step.delay)
            target, tries, reason = step.target, step.tries_on_target, step.reason

    def _decide(self, event: RequestMissing | ProviderFailed | Unrunnable) -> Step:
        return decide(self.job, event, self.ctx.wall(), self.ctx.policy)

    async def _load_request(self) -> bytes | None:
        ref = PayloadRef.from_dict(self.obj["spec"]["requestRef"])
        try:
            return await payloads.load(self.ctx.client, self.ctx.namespace, ref)
        except KubeError as error:
            if error.status == 404:
                return None
            raise

    async def _record_attempt(self, target: int, reason: Reason, precondition: str | None) -> bool:
        """Writes the attempt into the status before the call; False if the job is gone."""
        now = self.ctx.wall()
        step = decide(self.job, AttemptStarting(target, reason), now, self.ctx.policy)
        assert isinstance(step, WriteStatus)
        updated = await self.ctx.writer.patch_status(self.name, step.status, precondition)
        if updated is None:
            return False
        self.obj = updated
        if self.first_start is None:
            self.first_start = now
            if reason is Reason.CLAIMED:
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
            status = str(outcome.status_code)
        except ProviderError as error:
            outcome = error
            status = str(error.status_code) if error.status_code else "none"
        except Exception as error:  # a provider bug or an unwrapped transport error
            kind = type(error).__name__
            log.warning("job %s: provider %s raised %s", self.name, provider.name, kind)
            outcome = ProviderError(
                f"the provider call failed ({kind})",
                status_code=None,
                retryable=True,
            )
            status = "none"
        finally:
            metrics.in_flight.dec()
        metrics.provider_latency.labels(provider.name, status).observe(loop.time() - started)
        return outcome

    async def _store_result(
        self, target: int, outcome: ProviderResult, latency: float
    ) -> WriteStatus:
        chosen = self.job.targets[target]
        body = results.result_body(
            outcome.body,
            request_type=self.job.request_type,
            provider=chosen.provider,
            model_requested=chosen.model,
            latency_ms=round(latency * 1000),
        )
        ref = await payloads.store(
            self.ctx.client, self.ctx.namespace, self.obj, "result", body, results.CONTENT_TYPE
        )
        self.ctx.metrics.apiserver_writes.labels("POST", "secrets").inc(ref.chunks)
        step = decide(
            self.job,
            Succeeded(target, ref.to_dict(), results.usage_of(outcome.body)),
            self.ctx.wall(),
            self.ctx.policy,
        )
        assert isinstance(step, WriteStatus)
        return step

    def _count_finished(self, step: WriteStatus) -> None:
        metrics = self.ctx.metrics
        status = self.obj.get("status") or {}
        outcome = OUTCOME_COMPLETED if step.phase is Phase.COMPLETED else OUTCOME_FAILED
        metrics.jobs_finished.labels(
            self.job.request_type, status.get("provider", ""), outcome, step.reason.value
        ).inc()
        done = parse_time(status["completionTime"])
        metrics.end_to_end.observe(max(0.0, (done - self.job.submitted_at).total_seconds()))
        if self.first_start is not None:
            metrics.execution.observe(max(0.0, (done - self.first_start).total_seconds()))
