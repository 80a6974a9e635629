"""Submit and poll decided from plain inputs: headers, body bytes, a fake store and a
fixed clock, with no server and no aiohttp request; and the middleware's 500."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import timedelta

import pytest
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDict

from asyncjobs.api import submit_and_poll
from asyncjobs.api.app import create_app
from asyncjobs.api.errors import ApiError
from asyncjobs.api.metrics import ApiMetrics
from asyncjobs.api.provider_names import ProviderNames
from asyncjobs.api.settings import Settings
from asyncjobs.api.state import ApiContext
from asyncjobs.api.submit_and_poll import Submission
from asyncjobs.api.virtual_keys import KeyRing
from asyncjobs.core.jobs import JobSpec, JobView, Phase, format_time
from asyncjobs.core.request_types import REQUEST_TYPES, RequestType
from tests.unit.api.conftest import KEY_A, KEY_A_ID, KEY_B
from tests.unit.api.fakes import NOW, FakeClock, FakeJobStore

CHAT = REQUEST_TYPES[RequestType.CHAT_COMPLETION]
TOKEN = "gw-token-123"


@pytest.fixture
def ctx(store: FakeJobStore, keys: KeyRing, clock: FakeClock, settings: Settings) -> ApiContext:
    return ApiContext(settings, store, keys, ProviderNames(settings.providers), ApiMetrics(), clock)


def headers(**values: str) -> CIMultiDict[str]:
    return CIMultiDict({name.replace("_", "-"): value for name, value in values.items()})


def chat_body(**extra: object) -> bytes:
    body = {"model": "local/echo", "messages": [{"role": "user", "content": "hi"}], **extra}
    return json.dumps(body).encode()


# --- the gateway token -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "sent", "allowed"),
    [
        pytest.param(None, {}, True, id="no-token-configured"),
        pytest.param(TOKEN, {}, False, id="missing"),
        pytest.param(TOKEN, {"authorization": f"Bearer {TOKEN}"}, True, id="bearer"),
        pytest.param(TOKEN, {"AUTHORIZATION": f"bearer {TOKEN}"}, True, id="any-case"),
        pytest.param(TOKEN, {"x-api-key": TOKEN}, True, id="x-api-key"),
        pytest.param(TOKEN, {"authorization": "Bearer wrong"}, False, id="wrong"),
        pytest.param(TOKEN, {"authorization": TOKEN}, False, id="not-bearer"),
    ],
)
def test_authorize(token: str | None, sent: Mapping[str, str], allowed: bool) -> None:
    settings = Settings(namespace="unit", gateway_token=token)
    if allowed:
        submit_and_poll.authorize(CIMultiDict(sent), settings)
        return
    with pytest.raises(ApiError) as refused:
        submit_and_poll.authorize(CIMultiDict(sent), settings)
    assert (refused.value.status, refused.value.message) == (401, "Unauthorized")


# --- submit ------------------------------------------------------------------------------------


async def test_submit_records_the_clock_the_ttl_and_the_key(
    ctx: ApiContext, store: FakeJobStore
) -> None:
    submission = Submission(
        headers(x_bf_vk=KEY_A, x_bf_async_job_result_ttl="120"),
        chat_body(),
        "text/plain",
        "req-1",
    )
    spec = await submit_and_poll.submit(ctx, CHAT, submission)
    assert isinstance(spec, JobSpec)
    assert spec.submitted_at == NOW
    assert spec.result_ttl_seconds == 120
    assert spec.virtual_key_id == KEY_A_ID
    assert spec.request_ref.content_type == "application/json"
    assert store.bodies[spec.job_id] == submission.body
    assert spec.request_id == "req-1"
    assert submit_and_poll.accepted_document(spec) == {
        "id": spec.job_id,
        "request_id": "req-1",
        "status": "pending",
        "created_at": format_time(NOW),
    }


@pytest.mark.parametrize(
    ("sent", "body", "status", "message"),
    [
        pytest.param(
            {}, b"[]", 400, "invalid request format: expected a JSON object, got array", id="body"
        ),
        pytest.param(
            {"x-bf-vk": "sk-bf-unknown"},
            b"{}",
            400,
            "model should be in provider/model format",
            id="body-before-unknown-key",
        ),
        pytest.param(
            {"x-bf-vk": "sk-bf-unknown"}, chat_body(), 400, "virtual key not found", id="key"
        ),
    ],
)
async def test_submit_refusals_create_nothing(
    ctx: ApiContext,
    store: FakeJobStore,
    sent: Mapping[str, str],
    body: bytes,
    status: int,
    message: str,
) -> None:
    submission = Submission(CIMultiDict(sent), body, "application/json", "req-1")
    with pytest.raises(ApiError) as refused:
        await submit_and_poll.submit(ctx, CHAT, submission)
    assert (refused.value.status, refused.value.message) == (status, message)
    assert store.objects == {}


# --- poll --------------------------------------------------------------------------------------


async def test_poll_sees_a_completed_job_until_the_clock_reaches_its_expiry(
    ctx: ApiContext, store: FakeJobStore, clock: FakeClock
) -> None:
    job_id = str(uuid.uuid4())
    store.put_job(job_id)
    store.complete(job_id, b'{"ok":1}', completed=NOW, ttl=timedelta(seconds=60))
    clock.advance(timedelta(seconds=60) - timedelta(microseconds=1))
    view, result = await submit_and_poll.poll(ctx, RequestType.CHAT_COMPLETION, job_id, {})
    assert (view.phase, result) == (Phase.COMPLETED, b'{"ok":1}')
    clock.advance(timedelta(microseconds=1))
    with pytest.raises(ApiError) as refused:
        await submit_and_poll.poll(ctx, RequestType.CHAT_COMPLETION, job_id, {})
    assert (refused.value.status, refused.value.message) == (404, "job not found or expired")


# (the job's key id, the poll's headers, its request type, the expected 404 or None)
POLL_RULES = [
    pytest.param(None, {}, RequestType.CHAT_COMPLETION, None, id="no-key-job"),
    pytest.param(KEY_A_ID, {"x-bf-vk": KEY_A}, RequestType.CHAT_COMPLETION, None, id="own-key"),
    pytest.param(KEY_A_ID, {}, RequestType.CHAT_COMPLETION, "virtual key is required", id="none"),
    pytest.param(
        KEY_A_ID, {"x-bf-vk": "sk-bf-x"}, RequestType.CHAT_COMPLETION, "virtual key not found"
    ),
    pytest.param(
        KEY_A_ID, {"x-api-key": KEY_B}, RequestType.CHAT_COMPLETION, "virtual key mismatch"
    ),
    pytest.param(None, {}, RequestType.EMBEDDING, "operation type mismatch", id="family"),
]


@pytest.mark.parametrize(("job_key", "sent", "request_type", "message"), POLL_RULES)
async def test_poll_rules(
    ctx: ApiContext,
    store: FakeJobStore,
    job_key: str | None,
    sent: Mapping[str, str],
    request_type: RequestType,
    message: str | None,
) -> None:
    job_id = str(uuid.uuid4())
    store.put_job(job_id, virtual_key_id=job_key)
    if message is None:
        view, result = await submit_and_poll.poll(ctx, request_type, job_id, CIMultiDict(sent))
        assert (view.job_id, view.phase, result) == (job_id, Phase.PENDING, None)
        return
    with pytest.raises(ApiError) as refused:
        await submit_and_poll.poll(ctx, request_type, job_id, CIMultiDict(sent))
    assert (refused.value.status, refused.value.message) == (404, message)


@pytest.mark.parametrize("job_id", ["", "not-a-uuid", str(uuid.uuid4()).upper()])
async def test_poll_of_what_cannot_be_a_job_id_answers_404_without_a_lookup(
    ctx: ApiContext, store: FakeJobStore, job_id: str
) -> None:
    store.put_job(job_id)  # even a job by that name is never looked up
    with pytest.raises(ApiError) as refused:
        await submit_and_poll.poll(ctx, RequestType.CHAT_COMPLETION, job_id, {})
    assert refused.value.status == 404


# --- the middleware ----------------------------------------------------------------------------


class BrokenStore(FakeJobStore):
    async def find(self, job_id: str) -> JobView | None:
        raise RuntimeError("a bug with /secret/path in its message")


async def test_an_unexpected_error_answers_a_plain_500_bifrost_error(
    settings: Settings, keys: KeyRing, clock: FakeClock
) -> None:
    app = create_app(settings, store=BrokenStore(clock), keys=keys, clock=clock)
    async with TestClient(TestServer(app)) as client:
        response = await client.get(f"/v1/async/chat/completions/{uuid.uuid4()}")
        assert response.status == 500
        assert response.content_type == "application/json"
        text = await response.text()
    assert json.loads(text) == {
        "is_bifrost_error": False,
        "status_code": 500,
        "error": {"message": "internal server error"},
        "extra_fields": {},
    }
    assert "Traceback" not in text
    assert "secret" not in text


async def test_an_unexpected_error_on_a_provider_route_is_the_same_500(
    settings: Settings, keys: KeyRing, clock: FakeClock
) -> None:
    app = create_app(settings, store=BrokenStore(clock), keys=keys, clock=clock)
    async with TestClient(TestServer(app)) as client:
        response = await client.post(
            "/openai/v1/responses", headers={"x-bf-async-id": str(uuid.uuid4())}
        )
        assert response.status == 500
        assert (await response.json())["error"] == {"message": "internal server error"}
