"""The /api/webhooks routes and the x-bf-async-webhook submit header, over an in-memory
endpoint store: what is answered, what is stored, and every refusal creating nothing."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from asyncjobs.api.app import create_app
from asyncjobs.api.settings import Settings
from asyncjobs.api.virtual_keys import KeyRing
from asyncjobs.core.webhook_endpoints import EndpointFields
from tests.unit.api.fakes import FakeClock, FakeJobStore
from tests.unit.api.webhook_fakes import FakeWebhookStore

Client = TestClient[web.Request, web.Application]
TOKEN = "gateway-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHAT = "/v1/async/chat/completions"
CHAT_BODY = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
REFUSED = "failed to resolve webhook endpoint: invalid webhook endpoint reference: "


@pytest.fixture
def webhooks() -> FakeWebhookStore:
    return FakeWebhookStore()


@pytest.fixture
async def hooks_client(
    settings: Settings,
    store: FakeJobStore,
    keys: KeyRing,
    clock: FakeClock,
    webhooks: FakeWebhookStore,
) -> AsyncIterator[Client]:
    guarded = Settings(**{**settings.__dict__, "gateway_token": TOKEN})
    app = create_app(guarded, store=store, keys=keys, clock=clock, webhooks=webhooks)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def create(client: Client, **body: Any) -> tuple[int, dict[str, Any]]:
    response = await client.post("/api/webhooks", json=body, headers=AUTH)
    document: dict[str, Any] = await response.json()
    return response.status, document


async def test_create_answers_the_endpoint_and_its_secret_once(
    hooks_client: Client, webhooks: FakeWebhookStore
) -> None:
    status, document = await create(
        hooks_client, name="orders", url="https://hooks.example.com/in", events=["async_job.failed"]
    )
    assert status == 201
    secret = document.pop("secret")
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert document["name"] == "orders"
    assert document["id"] == webhooks.objects["orders"]["metadata"]["uid"]
    assert document["events"] == ["async_job.failed"]
    assert (document["timeout_seconds"], document["max_attempts"]) == (10, 5)
    read = await hooks_client.get(f"/api/webhooks/{document['id']}", headers=AUTH)
    assert read.status == 200
    assert await read.json() == document
    by_name = await hooks_client.get("/api/webhooks/orders", headers=AUTH)
    assert "secret" not in await by_name.json()
    listed = await (await hooks_client.get("/api/webhooks", headers=AUTH)).json()
    assert listed == {"webhooks": [document], "count": 1}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": "a", "url": "http://hooks.example.com/"}, "url must use https unless"),
        ({"name": "a", "url": "https://user:pw@hooks.example.com/"}, "must not contain user info"),
        ({"name": "a", "url": "https://hooks.example.com/#x"}, "must not contain a fragment"),
        ({"name": "a", "url": "ftp://hooks.example.com/"}, "url must use https"),
        ({"name": "a", "url": "HTTPS://hooks.example.com/"}, "in lowercase"),
        ({"name": "a", "url": "hooks.example.com"}, "absolute http(s) URL"),
        (
            {"name": "a", "url": "https://h.example/", "headers": {"Webhook-Signature": "v1,x"}},
            "'Webhook-Signature' is reserved",
        ),
        (
            {"name": "a", "url": "https://h.example/", "headers": {"X-A": "a\r\nb"}},
            "line breaks",
        ),
        ({"name": "a", "url": "https://h.example/", "events": ["job.done"]}, "unknown event"),
        ({"name": "a", "url": "https://h.example/", "events": []}, "events must be"),
        ({"name": "a", "url": "https://h.example/", "timeout_seconds": 0}, "timeout_seconds"),
        ({"name": "a", "url": "https://h.example/", "disabled": "yes"}, "disabled must be"),
        ({"name": "Not A Name", "url": "https://h.example/"}, "name is required"),
        ({"url": "https://h.example/"}, "name is required"),
    ],
)
async def test_create_refuses_an_invalid_endpoint_with_a_precise_400(
    hooks_client: Client, webhooks: FakeWebhookStore, body: dict[str, Any], message: str
) -> None:
    status, document = await create(hooks_client, **body)
    assert status == 400
    assert message in document["error"]["message"]
    assert webhooks.objects == {}


async def test_http_to_a_private_network_is_allowed_when_the_endpoint_says_so(
    hooks_client: Client,
) -> None:
    status, document = await create(
        hooks_client, name="local", url="http://10.0.0.5:8080/hook", allow_private_network=True
    )
    assert status == 201
    assert document["allow_private_network"] is True


async def test_a_taken_name_answers_409(hooks_client: Client) -> None:
    assert (await create(hooks_client, name="dup", url="https://h.example/"))[0] == 201
    status, document = await create(hooks_client, name="dup", url="https://h.example/")
    assert status == 409
    assert "already exists" in document["error"]["message"]


async def test_replace_rotate_and_delete(hooks_client: Client, webhooks: FakeWebhookStore) -> None:
    _, created = await create(hooks_client, name="ops", url="https://h.example/")
    replaced = await hooks_client.put(
        "/api/webhooks/ops",
        json={"url": "https://other.example/x", "disabled": True, "headers": {"X-Team": "ops"}},
        headers=AUTH,
    )
    assert replaced.status == 200
    document = await replaced.json()
    assert (document["url"], document["disabled"], document["headers"]) == (
        "https://other.example/x",
        True,
        {"X-Team": "ops"},
    )
    renamed = await hooks_client.put(
        "/api/webhooks/ops", json={"name": "other", "url": "https://h.example/"}, headers=AUTH
    )
    assert renamed.status == 400
    rotated = await hooks_client.post(f"/api/webhooks/{created['id']}/rotate-secret", headers=AUTH)
    assert rotated.status == 200
    new_secret = (await rotated.json())["secret"]
    assert new_secret.startswith("whsec_")
    assert new_secret != created["secret"]
    assert webhooks.secrets["ops"] == [created["secret"], new_secret]
    deleted = await hooks_client.delete("/api/webhooks/ops", headers=AUTH)
    assert (deleted.status, await deleted.json()) == (200, {"id": created["id"], "deleted": True})
    gone = await hooks_client.get("/api/webhooks/ops", headers=AUTH)
    assert gone.status == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/webhooks"),
        ("POST", "/api/webhooks"),
        ("GET", "/api/webhooks/x"),
        ("PUT", "/api/webhooks/x"),
        ("DELETE", "/api/webhooks/x"),
        ("POST", "/api/webhooks/x/rotate-secret"),
        ("POST", "/api/webhooks/x/test"),
        ("GET", "/api/webhooks/x/deliveries"),
        ("POST", "/api/webhooks/x/deliveries/d/redeliver"),
    ],
)
async def test_every_webhook_route_needs_the_gateway_token(
    hooks_client: Client, method: str, path: str
) -> None:
    response = await hooks_client.request(method, path, json={"name": "x", "url": "https://h/"})
    assert response.status == 401


def logged(webhooks: FakeWebhookStore, name: str, *deliveries: dict[str, Any]) -> None:
    webhooks.objects[name]["status"] = {"deliveries": list(deliveries)}


DELIVERED = {
    "id": "d-1",
    "jobId": "job-1",
    "event": "async_job.completed",
    "outcome": "delivered",
    "time": "2026-02-19T08:01:00Z",
    "attempts": 2,
    "records": [
        {"time": "2026-02-19T08:00:30Z", "statusCode": 503, "latencyMs": 12},
        {"time": "2026-02-19T08:01:00Z", "statusCode": 200, "latencyMs": 9},
    ],
}


async def test_deliveries_answer_the_endpoints_log_newest_first(
    hooks_client: Client, webhooks: FakeWebhookStore
) -> None:
    webhooks.put("orders", EndpointFields(url="https://h.example/"))
    older = {**DELIVERED, "id": "d-0", "jobId": "job-0", "outcome": "failed", "attempts": 1}
    logged(webhooks, "orders", older, DELIVERED)
    response = await hooks_client.get("/api/webhooks/orders/deliveries", headers=AUTH)
    assert response.status == 200
    document = await response.json()
    assert document["count"] == 2
    assert [d["id"] for d in document["deliveries"]] == ["d-1", "d-0"]
    assert document["deliveries"][0] == {
        "id": "d-1",
        "job_id": "job-1",
        "event": "async_job.completed",
        "status": "delivered",
        "completed_at": "2026-02-19T08:01:00Z",
        "attempt_count": 2,
        "attempts": [
            {
                "attempted_at": "2026-02-19T08:00:30Z",
                "status_code": 503,
                "latency_ms": 12,
                "error": None,
            },
            {
                "attempted_at": "2026-02-19T08:01:00Z",
                "status_code": 200,
                "latency_ms": 9,
                "error": None,
            },
        ],
    }


async def test_redeliver_asks_the_operator_for_the_deliverys_job(
    hooks_client: Client, webhooks: FakeWebhookStore
) -> None:
    webhooks.put("orders", EndpointFields(url="https://h.example/"))
    logged(webhooks, "orders", DELIVERED)
    webhooks.jobs.add("job-1")
    response = await hooks_client.post(
        "/api/webhooks/orders/deliveries/d-1/redeliver", headers=AUTH
    )
    assert response.status == 202
    assert await response.json() == {"id": "d-1", "job_id": "job-1", "status": "pending"}
    assert webhooks.redeliveries_asked == ["job-1"]


@pytest.mark.parametrize(
    ("delivery", "jobs", "status", "message"),
    [
        ("d-9", {"job-1"}, 404, "webhook delivery not found"),
        (
            "d-1",
            set(),
            404,
            "the job of this delivery has expired: its notification cannot be sent again",
        ),
    ],
)
async def test_redeliver_of_an_unknown_delivery_or_a_gone_job_answers_404(
    hooks_client: Client,
    webhooks: FakeWebhookStore,
    delivery: str,
    jobs: set[str],
    status: int,
    message: str,
) -> None:
    webhooks.put("orders", EndpointFields(url="https://h.example/"))
    logged(webhooks, "orders", DELIVERED)
    webhooks.jobs |= jobs
    response = await hooks_client.post(
        f"/api/webhooks/orders/deliveries/{delivery}/redeliver", headers=AUTH
    )
    assert response.status == status
    assert (await response.json())["error"]["message"] == message


async def test_test_and_deliveries_of_an_unknown_endpoint_answer_404(
    hooks_client: Client,
) -> None:
    for method, path in (("POST", "/test"), ("GET", "/deliveries")):
        response = await hooks_client.request(method, f"/api/webhooks/nope{path}", headers=AUTH)
        assert response.status == 404
        assert (await response.json())["error"]["message"] == "webhook endpoint not found"


# --- the submit header -----------------------------------------------------------------------


async def test_a_submit_naming_an_endpoint_records_its_id_not_its_name(
    hooks_client: Client, store: FakeJobStore, webhooks: FakeWebhookStore
) -> None:
    webhook = webhooks.put("orders", EndpointFields(url="https://h.example/"))
    response = await hooks_client.post(
        CHAT, json=CHAT_BODY, headers={**AUTH, "x-bf-async-webhook": "orders"}
    )
    assert response.status == 202
    document = await response.json()
    assert store.objects[document["id"]]["spec"]["webhookId"] == webhook["metadata"]["uid"]
    assert "webhook" not in str(document)
    poll = await hooks_client.get(f"{CHAT}/{document['id']}", headers=AUTH)
    assert "webhook" not in await poll.text()


async def test_a_submit_without_the_header_records_no_endpoint(
    hooks_client: Client, store: FakeJobStore
) -> None:
    response = await hooks_client.post(CHAT, json=CHAT_BODY, headers=AUTH)
    assert "webhookId" not in store.objects[(await response.json())["id"]]["spec"]


async def test_an_unknown_endpoint_answers_bifrosts_400_and_creates_nothing(
    hooks_client: Client, store: FakeJobStore
) -> None:
    response = await hooks_client.post(
        CHAT, json=CHAT_BODY, headers={**AUTH, "x-bf-async-webhook": "nope"}
    )
    assert response.status == 400
    document = await response.json()
    message = f'{REFUSED}unknown webhook endpoint with name "nope"'
    assert document["error"]["message"] == message
    assert store.objects == {}


async def test_a_disabled_endpoint_answers_bifrosts_400_and_creates_nothing(
    hooks_client: Client, store: FakeJobStore, webhooks: FakeWebhookStore
) -> None:
    webhooks.put("paused", EndpointFields(url="https://h.example/", disabled=True))
    response = await hooks_client.post(
        CHAT, json=CHAT_BODY, headers={**AUTH, "x-bf-async-webhook": "paused"}
    )
    assert response.status == 400
    document = await response.json()
    assert document["error"]["message"] == f'{REFUSED}webhook endpoint "paused" is disabled'
    assert store.objects == {}


async def test_provider_routes_take_the_header_too(
    hooks_client: Client, store: FakeJobStore, webhooks: FakeWebhookStore
) -> None:
    webhook = webhooks.put("orders", EndpointFields(url="https://h.example/"))
    body = {"model": "gpt-4o-mini", "input": "hello"}
    headers = {**AUTH, "x-bf-async": "true"}
    refused = await hooks_client.post(
        "/openai/v1/responses", json=body, headers={**headers, "x-bf-async-webhook": "nope"}
    )
    assert refused.status == 400
    assert 'unknown webhook endpoint with name \\"nope\\"' in await refused.text()
    assert store.objects == {}
    accepted = await hooks_client.post(
        "/openai/v1/responses", json=body, headers={**headers, "x-bf-async-webhook": "orders"}
    )
    assert accepted.status == 200
    job_id = (await accepted.json())["id"]
    assert store.objects[job_id]["spec"]["webhookId"] == webhook["metadata"]["uid"]
