"""Operations: health, readiness, metrics labels, the access log and gateway auth."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from asyncjobs.api.app import create_app
from asyncjobs.api.settings import Settings
from asyncjobs.api.virtual_keys import KeyRing
from tests.unit.api.conftest import KEY_A
from tests.unit.api.fakes import FakeClock, FakeJobStore

Client = TestClient[web.Request, web.Application]
SECRET_PROMPT = "my-very-private-prompt-text"
TOKEN = "gw-token-123"


async def test_healthz_answers_200(client: Client) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("jobs_synced", "keys_synced", "status"),
    [(True, True, 200), (False, True, 503), (True, False, 503), (False, False, 503)],
)
async def test_readyz_waits_for_both_caches(
    client: Client,
    store: FakeJobStore,
    keys: KeyRing,
    jobs_synced: bool,
    keys_synced: bool,
    status: int,
) -> None:
    store.is_ready = jobs_synced
    keys.synced = keys_synced
    response = await client.get("/readyz")
    assert response.status == status
    assert await response.json() == {"jobs_synced": jobs_synced, "virtual_keys_synced": keys_synced}


async def test_health_answers_as_bifrost_does_when_the_stores_are_synced(client: Client) -> None:
    response = await client.get("/health")
    assert response.status == 200
    assert await response.json() == {"status": "ok", "components": {"db_pings": "ok"}}


@pytest.mark.parametrize(
    ("jobs_synced", "keys_synced", "message"),
    [
        (False, True, "job store not available"),
        (True, False, "virtual key store not available"),
        (False, False, "job store not available"),
    ],
)
async def test_health_answers_a_503_bifrost_error_naming_the_store_not_synced(
    client: Client,
    store: FakeJobStore,
    keys: KeyRing,
    jobs_synced: bool,
    keys_synced: bool,
    message: str,
) -> None:
    store.is_ready = jobs_synced
    keys.synced = keys_synced
    response = await client.get("/health")
    assert response.status == 503
    assert await response.json() == {
        "is_bifrost_error": False,
        "status_code": 503,
        "error": {"message": message},
        "extra_fields": {},
    }


async def test_metrics_label_routes_by_template_never_by_job(
    client: Client, store: FakeJobStore
) -> None:
    job_id = str(uuid.uuid4())
    store.put_job(job_id, "ocr")
    await client.get(f"/v1/async/ocr/{job_id}")
    await client.get(f"/v1/async/ocr/{job_id}")
    await client.post("/v1/async/ocr", json={"model": "local/ocr-1", "document": {}})
    await client.get("/no/such/path")
    text = await (await client.get("/metrics")).text()
    assert job_id not in text
    assert (
        'asyncjobs_api_requests_total{method="GET",route="/v1/async/ocr/{job_id}",status="202"} 2.0'
        in text
    )
    assert 'asyncjobs_api_jobs_submitted_total{request_type="ocr"} 1.0' in text
    assert 'route="unmatched",status="404"' in text
    assert "asyncjobs_api_request_duration_seconds_bucket" in text


async def test_access_log_has_route_and_status_but_no_content(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="asyncjobs.api.access")
    response = await client.post(
        "/v1/async/chat/completions",
        json={"model": "local/echo", "messages": [{"role": "user", "content": SECRET_PROMPT}]},
        headers={"x-bf-vk": KEY_A},
    )
    assert response.status == 202
    lines = [r.getMessage() for r in caplog.records if r.name == "asyncjobs.api.access"]
    assert len(lines) == 1
    assert '"route":"/v1/async/chat/completions"' in lines[0]
    assert '"status":202' in lines[0]
    assert SECRET_PROMPT not in caplog.text
    assert KEY_A not in caplog.text


async def test_unknown_path_answers_bifrost_404(client: Client) -> None:
    response = await client.get("/v1/async/nothing")
    assert response.status == 404
    assert (await response.json())["error"] == {"message": "not found"}


async def test_openapi_is_served_as_json(client: Client) -> None:
    response = await client.get("/openapi.json")
    assert response.status == 200
    document = await response.json()
    assert document["openapi"].startswith("3.")
    assert "/v1/async/chat/completions/{job_id}" in document["paths"]
    assert "503" in document["paths"]["/health"]["get"]["responses"]


@pytest.fixture
async def guarded(store: FakeJobStore, keys: KeyRing, clock: FakeClock) -> AsyncIterator[Client]:
    settings = Settings(namespace="unit", gateway_token=TOKEN)
    app = create_app(settings, store=store, keys=keys, clock=clock)
    async with TestClient(TestServer(app)) as client:
        yield client


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        pytest.param({}, 401, id="no-token"),
        pytest.param({"Authorization": "Bearer wrong"}, 401, id="wrong-token"),
        pytest.param({"Authorization": f"Bearer {KEY_A}"}, 401, id="virtual-key-is-not-the-token"),
        pytest.param({"Authorization": f"Bearer {TOKEN}"}, 202, id="bearer-token"),
        pytest.param({"x-api-key": TOKEN, "x-bf-vk": KEY_A}, 202, id="x-api-key-token-with-vk"),
    ],
)
async def test_gateway_token_guards_submit(
    guarded: Client, store: FakeJobStore, headers: dict[str, str], status: int
) -> None:
    response = await guarded.post(
        "/v1/async/embeddings", json={"model": "local/e", "input": "x"}, headers=headers
    )
    assert response.status == status
    if status == 401:
        assert await response.json() == {
            "is_bifrost_error": False,
            "status_code": 401,
            "error": {"message": "Unauthorized"},
            "extra_fields": {},
        }
        assert store.objects == {}


async def test_gateway_token_guards_poll_but_not_health(guarded: Client) -> None:
    poll = await guarded.get(f"/v1/async/embeddings/{uuid.uuid4()}")
    assert poll.status == 401
    assert (await guarded.get("/healthz")).status == 200
    assert (await guarded.get("/health")).status == 200
