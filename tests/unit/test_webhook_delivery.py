"""The delivery's wire form and retry rules (core/webhook_delivery.py). The signature is
checked with the `standardwebhooks` package, an implementation independent of ours."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from asyncjobs.core import webhook_delivery
from asyncjobs.core.webhook_delivery import Outcome, classify, retry_delay
from asyncjobs.core.webhook_endpoints import generate_secret

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
DATA = {"job_id": "j-1", "request_type": "chat_completion", "status": "completed"}


def signed_headers(secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    return webhook_delivery.headers(
        secret, webhook_delivery.delivery_id("uid-1"), timestamp, body, "async_job.completed", {}
    )


def test_a_delivery_verifies_with_the_standard_webhooks_library() -> None:
    secret = generate_secret()
    body = webhook_delivery.payload("async_job.completed", "2026-11-30T12:00:00Z", DATA)
    headers = signed_headers(secret, body, int(datetime.now(UTC).timestamp()))
    verified = Webhook(secret).verify(body, headers)
    assert verified == {
        "event": "async_job.completed",
        "created_at": "2026-11-30T12:00:00Z",
        "data": DATA,
    }
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Bifrost-Event"] == "async_job.completed"


def test_a_changed_body_or_another_secret_does_not_verify() -> None:
    secret = generate_secret()
    body = webhook_delivery.payload("async_job.failed", "2026-11-30T12:00:00Z", DATA)
    headers = signed_headers(secret, body, int(datetime.now(UTC).timestamp()))
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b"j-1", b"j-2"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(body, headers)


def test_the_delivery_id_is_a_uuid_stable_per_job() -> None:
    first = webhook_delivery.delivery_id("uid-1")
    assert first == webhook_delivery.delivery_id("uid-1") != webhook_delivery.delivery_id("uid-2")
    assert len(first) == 36


def test_the_endpoints_own_headers_cannot_replace_the_signature() -> None:
    secret = generate_secret()
    body = b"{}"
    headers = webhook_delivery.headers(
        secret, "id", 1, body, "async_job.completed", {"webhook-signature": "v1,forged", "X-A": "a"}
    )
    assert headers["webhook-signature"] != "v1,forged"
    assert headers["X-A"] == "a"


def test_a_small_result_is_inlined_as_stored_and_a_large_one_omitted() -> None:
    small = b'{"id":"chatcmpl-1","choices":[]}'
    body = webhook_delivery.payload("async_job.completed", "t", DATA, inline=("response", small))
    assert json.loads(body)["data"]["response"] == {"id": "chatcmpl-1", "choices": []}
    large = b'"' + b"a" * webhook_delivery.INLINE_LIMIT_BYTES + b'"'
    body = webhook_delivery.payload("async_job.failed", "t", DATA, inline=("error", large))
    document = json.loads(body)["data"]
    assert document["error_omitted"] is True
    assert "error" not in document


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.DELIVERED),
        (204, Outcome.DELIVERED),
        (299, Outcome.DELIVERED),
        (None, Outcome.RETRY),
        (408, Outcome.RETRY),
        (429, Outcome.RETRY),
        (500, Outcome.RETRY),
        (503, Outcome.RETRY),
        (301, Outcome.FAILED),
        (302, Outcome.FAILED),
        (400, Outcome.FAILED),
        (401, Outcome.FAILED),
        (404, Outcome.FAILED),
        (410, Outcome.FAILED),
    ],
)
def test_which_outcomes_are_retried(status: int | None, outcome: Outcome) -> None:
    assert classify(status) is outcome


def test_retries_back_off_30s_1m_2m_4m_with_20_percent_jitter() -> None:
    assert [retry_delay(n, 0.5) for n in (1, 2, 3, 4, 5)] == [30, 60, 120, 240, 240]
    assert retry_delay(1, 0.0) == pytest.approx(24)
    assert retry_delay(1, 0.999999) == pytest.approx(36, abs=1e-3)


def test_an_attempt_record_holds_no_payload_and_a_bounded_error() -> None:
    record = webhook_delivery.Attempt(NOW, None, 10_000, "x" * 1000).to_dict()
    assert record == {"time": "2026-11-30T12:00:00Z", "latencyMs": 10_000, "error": "x" * 256}


def test_an_inline_too_large_to_read_is_marked_omitted() -> None:
    body = webhook_delivery.payload(
        "async_job.completed", "2026-12-01T04:00:00Z", {"job_id": "j"}, inline=("response", None)
    )
    assert json.loads(body)["data"] == {"job_id": "j", "response_omitted": True}
    assert webhook_delivery.inline_key("Completed") == "response"
    assert webhook_delivery.inline_key("Failed") == "error"
    assert webhook_delivery.inline_key("Pending") is None
    assert webhook_delivery.fits_inline(webhook_delivery.INLINE_LIMIT_BYTES - 1)
    assert not webhook_delivery.fits_inline(webhook_delivery.INLINE_LIMIT_BYTES)
