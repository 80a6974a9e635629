"""The request id: taken from a safe x-request-id or generated, recorded on the job,
answered right after `id` by every job answer, and written to the access log."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from asyncjobs.api import request_ids
from asyncjobs.core.request_types import REQUEST_TYPES, RequestType
from tests.unit.api.fakes import NOW, FakeJobStore
from tests.unit.api.test_submit import valid_request

Client = TestClient[web.Request, web.Application]


@pytest.mark.parametrize(
    "value",
    ["abc", "0f8e1c2a-5d7e-4b7a-9b1e-3c2d1e0f9a8b", "01HZX3.a_b:c-d", "x" * 128],
)
def test_a_safe_client_id_is_kept(value: str) -> None:
    assert request_ids.accepted(value) == value
    assert request_ids.of_request({"x-request-id": value}) == value


@pytest.mark.parametrize(
    "value",
    ["", " ", "x" * 129, "a b", "a\nb", 'a"b', "é", "a/b", "a=b", "{}"],
)
def test_an_unsafe_client_id_is_replaced_by_a_generated_one(value: str) -> None:
    assert request_ids.accepted(value) is None
    generated = request_ids.of_request({"x-request-id": value})
    assert uuid.UUID(generated).version == 4


@pytest.mark.parametrize("request_type", list(RequestType))
async def test_every_submit_and_poll_answers_the_submits_request_id_after_id(
    client: Client, store: FakeJobStore, request_type: RequestType
) -> None:
    body, content_type = valid_request(request_type)
    info = REQUEST_TYPES[request_type]
    submitted = await client.post(
        info.submit_path,
        data=body,
        headers={"Content-Type": content_type, "x-request-id": "trace-42"},
    )
    assert submitted.status == 202
    document = await submitted.json()
    assert list(document) == ["id", "request_id", "status", "created_at"]
    assert document["request_id"] == "trace-42"
    job_id = document["id"]
    assert store.objects[job_id]["spec"]["requestId"] == "trace-42"
    # Pending: the poll's own x-request-id is not the job's.
    polled = await client.get(f"{info.submit_path}/{job_id}", headers={"x-request-id": "other"})
    assert list(await polled.json()) == ["id", "request_id", "status", "created_at"]
    assert (await polled.json())["request_id"] == "trace-42"
    store.complete(job_id, b'{"ok":1}', completed=NOW, ttl=timedelta(hours=1))
    finished = await (await client.get(f"{info.submit_path}/{job_id}")).json()
    assert list(finished)[:2] == ["id", "request_id"]
    assert finished["request_id"] == "trace-42"
    assert set(finished) == {
        "id",
        "request_id",
        "status",
        "created_at",
        "completed_at",
        "expires_at",
        "status_code",
        "result",
    }


async def test_a_job_without_a_request_id_polls_without_one(
    client: Client, store: FakeJobStore
) -> None:
    # A job created before jobs recorded a request id (or applied with kubectl).
    job_id = str(uuid.uuid4())
    store.put_job(job_id)
    document = await (await client.get(f"/v1/async/chat/completions/{job_id}")).json()
    assert list(document) == ["id", "status", "created_at"]


async def test_a_bad_client_id_is_replaced_not_refused(client: Client) -> None:
    body, content_type = valid_request(RequestType.CHAT_COMPLETION)
    submitted = await client.post(
        "/v1/async/chat/completions",
        data=body,
        headers={"Content-Type": content_type, "x-request-id": "has spaces and \u00e9"},
    )
    assert submitted.status == 202
    assert uuid.UUID((await submitted.json())["request_id"]).version == 4


async def test_the_access_log_carries_the_request_id(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    body, content_type = valid_request(RequestType.CHAT_COMPLETION)
    with caplog.at_level(logging.INFO, logger="asyncjobs.api.access"):
        submitted = await client.post(
            "/v1/async/chat/completions",
            data=body,
            headers={"Content-Type": content_type, "x-request-id": "trace-log-1"},
        )
    assert submitted.status == 202
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "asyncjobs.api.access"]
    assert [line["request_id"] for line in lines] == ["trace-log-1"]
