"""A failed job's status keeps a summary of the provider's error; the whole error, which
may quote the prompt, is stored apart and answered to whoever may poll the job."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

from aiohttp import web
from aiohttp.test_utils import TestClient

from asyncjobs.core import error_summary
from tests.unit.api.conftest import KEY_A, KEY_A_ID
from tests.unit.api.fakes import FakeJobStore, now

Client = TestClient[web.Request, web.Application]
FULL = {
    "is_bifrost_error": False,
    "status_code": 400,
    "error": {"type": "invalid_request_error", "message": "bad value in 'my secret prompt'"},
    "extra_fields": {"provider": "openai", "model_requested": "gpt-4o"},
}
SUMMARY = error_summary.summary(FULL)


def failed_job(
    store: FakeJobStore, request_type: str, *, stored: bool, key: str | None = None
) -> str:
    job_id = str(uuid.uuid4())
    store.put_job(job_id, request_type, virtual_key_id=key)
    store.fail(
        job_id,
        SUMMARY,
        completed=now(),
        ttl=timedelta(hours=1),
        status_code=400,
        stored_error=error_summary.stored_body(FULL) if stored else None,
    )
    return job_id


async def test_a_poll_answers_the_providers_whole_error(
    client: Client, store: FakeJobStore
) -> None:
    job_id = failed_job(store, "chat_completion", stored=True)
    for _ in range(2):  # read from the store, then from the result cache
        response = await client.get(f"/v1/async/chat/completions/{job_id}")
        document = await response.json()
        assert (response.status, document["status"], document["error"]) == (200, "failed", FULL)
        assert "result" not in document


async def test_without_the_stored_error_the_poll_answers_the_summary(
    client: Client, store: FakeJobStore
) -> None:
    job_id = failed_job(store, "chat_completion", stored=False)
    document = await (await client.get(f"/v1/async/chat/completions/{job_id}")).json()
    assert document["error"] == SUMMARY


async def test_only_the_jobs_own_key_sees_the_stored_error(
    client: Client, store: FakeJobStore
) -> None:
    job_id = failed_job(store, "chat_completion", stored=True, key=KEY_A_ID)
    path = f"/v1/async/chat/completions/{job_id}"
    refused = await client.get(path)
    assert refused.status == 404
    assert "secret prompt" not in await refused.text()
    allowed = await client.get(path, headers={"x-bf-vk": KEY_A})
    assert (await allowed.json())["error"] == FULL


async def test_a_provider_route_answers_the_whole_error_in_its_shape(
    client: Client, store: FakeJobStore
) -> None:
    job_id = failed_job(store, "responses", stored=True)
    response = await client.post("/openai/v1/responses", headers={"x-bf-async-id": job_id})
    assert response.status == 400
    body = await response.json()
    assert body["error"]["message"] == "bad value in 'my secret prompt'"
    assert json.dumps(SUMMARY).find("secret prompt") == -1
