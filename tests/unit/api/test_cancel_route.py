"""POST /v1/async/<type>/{job_id}/cancel through HTTP: the poll's key check, the
annotation it sets, and its answer for a running, a cancelled and a finished job."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from asyncjobs.core import cancel
from tests.unit.api.conftest import KEY_A, KEY_A_ID, KEY_B
from tests.unit.api.fakes import FakeJobStore, now

Client = TestClient[web.Request, web.Application]
CREATED = "2026-02-19T08:10:17.831Z"
CANCELLED_ERROR = {
    "is_bifrost_error": True,
    "status_code": 499,
    "error": {"type": "cancelled", "message": "the job was cancelled"},
    "extra_fields": {},
}


def new_job(store: FakeJobStore, phase: str = "Pending", key_id: str | None = None) -> str:
    job_id = str(uuid.uuid4())
    store.put_job(job_id, "chat_completion", virtual_key_id=key_id)
    store.set_status(job_id, phase=phase)
    return job_id


def annotated(store: FakeJobStore, job_id: str) -> bool:
    return cancel.requested(store.objects[job_id]["metadata"])


def path(job_id: str, family: str = "chat/completions") -> str:
    return f"/v1/async/{family}/{job_id}/cancel"


@pytest.mark.parametrize(
    ("phase", "status"), [("Pending", "pending"), ("Processing", "processing")]
)
async def test_a_running_job_is_asked_to_cancel_and_answered_as_it_stands(
    client: Client, store: FakeJobStore, phase: str, status: str
) -> None:
    job_id = new_job(store, phase)
    response = await client.post(path(job_id))
    assert response.status == 202
    assert await response.json() == {"id": job_id, "status": status, "created_at": CREATED}
    assert annotated(store, job_id)


async def test_an_already_cancelled_job_is_answered_200_as_it_is(
    client: Client, store: FakeJobStore
) -> None:
    job_id = new_job(store)
    store.fail(job_id, CANCELLED_ERROR, completed=now(), ttl=timedelta(hours=1), status_code=499)
    response = await client.post(path(job_id))
    assert response.status == 200
    body = await response.json()
    assert (body["status"], body["status_code"]) == ("failed", 499)
    assert body["error"]["error"]["type"] == "cancelled"
    assert not annotated(store, job_id)


@pytest.mark.parametrize(
    ("finish", "status"),
    [
        (
            lambda store, job_id: store.complete(
                job_id, b"{}", completed=now(), ttl=timedelta(hours=1)
            ),
            "completed",
        ),
        (
            lambda store, job_id: store.fail(
                job_id,
                {**CANCELLED_ERROR, "status_code": 500, "error": {"message": "boom"}},
                completed=now(),
                ttl=timedelta(hours=1),
                status_code=500,
            ),
            "failed",
        ),
    ],
)
async def test_a_finished_job_cannot_be_cancelled(
    client: Client, store: FakeJobStore, finish: Any, status: str
) -> None:
    job_id = new_job(store)
    finish(store, job_id)
    response = await client.post(path(job_id))
    assert response.status == 409
    assert await response.json() == {
        "is_bifrost_error": False,
        "status_code": 409,
        "error": {"message": f"job is already {status} and cannot be cancelled"},
        "extra_fields": {},
    }
    assert not annotated(store, job_id)


@pytest.mark.parametrize(
    ("headers", "family", "message"),
    [
        ({}, "chat/completions", "virtual key is required"),
        ({"x-bf-vk": "sk-bf-unknown"}, "chat/completions", "virtual key not found"),
        ({"x-bf-vk": KEY_B}, "chat/completions", "virtual key mismatch"),
        ({"x-bf-vk": KEY_A}, "embeddings", "operation type mismatch"),
    ],
)
async def test_only_the_jobs_key_on_its_path_family_may_cancel(
    client: Client, store: FakeJobStore, headers: dict[str, str], family: str, message: str
) -> None:
    job_id = new_job(store, key_id=KEY_A_ID)
    response = await client.post(path(job_id, family), headers=headers)
    assert response.status == 404
    assert (await response.json())["error"]["message"] == message
    assert not annotated(store, job_id)
    allowed = await client.post(path(job_id), headers={"x-bf-vk": KEY_A})
    assert allowed.status == 202
    assert annotated(store, job_id)


@pytest.mark.parametrize("job_id", [str(uuid.uuid4()), "not-a-uuid"])
async def test_an_unknown_job_is_not_found(client: Client, job_id: str) -> None:
    response = await client.post(path(job_id))
    assert response.status == 404
    assert (await response.json())["error"]["message"] == "job not found or expired"


async def test_a_get_on_the_cancel_path_is_not_allowed(client: Client, store: FakeJobStore) -> None:
    job_id = new_job(store)
    response = await client.get(path(job_id))
    assert response.status == 405
    assert not annotated(store, job_id)
