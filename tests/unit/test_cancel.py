"""Cancelling a job: the lifecycle's decision and how a cancelled job is recognised."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from asyncjobs.core import cancel, lifecycle
from asyncjobs.core.conditions import Reason
from asyncjobs.core.jobs import Phase, format_time
from asyncjobs.core.lifecycle import Delete, ExpireAt, Job, Policy, WriteStatus

SUBMITTED = datetime(2026, 2, 19, 8, 0, 0, tzinfo=UTC)
POLICY = Policy(default_deadline_seconds=600, default_ttl_seconds=3600)
CANCEL = {cancel.ANNOTATION: "true"}
CANCELLED = {"type": "cancelled", "message": "the job was cancelled"}


def at(seconds: float) -> datetime:
    return SUBMITTED + timedelta(seconds=seconds)


def job(status: dict[str, Any] | None = None, annotations: dict[str, str] | None = None) -> Job:
    obj = {
        "metadata": {"name": "j1", "uid": "u1", "generation": 1, "annotations": annotations},
        "spec": {
            "requestType": "chat_completion",
            "model": "openai/gpt-4o-mini",
            "submittedAt": format_time(SUBMITTED),
            "resultTTLSeconds": 120,
        },
        "status": status or {},
    }
    return Job.from_object(obj, POLICY)


def terminal(phase: str) -> dict[str, Any]:
    return {"phase": phase, "expiresAt": format_time(at(500)), "completionTime": "x"}


@pytest.mark.parametrize(
    ("case", "annotations", "expected"),
    [
        ("no annotations", None, False),
        ("another annotation", {"a": "true"}, False),
        ("true", CANCEL, True),
        ("any case, spaces", {cancel.ANNOTATION: " True "}, True),
        ("false", {cancel.ANNOTATION: "false"}, False),
        ("empty", {cancel.ANNOTATION: ""}, False),
    ],
)
def test_the_annotation_asks_for_a_cancel_only_when_true(
    case: str, annotations: dict[str, str] | None, expected: bool
) -> None:
    assert job(annotations=annotations).cancel_requested is expected


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("pending", None),
        ("processing", {"phase": "Processing", "attempts": 1, "modelUsed": "openai/gpt-4o-mini"}),
        ("past its deadline", None),
    ],
)
def test_a_job_not_yet_terminal_is_cancelled_at_once(
    case: str, status: dict[str, Any] | None
) -> None:
    now = at(700) if case == "past its deadline" else at(30)
    step = lifecycle.observed(job(status, CANCEL), now)
    assert isinstance(step, WriteStatus)
    assert step.phase is Phase.FAILED
    assert step.reason is Reason.CANCELLED
    written = step.status
    assert written["statusCode"] == cancel.STATUS_CODE
    # The result TTL runs from the cancel.
    assert written["completionTime"] == format_time(now)
    assert written["expiresAt"] == format_time(now + timedelta(seconds=120))
    failed = [c for c in written["conditions"] if c["type"] == "Failed"]
    assert failed[0]["status"] == "True"
    assert failed[0]["reason"] == "Cancelled"
    assert written["error"] == {
        "is_bifrost_error": True,
        "status_code": 499,
        "error": {"type": "cancelled", "message": "the job was cancelled"},
        "extra_fields": {
            "provider": "openai",
            "model_requested": "gpt-4o-mini",
            "request_type": "chat_completion",
        },
    }
    assert cancel.is_cancelled(written["statusCode"], written["error"])


@pytest.mark.parametrize("phase", ["Completed", "Failed"])
def test_a_terminal_job_is_not_changed_by_a_cancel(phase: str) -> None:
    assert lifecycle.observed(job(terminal(phase), CANCEL), at(30)) == ExpireAt(at(500))
    assert lifecycle.observed(job(terminal(phase), CANCEL), at(500)) == Delete()


@pytest.mark.parametrize(
    ("case", "status_code", "error", "expected"),
    [
        ("the gateway's cancel", 499, {"is_bifrost_error": True, "error": CANCELLED}, True),
        ("another status", 500, {"is_bifrost_error": True, "error": CANCELLED}, False),
        ("a provider's error", 499, {"is_bifrost_error": False, "error": CANCELLED}, False),
        ("another type", 499, {"is_bifrost_error": True, "error": {"type": "x"}}, False),
        ("no error", 499, None, False),
        ("a mangled error", 499, {"is_bifrost_error": True, "error": "cancelled"}, False),
    ],
)
def test_a_cancelled_job_is_recognised_by_its_status_code_and_error(
    case: str, status_code: int, error: dict[str, Any] | None, expected: bool
) -> None:
    assert cancel.is_cancelled(status_code, error) is expected
