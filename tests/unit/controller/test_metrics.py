"""Operator metrics: finished jobs carry the terminal reason, and the phase gauge follows
the watch without drifting."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from asyncjobs.controller.executor import JobRun
from asyncjobs.controller.metrics import Metrics
from asyncjobs.core import lifecycle
from asyncjobs.core.conditions import Reason
from asyncjobs.core.jobs import format_time
from asyncjobs.core.kube import KubeObject
from asyncjobs.core.lifecycle import Job, Policy, WriteStatus
from asyncjobs.core.providers.base import ProviderError
from tests.unit.controller.fakes import StatusWriter, context

SUBMITTED = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = Policy(default_deadline_seconds=60, default_backoff_limit=1, request_grace_seconds=5)


def asyncjob(status: dict[str, Any] | None = None) -> KubeObject:
    return {
        "metadata": {"name": "j1", "uid": "u1", "creationTimestamp": format_time(SUBMITTED)},
        "spec": {
            "requestType": "chat_completion",
            "model": "openai/gpt-4o",
            "fallbacks": ["anthropic/claude"],
            "submittedAt": format_time(SUBMITTED),
            "requestRef": {"name": "j1-request", "contentType": "application/json"},
        },
        "status": status or {},
    }


PROCESSING_TOO_OFTEN = {
    "phase": "Processing",
    "attempts": 1,
    "modelUsed": "anthropic/claude",
    "interruptions": 20,
}
BAD_REQUEST = ProviderError("bad", status_code=400, retryable=False)
OVERLOADED = ProviderError("busy", status_code=529, retryable=True)
Decision = Callable[[Job, datetime], WriteStatus | object]


@pytest.mark.parametrize(
    ("status", "decision", "seconds", "outcome", "provider", "reason"),
    [
        (
            {},
            lambda job, now: lifecycle.succeeded(job, 0, {"name": "r"}, None, now),
            2,
            "completed",
            "openai",
            Reason.SUCCEEDED,
        ),
        (
            {},
            lambda job, now: lifecycle.provider_failed(job, 1, 1, BAD_REQUEST, now, POLICY),
            2,
            "failed",
            "anthropic",
            Reason.PROVIDER_ERROR,
        ),
        (
            {},
            lambda job, now: lifecycle.provider_failed(job, 1, 2, OVERLOADED, now, POLICY),
            2,
            "failed",
            "anthropic",
            Reason.BACKOFF_LIMIT_EXCEEDED,
        ),
        ({}, lifecycle.deadline_passed, 61, "failed", "openai", Reason.DEADLINE_EXCEEDED),
        # Found past its deadline at start-up, before any call.
        ({}, lifecycle.observed, 61, "failed", "openai", Reason.DEADLINE_EXCEEDED),
        # Found Processing at start-up, interrupted too often already.
        (
            PROCESSING_TOO_OFTEN,
            lambda job, now: lifecycle.interrupted_call_lost(job, now, POLICY),
            2,
            "failed",
            "anthropic",
            Reason.INTERRUPTION_LIMIT_EXCEEDED,
        ),
        (
            {},
            lambda job, now: lifecycle.request_missing(job, SUBMITTED, now, POLICY),
            6,
            "failed",
            "openai",
            Reason.REQUEST_NOT_FOUND,
        ),
        (
            {},
            lambda job, now: lifecycle.unrunnable(
                job, Reason.PROVIDER_NOT_CONFIGURED, "no such provider", now, 400
            ),
            2,
            "failed",
            "openai",
            Reason.PROVIDER_NOT_CONFIGURED,
        ),
    ],
)
async def test_finished_jobs_are_counted_with_the_terminal_condition_reason(
    status: dict[str, Any],
    decision: Decision,
    seconds: int,
    outcome: str,
    provider: str,
    reason: Reason,
) -> None:
    now = SUBMITTED + timedelta(seconds=seconds)
    obj = asyncjob(status)
    step = decision(Job.from_object(obj, POLICY), now)
    assert isinstance(step, WriteStatus)
    writer = StatusWriter(obj)
    ctx = context(writer, policy=POLICY, wall=lambda: now)
    await JobRun(ctx, obj).finish(step)
    labels = {
        "request_type": "chat_completion",
        "provider": provider,
        "outcome": outcome,
        "reason": reason.value,
    }
    finished = ctx.metrics.registry.get_sample_value(
        "asyncjobs_operator_jobs_finished_total", labels
    )
    assert finished == 1.0
    assert writer.events == ([] if outcome == "completed" else [reason.value])


def phase_counts(metrics: Metrics) -> dict[str, float]:
    return {
        phase: metrics.registry.get_sample_value("asyncjobs_operator_jobs", {"phase": phase}) or 0.0
        for phase in ("Pending", "Processing", "Completed", "Failed")
    }


def test_phase_gauge_follows_each_job_through_its_phases_and_deletion() -> None:
    metrics = Metrics()
    tally = metrics.phases
    tally.seen("a", "Pending")
    tally.seen("b", "Pending")
    tally.seen("a", "Pending")  # the same phase again: no double count
    assert phase_counts(metrics) == {
        "Pending": 2.0,
        "Processing": 0.0,
        "Completed": 0.0,
        "Failed": 0.0,
    }
    tally.seen("a", "Processing")
    tally.seen("a", "Completed")
    tally.seen("b", "Failed")
    tally.seen("c", "Unknown")  # outside the closed set: never a new label value
    assert phase_counts(metrics) == {
        "Pending": 0.0,
        "Processing": 0.0,
        "Completed": 1.0,
        "Failed": 1.0,
    }
    tally.forget("a")
    tally.forget("a")
    tally.forget("never-seen")
    assert phase_counts(metrics)["Completed"] == 0.0
    assert (
        metrics.registry.get_sample_value("asyncjobs_operator_jobs", {"phase": "Unknown"}) is None
    )
