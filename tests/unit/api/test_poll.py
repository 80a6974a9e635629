"""Poll through HTTP: the job object field by field, and every 404 row of spec §4."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from asyncjobs.core.jobs import format_time, parse_time
from asyncjobs.core.request_types import REQUEST_TYPES, RequestType
from tests.unit.api.conftest import KEY_A, KEY_A_ID, KEY_B
from tests.unit.api.fakes import FakeJobStore, now

Client = TestClient[web.Request, web.Application]
CREATED = "2026-02-19T08:10:17.831Z"


def new_id() -> str:
    return str(uuid.uuid4())


def not_found(message: str) -> dict[str, Any]:
    return {
        "is_bifrost_error": False,
        "status_code": 404,
        "error": {"message": message},
        "extra_fields": {},
    }


@pytest.mark.parametrize(
    ("phase", "status"), [("Pending", "pending"), ("Processing", "processing")]
)
async def test_unfinished_job_polls_202_with_only_id_status_created(
    client: Client, store: FakeJobStore, phase: str, status: str
) -> None:
    job_id = new_id()
    store.put_job(job_id, "chat_completion")
    store.set_status(job_id, phase=phase)
    response = await client.get(f"/v1/async/chat/completions/{job_id}")
    assert response.status == 202
    assert await response.json() == {"id": job_id, "status": status, "created_at": CREATED}


async def test_repeated_polls_follow_the_job_through_its_phases(
    client: Client, store: FakeJobStore
) -> None:
    job_id = new_id()
    store.put_job(job_id, "chat_completion")
    path = f"/v1/async/chat/completions/{job_id}"
    for phase, status in [("Pending", "pending"), ("Processing", "processing")] * 2:
        store.set_status(job_id, phase=phase)
        response = await client.get(path)
        assert response.status == 202
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"
        assert await response.json() == {"id": job_id, "status": status, "created_at": CREATED}
    store.complete(job_id, b'{"ok":true}', completed=now(), ttl=timedelta(hours=1))
    response = await client.get(path)
    assert response.status == 200
    assert (await response.json())["result"] == {"ok": True}


async def test_job_without_status_polls_as_pending(client: Client, store: FakeJobStore) -> None:
    job_id = new_id()
    store.put_job(job_id, "ocr")
    response = await client.get(f"/v1/async/ocr/{job_id}")
    assert response.status == 202
    assert (await response.json())["status"] == "pending"


@pytest.mark.parametrize("request_type", list(RequestType), ids=lambda t: t.value)
async def test_completed_job_polls_200_with_the_stored_result(
    client: Client, store: FakeJobStore, request_type: RequestType
) -> None:
    job_id = new_id()
    store.put_job(job_id, request_type.value)
    completed = now() - timedelta(seconds=5)
    result = b'{"object":"x","data":[{"v":1.50}],"extra_fields":{"latency":12}}'
    store.complete(job_id, result, completed=completed, ttl=timedelta(hours=1))
    response = await client.get(f"{REQUEST_TYPES[request_type].submit_path}/{job_id}")
    assert response.status == 200
    text = await response.text()
    # The result is the stored body byte for byte (1.50 is not re-printed as 1.5).
    assert text.endswith(',"result":' + result.decode() + "}")
    document = await response.json()
    assert list(document) == [
        "id",
        "status",
        "created_at",
        "completed_at",
        "expires_at",
        "status_code",
        "result",
    ]
    assert document["status"] == "completed"
    assert document["created_at"] == CREATED
    assert document["completed_at"] == format_time(completed)
    assert document["expires_at"] == format_time(completed + timedelta(hours=1))
    assert document["status_code"] == 200


PROVIDER_ERROR = {
    "is_bifrost_error": False,
    "status_code": 429,
    "error": {"type": "rate_limit", "message": "slow down"},
    "extra_fields": {"provider": "openai", "model_requested": "gpt-4o"},
}


@pytest.mark.parametrize(
    ("status_code", "expected_code"),
    [pytest.param(429, 429, id="provider-status"), pytest.param(None, 500, id="no-status-is-500")],
)
async def test_failed_job_polls_200_with_error_and_status_code(
    client: Client, store: FakeJobStore, status_code: int | None, expected_code: int
) -> None:
    job_id = new_id()
    store.put_job(job_id, "chat_completion")
    completed = now()
    store.fail(
        job_id,
        PROVIDER_ERROR,
        completed=completed,
        ttl=timedelta(minutes=1),
        status_code=status_code,
    )
    response = await client.get(f"/v1/async/chat/completions/{job_id}")
    assert response.status == 200
    assert await response.json() == {
        "id": job_id,
        "status": "failed",
        "created_at": CREATED,
        "completed_at": format_time(completed),
        "expires_at": format_time(completed + timedelta(minutes=1)),
        "status_code": expected_code,
        "error": PROVIDER_ERROR,
    }


async def test_expired_job_answers_404_before_it_is_deleted(
    client: Client, store: FakeJobStore
) -> None:
    job_id = new_id()
    store.put_job(job_id, "chat_completion")
    store.complete(job_id, b"{}", completed=now() - timedelta(seconds=10), ttl=timedelta(seconds=5))
    response = await client.get(f"/v1/async/chat/completions/{job_id}")
    assert response.status == 404
    assert await response.json() == not_found("job not found or expired")


def unreadable(message: str, request_type: str = "chat_completion") -> dict[str, Any]:
    return {
        "is_bifrost_error": True,
        "status_code": 500,
        "error": {"message": message},
        "extra_fields": {
            "provider": "local",
            "model_requested": "echo",
            "request_type": request_type,
        },
    }


MISSING = "the job's stored result is missing"
CORRUPT = "the job's stored result does not match its size and checksum"


async def test_completed_job_whose_result_is_corrupt_polls_200_failed_every_time(
    client: Client, store: FakeJobStore
) -> None:
    job_id = new_id()
    store.put_job(job_id, "chat_completion")
    store.complete(job_id, b'{"ok":true}', completed=now(), ttl=timedelta(hours=1))
    store.results[job_id] = b'{"ok":1.0}'  # as long, other bytes: the sha256 differs
    path = f"/v1/async/chat/completions/{job_id}"
    first = await client.get(path)
    assert first.status == 200
    document = await first.json()
    assert list(document) == [
        "id",
        "status",
        "created_at",
        "completed_at",
        "expires_at",
        "status_code",
        "error",
    ]
    assert document["status"] == "failed"
    assert document["status_code"] == 500
    assert document["error"] == unreadable(CORRUPT)
    completed = parse_time(document["completed_at"])
    assert parse_time(document["expires_at"]) == completed + timedelta(hours=1)
    # Recorded on the job: later polls answer the same failed job, with no second write.
    again = await client.get(path)
    assert (again.status, await again.json()) == (200, document)
    assert len(store.status_patches) == 1
    status = store.objects[job_id]["status"]
    assert (status["phase"], status["statusCode"]) == ("Failed", 500)
    assert "resultRef" not in status
    assert {c["type"]: c["reason"] for c in status["conditions"] if c["status"] == "True"} == {
        "Failed": "ResultUnreadable"
    }
    metrics = await (await client.get("/metrics")).text()
    assert 'asyncjobs_api_results_unreadable_total{reason="corrupt"} 1.0' in metrics


async def test_completed_job_whose_result_is_missing_polls_200_failed_not_404(
    client: Client, store: FakeJobStore
) -> None:
    job_id = new_id()
    store.put_job(job_id, "embedding")
    store.complete(job_id, b"{}", completed=now(), ttl=timedelta(hours=1))
    del store.results[job_id]
    response = await client.get(f"/v1/async/embeddings/{job_id}")
    assert response.status == 200
    document = await response.json()
    assert (document["status"], document["status_code"]) == ("failed", 500)
    assert document["error"] == unreadable(MISSING, "embedding")
    metrics = await (await client.get("/metrics")).text()
    assert 'asyncjobs_api_results_unreadable_total{reason="missing"} 1.0' in metrics


async def test_result_gone_with_its_deleted_job_answers_404(
    client: Client, store: FakeJobStore
) -> None:
    job_id = new_id()
    store.put_job(job_id, "embedding")
    store.complete(job_id, b"{}", completed=now(), ttl=timedelta(hours=1))

    def expire(gone: str) -> None:
        # Expiry deletes the job, and garbage collection its result, mid-poll.
        del store.objects[gone], store.results[gone]

    store.on_result_read = expire
    response = await client.get(f"/v1/async/embeddings/{job_id}")
    assert response.status == 404
    assert await response.json() == not_found("job not found or expired")
    assert store.status_patches == []


async def test_expired_job_with_its_result_gone_answers_404(
    client: Client, store: FakeJobStore
) -> None:
    job_id = new_id()
    store.put_job(job_id, "embedding")
    store.complete(job_id, b"{}", completed=now() - timedelta(seconds=10), ttl=timedelta(seconds=5))
    del store.results[job_id]
    response = await client.get(f"/v1/async/embeddings/{job_id}")
    assert response.status == 404
    assert await response.json() == not_found("job not found or expired")
    assert store.status_patches == []


# (job's key id, headers of the poll, path family, expected 404 message or None for 202)
ACCESS = [
    pytest.param(None, {}, "chat/completions", "job not found or expired", id="unknown-job"),
    pytest.param(KEY_A_ID, {}, "chat/completions", "virtual key is required", id="vk-required"),
    pytest.param(
        KEY_A_ID,
        {"x-bf-vk": "sk-bf-unknown"},
        "chat/completions",
        "virtual key not found",
        id="vk-unknown",
    ),
    pytest.param(
        KEY_A_ID,
        {"x-bf-vk": KEY_B},
        "chat/completions",
        "virtual key mismatch",
        id="vk-mismatch-x-bf-vk",
    ),
    pytest.param(
        KEY_A_ID,
        {"Authorization": f"Bearer {KEY_B}"},
        "chat/completions",
        "virtual key mismatch",
        id="vk-mismatch-bearer",
    ),
    pytest.param(
        KEY_A_ID,
        {"x-api-key": KEY_B},
        "chat/completions",
        "virtual key mismatch",
        id="vk-mismatch-x-api-key",
    ),
    pytest.param(
        KEY_A_ID,
        {"x-goog-api-key": KEY_B},
        "chat/completions",
        "virtual key mismatch",
        id="vk-mismatch-x-goog-api-key",
    ),
    pytest.param(
        KEY_A_ID,
        {"Authorization": "Bearer not-a-vk"},
        "chat/completions",
        "virtual key is required",
        id="vk-unprefixed-bearer-is-no-key",
    ),
    pytest.param(None, {}, "completions", "operation type mismatch", id="wrong-family"),
    pytest.param(
        KEY_A_ID,
        {"x-bf-vk": KEY_A},
        "embeddings",
        "operation type mismatch",
        id="right-key-wrong-family",
    ),
    pytest.param(KEY_A_ID, {"x-bf-vk": KEY_A}, "chat/completions", None, id="same-key-x-bf-vk"),
    pytest.param(
        KEY_A_ID,
        {"Authorization": f"Bearer {KEY_A}"},
        "chat/completions",
        None,
        id="same-key-bearer",
    ),
    pytest.param(KEY_A_ID, {"x-api-key": KEY_A}, "chat/completions", None, id="same-key-x-api-key"),
    pytest.param(
        KEY_A_ID,
        {"x-goog-api-key": KEY_A.upper().replace("SK-BF-", "sk-bf-")},
        "chat/completions",
        "virtual key not found",
        id="key-value-is-case-sensitive",
    ),
    pytest.param(None, {}, "chat/completions", None, id="no-key-job-no-key-poll"),
    pytest.param(None, {"x-bf-vk": KEY_B}, "chat/completions", None, id="no-key-job-any-key-poll"),
]


@pytest.mark.parametrize(("job_key", "headers", "family", "message"), ACCESS)
async def test_poll_access_rules(
    client: Client,
    store: FakeJobStore,
    job_key: str | None,
    headers: dict[str, str],
    family: str,
    message: str | None,
) -> None:
    job_id = new_id()
    if message != "job not found or expired":
        store.put_job(job_id, "chat_completion", virtual_key_id=job_key)
    response = await client.get(f"/v1/async/{family}/{job_id}", headers=headers)
    if message is None:
        assert response.status == 202
        assert (await response.json())["id"] == job_id
    else:
        assert response.status == 404
        assert await response.json() == not_found(message)


@pytest.mark.parametrize("job_id", ["not-a-uuid", "..", "ABCDEF00-0000-4000-8000-000000000000"])
async def test_poll_of_something_that_is_not_a_job_id_answers_404(
    client: Client, job_id: str
) -> None:
    response = await client.get(f"/v1/async/rerank/{job_id}")
    assert response.status == 404
    assert (await response.json())["error"]["message"] in ("job not found or expired", "not found")


@pytest.mark.parametrize("request_type", list(RequestType), ids=lambda t: t.value)
async def test_post_on_a_poll_path_answers_405(client: Client, request_type: RequestType) -> None:
    response = await client.post(f"{REQUEST_TYPES[request_type].submit_path}/{new_id()}", json={})
    assert response.status == 405
    assert response.headers["Allow"] == "GET, HEAD"
    assert await response.json() == {
        "is_bifrost_error": False,
        "status_code": 405,
        "error": {"message": "method not allowed"},
        "extra_fields": {},
    }


async def test_submitted_job_polls_back_pending(client: Client) -> None:
    submitted = await client.post(
        "/v1/async/chat/completions",
        json={"model": "local/echo", "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-bf-vk": KEY_A},
    )
    document = await submitted.json()
    polled = await client.get(
        f"/v1/async/chat/completions/{document['id']}", headers={"x-api-key": KEY_A}
    )
    assert polled.status == 202
    assert await polled.json() == document


@pytest.mark.parametrize(
    ("submitted_at", "created_at"),
    [
        pytest.param("2026-02-19T08:10:17Z", "2026-02-19T08:10:17.000Z", id="whole-seconds"),
        pytest.param(
            "2026-02-19T10:10:17.5+02:00", "2026-02-19T08:10:17.500Z", id="offset-and-tenths"
        ),
        pytest.param("2026-02-19T08:10:17.831456Z", "2026-02-19T08:10:17.831Z", id="microseconds"),
    ],
)
async def test_created_at_always_has_milliseconds_and_z(
    client: Client, store: FakeJobStore, submitted_at: str, created_at: str
) -> None:
    # An AsyncJob applied with kubectl need not carry the API's own timestamp form.
    job_id = new_id()
    store.put_job(job_id, "ocr", submitted_at=submitted_at)
    response = await client.get(f"/v1/async/ocr/{job_id}")
    assert response.status == 202
    assert (await response.json())["created_at"] == created_at


@pytest.mark.parametrize("phase", ["Pending", "Processing", "Completed", "Failed"])
async def test_job_object_never_carries_null(
    client: Client, store: FakeJobStore, phase: str
) -> None:
    job_id = new_id()
    store.put_job(job_id, "chat_completion")
    if phase == "Completed":
        store.complete(job_id, b'{"a":1}', completed=now(), ttl=timedelta(hours=1))
    elif phase == "Failed":
        store.fail(job_id, {}, completed=now(), ttl=timedelta(hours=1), status_code=None)
    else:
        store.set_status(job_id, phase=phase)
    text = await (await client.get(f"/v1/async/chat/completions/{job_id}")).text()
    assert "null" not in text
