"""The AsyncJob state machine, by tables, with a fixed clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from asyncjobs.core import lifecycle
from asyncjobs.core.conditions import Reason
from asyncjobs.core.jobs import Phase, format_time
from asyncjobs.core.lifecycle import (
    Delete,
    ExpireAt,
    Job,
    Policy,
    Resume,
    Retry,
    Run,
    WaitForRequest,
    WriteStatus,
)
from asyncjobs.core.providers.base import ProviderError

SUBMITTED = datetime(2026, 2, 19, 8, 0, 0, tzinfo=UTC)
POLICY = Policy(default_deadline_seconds=600, default_backoff_limit=2, default_ttl_seconds=3600)
REF = {"secretName": "j-result", "chunks": 1, "size": 2, "sha256": "0" * 64, "contentType": "x"}


def at(seconds: float) -> datetime:
    return SUBMITTED + timedelta(seconds=seconds)


def job(status: dict[str, Any] | None = None, **spec: Any) -> Job:
    body: dict[str, Any] = {
        "requestType": "chat_completion",
        "model": "openai/gpt-4o-mini",
        "submittedAt": format_time(SUBMITTED),
        "resultTTLSeconds": 0,
        **spec,
    }
    obj = {
        "metadata": {"name": "j1", "uid": "u1", "generation": 1, "creationTimestamp": "x"},
        "spec": body,
        "status": status or {},
    }
    return Job.from_object(obj, POLICY)


def processing(attempts: int, model: str = "openai/gpt-4o-mini") -> dict[str, Any]:
    return {"phase": "Processing", "attempts": attempts, "modelUsed": model}


def terminal(phase: str, expires: datetime) -> dict[str, Any]:
    return {"phase": phase, "expiresAt": format_time(expires), "completionTime": "x"}


def failure(status: int | None, retryable: bool, retry_after: float | None = None) -> ProviderError:
    return ProviderError("boom", status_code=status, retryable=retryable, retry_after=retry_after)


@pytest.mark.parametrize(
    ("case", "the_job", "now", "expected"),
    [
        ("pending job is claimed", job(), at(1), Run(0, 0, Reason.CLAIMED)),
        (
            "processing job with no task looks for its interrupted call's result",
            job(processing(1)),
            at(5),
            Resume(call=1),
        ),
        (
            "the call number counts repeated calls too",
            job({**processing(3), "repeatedCalls": 2}),
            at(5),
            Resume(call=5),
        ),
        (
            "even past the deadline: a result stored in time is final",
            job(processing(1)),
            at(601),
            Resume(call=1),
        ),
        (
            "completed job before expiry waits for it",
            job(terminal("Completed", at(3600))),
            at(10),
            ExpireAt(at(3600)),
        ),
        (
            "completed job past expiry is deleted",
            job(terminal("Completed", at(60))),
            at(60),
            Delete(),
        ),
        ("failed job past expiry is deleted", job(terminal("Failed", at(60))), at(61), Delete()),
        (
            "past expiry with its notification pending: waits for the delivery",
            job({**terminal("Completed", at(60)), "webhook": {"pending": True}}),
            at(61),
            ExpireAt(at(60 + lifecycle.webhook_delivery.longest_delivery_seconds())),
        ),
        (
            "a pending notification holds the job no longer than the longest delivery",
            job({**terminal("Failed", at(60)), "webhook": {"pending": True}}),
            at(60 + lifecycle.webhook_delivery.longest_delivery_seconds()),
            Delete(),
        ),
        (
            "past expiry with its notification sent: deleted",
            job({**terminal("Completed", at(60)), "webhook": {"pending": False}}),
            at(61),
            Delete(),
        ),
    ],
)
def test_observed(case: str, the_job: Job, now: datetime, expected: object) -> None:
    assert lifecycle.observed(the_job, now) == expected, case


def test_pending_job_past_its_deadline_fails() -> None:
    step = lifecycle.observed(job(activeDeadlineSeconds=30), at(30))
    assert isinstance(step, WriteStatus)
    assert step.reason is Reason.DEADLINE_EXCEEDED


def interrupted(
    attempts: int, on_model: int, interruptions: int = 0, **extra: Any
) -> dict[str, Any]:
    return {
        **processing(attempts, extra.pop("model", "openai/gpt-4o-mini")),
        "attemptsOnModel": on_model,
        "interruptions": interruptions,
        **extra,
    }


@pytest.mark.parametrize(
    ("case", "the_job", "expected"),
    [
        (
            "the lost call is repeated on the same model, in the same place of its budget",
            job(interrupted(2, 2)),
            Run(0, 1, Reason.RESUMED),
        ),
        (
            "an interrupted last try is repeated, not counted as a failure",
            job(interrupted(3, 3), backoffLimit=2),
            Run(0, 2, Reason.RESUMED),
        ),
        (
            "an interrupted fallback resumes on that fallback",
            job(interrupted(3, 1, model="local/m"), fallbacks=["local/m"], backoffLimit=1),
            Run(1, 0, Reason.RESUMED),
        ),
        (
            "nineteen interruptions before, the twentieth is still survived",
            job(interrupted(1, 1, interruptions=19)),
            Run(0, 0, Reason.RESUMED),
        ),
    ],
)
def test_lost_call_is_repeated(case: str, the_job: Job, expected: Run) -> None:
    assert lifecycle.interrupted_call_lost(the_job, at(30), POLICY) == expected, case


@pytest.mark.parametrize(
    ("case", "the_job", "now", "reason"),
    [
        (
            "a job that keeps stopping the operator ends (a poison pill)",
            job(interrupted(1, 1, interruptions=20)),
            at(30),
            Reason.INTERRUPTION_LIMIT_EXCEEDED,
        ),
        ("past the deadline it fails", job(interrupted(1, 1)), at(600), Reason.DEADLINE_EXCEEDED),
    ],
)
def test_lost_call_that_cannot_be_repeated_fails(
    case: str, the_job: Job, now: datetime, reason: Reason
) -> None:
    step = lifecycle.interrupted_call_lost(the_job, now, POLICY)
    assert isinstance(step, WriteStatus), case
    assert step.phase is Phase.FAILED
    assert step.reason is reason
    assert step.status["conditions"][-1]["reason"] == reason.value
    assert step.status["error"]["is_bifrost_error"] is True
    assert step.status["error"]["extra_fields"] == {
        "provider": "openai",
        "model_requested": "gpt-4o-mini",
        "request_type": "chat_completion",
    }


def test_claim_counts_the_attempt_and_marks_processing() -> None:
    step = lifecycle.attempt_starting(job(), Run(0, 0, Reason.CLAIMED), at(2))
    assert step.status == {
        "phase": "Processing",
        "attempts": 1,
        "attemptsOnModel": 1,
        "startTime": format_time(at(2)),
        "provider": "openai",
        "modelUsed": "openai/gpt-4o-mini",
        "observedGeneration": 1,
        "conditions": [
            {
                "type": "Processing",
                "status": "True",
                "reason": "Claimed",
                "message": "attempt 1 on openai/gpt-4o-mini",
                "lastTransitionTime": format_time(at(2)),
                "observedGeneration": 1,
            }
        ],
    }


def test_retry_keeps_the_processing_transition_time_and_the_start_time() -> None:
    claimed = lifecycle.attempt_starting(job(), Run(0, 0, Reason.CLAIMED), at(2))
    retried = lifecycle.attempt_starting(job(claimed.status), Run(0, 1, Reason.RETRYING), at(9))
    condition = retried.status["conditions"][0]
    assert retried.status["attempts"] == 2
    assert retried.status["attemptsOnModel"] == 2
    assert retried.status["startTime"] == format_time(at(2))  # set once, like a Job's
    assert condition["reason"] == "Retrying"
    assert condition["lastTransitionTime"] == format_time(at(2))


def test_repeated_call_keeps_its_attempt_number_and_counts_the_interruption() -> None:
    before = interrupted(2, 2, interruptions=1, repeatedCalls=1)
    step = lifecycle.attempt_starting(job(before), Run(0, 1, Reason.RESUMED), at(9))
    assert step.status["attempts"] == 2
    assert step.status["attemptsOnModel"] == 2
    assert step.status["interruptions"] == 2
    assert step.status["repeatedCalls"] == 2
    assert step.status["conditions"][0]["message"] == (
        "attempt 2 on openai/gpt-4o-mini (repeated: the operator stopped during it)"
    )
    # The repeated call's result is stored under its own call number.
    assert job(step.status).calls == 4


def test_attempts_stay_within_the_budget_however_often_the_operator_stops() -> None:
    # backoffLimit 1 and one fallback: at most (1 + 1) x 2 = 4 attempts. Every call is
    # interrupted once and then fails with a 503; the resumes never add attempts.
    spec = {"backoffLimit": 1, "fallbacks": ["local/m"]}
    status: dict[str, Any] = {}

    def merged(step: WriteStatus) -> Job:
        status.update(step.status)  # as the apiserver applies a merge patch
        return job(dict(status), **spec)

    the_job = job(**spec)
    run: Run | None = Run(0, 0, Reason.CLAIMED)
    attempts_seen = []
    while run is not None:
        the_job = merged(lifecycle.attempt_starting(the_job, run, at(1)))
        resumed = lifecycle.interrupted_call_lost(the_job, at(2), POLICY)
        assert isinstance(resumed, Run)
        the_job = merged(lifecycle.attempt_starting(the_job, resumed, at(3)))
        attempts_seen.append(the_job.attempts)
        tries = resumed.tries_on_target + 1
        after = lifecycle.provider_failed(
            the_job, resumed.target, tries, failure(503, True), at(4), POLICY
        )
        run = (
            Run(after.target, after.tries_on_target, after.reason)
            if isinstance(after, Retry)
            else None
        )
    assert attempts_seen == [1, 2, 3, 4]
    assert the_job.interruptions == 4
    assert the_job.repeated_calls == 4
    assert the_job.calls == 8


def test_success_completes_with_200_ttl_and_flipped_conditions() -> None:
    claimed = lifecycle.attempt_starting(job(), Run(0, 0, Reason.CLAIMED), at(2))
    usage = {"promptTokens": 3, "completionTokens": 4, "totalTokens": 7}
    done = lifecycle.succeeded(job(claimed.status, resultTTLSeconds=120), 0, REF, usage, at(3.5))
    status = done.status
    assert done.phase is Phase.COMPLETED
    assert status["statusCode"] == 200
    assert status["completionTime"] == format_time(at(3.5))
    assert status["expiresAt"] == format_time(at(123.5))
    assert status["duration"] == "3.5s"
    assert status["resultRef"] == REF
    assert status["usage"] == usage
    assert "error" not in status
    assert "interruptions" not in status
    by_type = {c["type"]: c for c in status["conditions"]}
    assert by_type["Processing"]["status"] == "False"
    assert by_type["Processing"]["lastTransitionTime"] == format_time(at(3.5))
    assert by_type["Complete"] == {
        "type": "Complete",
        "status": "True",
        "reason": "Succeeded",
        "message": "completed by openai/gpt-4o-mini",
        "lastTransitionTime": format_time(at(3.5)),
        "observedGeneration": 1,
    }


def test_result_found_after_an_interruption_completes_and_counts_it() -> None:
    done = lifecycle.succeeded(
        job(interrupted(1, 1, interruptions=2)), 0, REF, None, at(4), after_interruption=True
    )
    assert done.phase is Phase.COMPLETED
    assert done.status["resultRef"] == REF
    assert done.status["interruptions"] == 3


def test_zero_ttl_means_the_default_hour() -> None:
    done = lifecycle.succeeded(job(), 0, REF, None, at(1))
    assert done.status["expiresAt"] == format_time(at(3601))


@pytest.mark.parametrize(
    ("case", "error", "tries", "spec", "expected"),
    [
        ("429 is retried", failure(429, True), 1, {}, Retry(1.0, 0, 1, Reason.RETRYING)),
        ("Retry-After is honoured", failure(429, True, 7), 1, {}, Retry(7, 0, 1, Reason.RETRYING)),
        ("503 is retried", failure(503, True, 0.5), 2, {}, Retry(0.5, 0, 2, Reason.RETRYING)),
        ("timeout is retried", failure(None, True, 3), 1, {}, Retry(3, 0, 1, Reason.RETRYING)),
        (
            "400 moves to the fallback at once",
            failure(400, False),
            1,
            {"fallbacks": ["local/m"]},
            Retry(0.0, 1, 0, Reason.FALLING_BACK),
        ),
        (
            "spent retries move to the fallback",
            failure(500, True),
            3,
            {"fallbacks": ["local/m"]},
            Retry(0.0, 1, 0, Reason.FALLING_BACK),
        ),
    ],
)
def test_retry_and_fallback(
    case: str, error: ProviderError, tries: int, spec: dict[str, Any], expected: Retry
) -> None:
    step = lifecycle.provider_failed(job(processing(tries), **spec), 0, tries, error, at(5), POLICY)
    assert isinstance(step, Retry), case
    # Exponential from the 1 s base, or Retry-After, with at most 10% stable jitter.
    assert expected.delay <= step.delay <= expected.delay * 1.1
    step = Retry(expected.delay, step.target, step.tries_on_target, step.reason)
    assert step == expected


def test_jobs_throttled_together_do_not_retry_together() -> None:
    # The same Retry-After for a hundred jobs: their delays spread (stable per job).
    delays = {lifecycle.backoff_delay(f"job-{i}", 1, 10.0, POLICY) for i in range(100)}
    assert len(delays) > 50
    assert all(10.0 <= delay <= 11.0 for delay in delays)


@pytest.mark.parametrize(
    ("retry_after", "cap", "floor"),
    [(30.0, 300.0, 30.0), (3600.0, 300.0, 300.0), (3600.0, 60.0, 60.0), (0.0, 300.0, 0.0)],
)
def test_a_retry_after_delay_is_capped(retry_after: float, cap: float, floor: float) -> None:
    policy = Policy(retry_after_max_seconds=cap)
    delay = lifecycle.backoff_delay("j", 1, retry_after, policy)
    assert floor <= delay <= floor * 1.1


@pytest.mark.parametrize(
    ("case", "status", "retry_after", "now", "expected"),
    [
        ("a Retry-After ending before the deadline is waited for", 429, 60.0, at(500), Retry),
        ("one ending at the deadline fails at once", 429, 100.0, at(500), 429),
        ("one ending after it fails at once", 429, 3600.0, at(5), 429),
        ("a 503 with a Retry-After past the deadline keeps its status", 503, 900.0, at(5), 503),
    ],
)
def test_a_retry_after_past_the_deadline_fails_now_with_the_providers_state(
    case: str, status: int, retry_after: float, now: datetime, expected: object
) -> None:
    error = failure(status, True, retry_after)
    step = lifecycle.provider_failed(job(processing(1)), 0, 1, error, now, POLICY)
    if expected is Retry:
        assert isinstance(step, Retry), case
        return
    assert isinstance(step, WriteStatus), case
    assert step.phase is Phase.FAILED
    assert step.reason is Reason.PROVIDER_OVERLOADED
    assert step.status["statusCode"] == expected
    until = format_time(now + timedelta(seconds=retry_after))
    state = "rate limited" if expected == 429 else "unavailable"
    assert step.message == (
        f"provider openai is {state} until {until}, beyond the job's deadline "
        f"({format_time(at(600))})"
    )
    error_body = step.status["error"]
    assert error_body["status_code"] == expected
    assert error_body["is_bifrost_error"] is True
    assert error_body["error"]["message"] == step.message


def test_held_past_the_deadline_names_the_target_it_was_held_for() -> None:
    the_job = job(processing(1), fallbacks=["anthropic/claude"])
    step = lifecycle.overloaded_past_deadline(the_job, 1, at(900), 429, at(10))
    assert step.reason is Reason.PROVIDER_OVERLOADED
    assert step.status["provider"] == "anthropic"
    assert step.status["modelUsed"] == "anthropic/claude"
    assert step.status["error"]["extra_fields"]["model_requested"] == "claude"
    assert "anthropic is rate limited until" in step.message


@pytest.mark.parametrize(
    ("case", "error", "tries", "status_code", "reason"),
    [
        ("400 fails at once", failure(400, False), 1, 400, Reason.PROVIDER_ERROR),
        ("401 fails at once", failure(401, False), 1, 401, Reason.PROVIDER_ERROR),
        ("429 after the limit", failure(429, True), 3, 429, Reason.BACKOFF_LIMIT_EXCEEDED),
        ("timeout after the limit", failure(None, True), 3, 500, Reason.BACKOFF_LIMIT_EXCEEDED),
    ],
)
def test_final_failure_carries_the_provider_error(
    case: str, error: ProviderError, tries: int, status_code: int, reason: Reason
) -> None:
    error.error_type = "invalid_request_error"
    step = lifecycle.provider_failed(job(processing(tries)), 0, tries, error, at(5), POLICY)
    assert isinstance(step, WriteStatus), case
    assert step.phase is Phase.FAILED
    assert step.reason is reason
    assert step.status["statusCode"] == status_code
    assert step.status["error"] == {
        "is_bifrost_error": False,
        "status_code": status_code,
        "error": {"type": "invalid_request_error", "message": "boom"},
        "extra_fields": {
            "provider": "openai",
            "model_requested": "gpt-4o-mini",
            "request_type": "chat_completion",
        },
    }
    assert step.status["expiresAt"] == format_time(at(3605))


def test_failure_of_the_last_fallback_names_that_fallback() -> None:
    the_job = job(processing(2, "local/m"), fallbacks=["local/m"])
    step = lifecycle.provider_failed(the_job, 1, 1, failure(404, False), at(5), POLICY)
    assert isinstance(step, WriteStatus)
    assert step.status["provider"] == "local"
    assert step.status["error"]["extra_fields"]["model_requested"] == "m"


def test_provider_failure_past_the_deadline_is_a_deadline() -> None:
    step = lifecycle.provider_failed(job(processing(1)), 0, 1, failure(429, True), at(601), POLICY)
    assert isinstance(step, WriteStatus)
    assert step.reason is Reason.DEADLINE_EXCEEDED


def test_exponential_backoff_doubles_and_caps() -> None:
    policy = Policy(backoff_base_seconds=1, backoff_max_seconds=10)
    delays = [lifecycle.backoff_delay("j", tries, None, policy) for tries in (1, 2, 3, 4, 5)]
    for delay, floor in zip(delays, (1, 2, 4, 8, 10), strict=True):
        assert floor <= delay <= floor * 1.1


@pytest.mark.parametrize(
    ("case", "now", "expected"),
    [
        ("when first found missing it waits", at(100), WaitForRequest(0.5)),
        ("near the end of the grace it waits the rest", at(129.8), "wait-rest"),
        ("after the grace it fails", at(130), Reason.REQUEST_NOT_FOUND),
    ],
)
def test_missing_request_is_awaited_then_fails(case: str, now: datetime, expected: object) -> None:
    # First found missing 100 s after the submit time the API wrote (a slow apiserver, a
    # skewed API clock, a backlog): the grace runs from then, not from the submit time.
    step = lifecycle.request_missing(job(), at(100), now, POLICY)
    if expected == "wait-rest":
        assert isinstance(step, WaitForRequest), case
        assert step.delay == pytest.approx(0.2)
    elif isinstance(expected, Reason):
        assert isinstance(step, WriteStatus), case
        assert step.reason is expected
        assert step.status["statusCode"] == 500
    else:
        assert step == expected, case


def test_deadline_fails_with_deadline_exceeded_and_504() -> None:
    step = lifecycle.deadline_passed(job(processing(1), activeDeadlineSeconds=45), at(45))
    assert step.reason is Reason.DEADLINE_EXCEEDED
    assert step.status["statusCode"] == 504
    assert step.status["error"]["error"]["message"] == (
        "the job did not finish within its deadline of 45s"
    )
    assert "attempts" not in step.status  # a merge patch leaves the count as it was


def test_unrunnable_job_fails_with_its_reason() -> None:
    message = "no provider named openai"
    step = lifecycle.unrunnable(job(), Reason.PROVIDER_NOT_CONFIGURED, message, at(1), 400)
    assert step.reason is Reason.PROVIDER_NOT_CONFIGURED
    assert step.status["statusCode"] == 400


def test_unreadable_result_turns_a_completed_job_failed() -> None:
    done = lifecycle.succeeded(job(processing(1)), 0, REF, {"totalTokens": 3}, at(2))
    step = lifecycle.result_unreadable(job(done.status), at(50), "the result is gone")
    assert step.phase is Phase.FAILED
    assert step.reason is Reason.RESULT_UNREADABLE
    assert step.status["resultRef"] is None  # a merge patch removes the reference
    assert step.status["usage"] is None
    assert step.status["statusCode"] == 500
    by_type = {c["type"]: c["status"] for c in step.status["conditions"]}
    assert by_type == {"Processing": "False", "Complete": "False", "Failed": "True"}


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.04, "0.0s"), (3.46, "3.5s"), (12.9, "12s"), (75, "1m15s"), (7322, "2h2m")],
)
def test_duration_reads_like_kubectl(seconds: float, text: str) -> None:
    assert lifecycle.format_duration(seconds) == text


# --- the completion notification is written with the terminal phase --------------------------


def _finished_each_way(spec: dict[str, Any]) -> list[WriteStatus]:
    running = job(processing(1), **spec)
    return [
        lifecycle.succeeded(running, 0, REF, None, at(2)),
        lifecycle.provider_failed(running, 0, 1, failure(400, retryable=False), at(2), POLICY),
        lifecycle.deadline_passed(job(processing(1), activeDeadlineSeconds=45, **spec), at(45)),
        lifecycle.cancelled(running, at(2)),
    ]


def test_a_job_with_a_webhook_finishes_with_its_notification_pending_in_the_same_patch() -> None:
    for step in _finished_each_way({"webhookId": "endpoint-uid"}):
        assert isinstance(step, WriteStatus)
        assert step.phase.terminal
        notification = step.status["webhook"]
        assert notification == {
            "pending": True,
            "deliveryId": lifecycle.webhook_delivery.delivery_id("u1"),
            "attempts": 0,
        }


def test_a_job_without_a_webhook_finishes_with_no_notification() -> None:
    for step in _finished_each_way({}):
        assert isinstance(step, WriteStatus)
        assert "webhook" not in step.status


def test_a_second_terminal_write_keeps_the_notification_as_it_stands() -> None:
    delivered = {"pending": False, "deliveryId": "d", "attempts": 1, "outcome": "delivered"}
    status = {**processing(1), "webhook": delivered}
    step = lifecycle.succeeded(job(status, webhookId="endpoint-uid"), 0, REF, None, at(2))
    assert "webhook" not in step.status
