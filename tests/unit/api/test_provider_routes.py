"""The provider-compatible async routes: submit and retrieve in OpenAI's and Anthropic's
own shapes, translated to and from the job the operator runs."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from asyncjobs.api.app import create_app
from asyncjobs.api.settings import Settings
from asyncjobs.api.virtual_keys import KeyRing
from asyncjobs.core.request_types import RequestType
from tests.unit.api.conftest import KEY_A, KEY_A_ID, KEY_B
from tests.unit.api.fakes import FakeClock, FakeJobStore, now

Client = TestClient[web.Request, web.Application]
ASYNC = {"x-bf-async": "true"}


async def test_openai_responses_submit_answers_a_queued_response_with_the_job_id(
    client: Client, store: FakeJobStore
) -> None:
    body = {"model": "gpt-4o-mini", "input": "hello"}
    response = await client.post("/openai/v1/responses", json=body, headers=ASYNC)
    assert response.status == 200
    document = await response.json()
    assert document["object"] == "response"
    assert document["status"] == "queued"
    assert document["output"] == []
    assert document["model"] == "openai/gpt-4o-mini"
    spec = store.specs[document["id"]]
    assert spec.request_type is RequestType.RESPONSES
    assert json.loads(store.bodies[document["id"]]) == {
        "model": "openai/gpt-4o-mini",
        "input": "hello",
    }


async def test_openai_responses_retrieve_follows_the_job(
    client: Client, store: FakeJobStore
) -> None:
    submitted = await client.post(
        "/openai/v1/responses", json={"model": "local/m", "input": "x"}, headers=ASYNC
    )
    job_id = (await submitted.json())["id"]
    pending = await client.post("/openai/v1/responses", headers={"x-bf-async-id": job_id})
    assert pending.status == 200
    assert (await pending.json())["status"] == "queued"
    result = {"id": "resp_1", "object": "response", "status": "completed", "output": []}
    store.complete(job_id, json.dumps(result).encode(), completed=now(), ttl=timedelta(hours=1))
    done = await client.post("/openai/v1/responses", headers={"x-bf-async-id": job_id})
    assert (done.status, await done.json()) == (200, result)


@pytest.mark.parametrize(("stored_code", "status"), [(429, 429), (None, 500)])
async def test_openai_failed_job_comes_back_as_an_openai_error(
    client: Client, store: FakeJobStore, stored_code: int | None, status: int
) -> None:
    job_id = str(uuid.uuid4())
    store.put_job(job_id, "responses")
    error = {
        "is_bifrost_error": False,
        "error": {"type": "rate_limit_error", "code": "rate_limit", "message": "slow down"},
        "extra_fields": {},
    }
    store.fail(job_id, error, completed=now(), ttl=timedelta(hours=1), status_code=stored_code)
    response = await client.post("/openai/v1/responses", headers={"x-bf-async-id": job_id})
    assert response.status == status
    assert await response.json() == {
        "error": {
            "message": "slow down",
            "type": "rate_limit_error",
            "param": None,
            "code": "rate_limit",
        }
    }


async def test_openai_retrieve_of_a_job_whose_result_is_missing_is_a_failed_job(
    client: Client, store: FakeJobStore
) -> None:
    job_id = str(uuid.uuid4())
    store.put_job(job_id, "responses")
    store.complete(job_id, b"{}", completed=now(), ttl=timedelta(hours=1))
    del store.results[job_id]
    response = await client.post("/openai/v1/responses", headers={"x-bf-async-id": job_id})
    assert response.status == 500
    assert (await response.json())["error"]["message"] == "the job's stored result is missing"


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "expected"),
    [
        pytest.param(
            "/openai/v1/responses",
            {"model": "local/m", "input": "x"},
            {},
            400,
            {
                "error": {
                    "message": "only async requests are served here: send x-bf-async to"
                    " submit a job or x-bf-async-id to retrieve one",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            },
            id="openai-sync",
        ),
        pytest.param(
            "/openai/v1/responses",
            {"model": "local/m"},
            ASYNC,
            400,
            {
                "error": {
                    "message": "input is required for responses",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            },
            id="openai-no-input",
        ),
        pytest.param(
            "/openai/v1/responses",
            {"model": "local/m", "input": "x"},
            {"x-bf-async-id": str(uuid.UUID(int=1, version=4))},
            404,
            {
                "error": {
                    "message": "job not found or expired",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            },
            id="openai-unknown-job",
        ),
        pytest.param(
            "/anthropic/v1/messages",
            {"model": "local/c", "max_tokens": 5},
            ASYNC,
            400,
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": "messages is required for chat completion",
                },
            },
            id="anthropic-no-messages",
        ),
        pytest.param(
            "/anthropic/v1/messages",
            {"model": "local/c", "messages": [{"role": "user", "content": [{"type": "tool_use"}]}]},
            ASYNC,
            400,
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": "invalid request format: content block type 'tool_use'"
                    " is not supported for async messages",
                },
            },
            id="anthropic-tool-block",
        ),
        pytest.param(
            "/anthropic/v1/messages",
            {"model": "local/c", "messages": [{"role": "user", "content": "x"}]},
            {**ASYNC, "x-bf-vk": "sk-bf-nope"},
            400,
            {
                "type": "error",
                "error": {"type": "invalid_request_error", "message": "virtual key not found"},
            },
            id="anthropic-unknown-vk",
        ),
        pytest.param(
            "/openai/v1/responses",
            {"model": "local/c"},
            {**ASYNC, "x-bf-vk": "sk-bf-nope"},
            400,
            {
                "error": {
                    "message": "input is required for responses",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            },
            id="openai-invalid-body-before-unknown-vk",
        ),
    ],
)
async def test_provider_route_refusals_use_the_provider_error_shape(
    client: Client,
    store: FakeJobStore,
    path: str,
    body: dict[str, object],
    headers: dict[str, str],
    status: int,
    expected: dict[str, object],
) -> None:
    response = await client.post(path, json=body, headers=headers)
    assert response.status == status
    assert await response.json() == expected
    assert store.objects == {}


async def test_anthropic_messages_become_a_chat_job_and_come_back_as_a_message(
    client: Client, store: FakeJobStore
) -> None:
    body = {
        "model": "local/claude-ish",
        "max_tokens": 64,
        "system": [{"type": "text", "text": "be brief"}],
        "stop_sequences": ["END"],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "QUJD"},
                    },
                ],
            },
        ],
    }
    submitted = await client.post(
        "/anthropic/v1/messages",
        json=body,
        headers={**ASYNC, "x-api-key": KEY_A, "x-request-id": "client-req-7"},
    )
    assert submitted.status == 200
    message = await submitted.json()
    job_id = message["id"]
    assert message == {
        "id": job_id,
        "request_id": "client-req-7",
        "type": "message",
        "role": "assistant",
        "model": "local/claude-ish",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0},
    }
    assert store.specs[job_id].request_type is RequestType.CHAT_COMPLETION
    assert store.specs[job_id].virtual_key_id == KEY_A_ID
    assert json.loads(store.bodies[job_id]) == {
        "model": "local/claude-ish",
        "max_tokens": 64,
        "stop": ["END"],
        "messages": [
            {"role": "system", "content": "be brief"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,QUJD"}},
                ],
            },
        ],
    }
    chat = {
        "id": "chatcmpl-9",
        "model": "local/claude-ish",
        "choices": [
            {"message": {"role": "assistant", "content": "a cat"}, "finish_reason": "length"}
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13},
    }
    store.complete(job_id, json.dumps(chat).encode(), completed=now(), ttl=timedelta(hours=1))
    wrong_key = await client.post(
        "/anthropic/v1/messages", headers={"x-bf-async-id": job_id, "x-api-key": KEY_B}
    )
    assert wrong_key.status == 404
    done = await client.post(
        "/anthropic/v1/messages", headers={"x-bf-async-id": job_id, "x-api-key": KEY_A}
    )
    assert done.status == 200
    assert await done.json() == {
        "id": job_id,
        "type": "message",
        "role": "assistant",
        "model": "local/claude-ish",
        "content": [{"type": "text", "text": "a cat"}],
        "stop_reason": "max_tokens",
        "stop_sequence": None,
        "usage": {"input_tokens": 11, "output_tokens": 2},
    }


async def test_anthropic_failed_job_uses_the_anthropic_error_type(
    client: Client, store: FakeJobStore
) -> None:
    job_id = str(uuid.uuid4())
    store.put_job(job_id, "chat_completion")
    error = {"is_bifrost_error": False, "error": {"message": "overloaded"}, "extra_fields": {}}
    store.fail(job_id, error, completed=now(), ttl=timedelta(hours=1), status_code=529)
    response = await client.post("/anthropic/v1/messages", headers={"x-bf-async-id": job_id})
    assert response.status == 529
    assert await response.json() == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "overloaded"},
    }


@pytest.fixture
async def local_only(store: FakeJobStore, clock: FakeClock) -> AsyncIterator[Client]:
    app = create_app(Settings(namespace="unit"), store=store, keys=KeyRing(), clock=clock)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def test_bare_model_on_a_route_whose_provider_is_not_configured_is_refused(
    local_only: Client, store: FakeJobStore
) -> None:
    body = {"model": "claude-3", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    response = await local_only.post("/anthropic/v1/messages", json=body, headers=ASYNC)
    assert response.status == 400
    assert await response.json() == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "model should be in provider/model format",
        },
    }
    assert store.objects == {}
