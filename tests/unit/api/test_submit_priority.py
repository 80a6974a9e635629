"""What fair share needs goes onto the job at submit: the submit's priority header and
its virtual key's weight (core/fair_share.py); a bad priority is refused."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from asyncjobs.api.app import create_app
from asyncjobs.api.settings import Settings
from asyncjobs.api.virtual_keys import KeyEntry, KeyRing, digest
from tests.unit.api.conftest import KEY_A, KEY_A_ID, KEY_B
from tests.unit.api.fakes import FakeClock, FakeJobStore

Client = TestClient[web.Request, web.Application]
CHAT = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
PRIORITY = "x-asyncjobs-priority"


@pytest.fixture
def keys() -> KeyRing:
    # Team A's Secret says weight 5; team B's says none.
    return KeyRing(
        [
            KeyEntry("vk-a", KEY_A_ID, digest(KEY_A), weight=5),
            KeyEntry("vk-b", "team-b", digest(KEY_B)),
        ]
    )


async def submit(client: Client, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    response = await client.post("/v1/async/chat/completions", json=CHAT, headers=headers)
    return response.status, await response.json()


async def test_priority_and_the_keys_weight_are_recorded_on_the_job(
    client: Client, store: FakeJobStore
) -> None:
    status, answer = await submit(client, {"x-bf-vk": KEY_A, PRIORITY: "-3"})
    assert status == 202
    spec = store.objects[answer["id"]]["spec"]
    assert spec["virtualKeyId"] == KEY_A_ID
    assert spec["keyWeight"] == 5
    assert spec["priority"] == -3
    # Nothing of it shows in the job document a client reads.
    assert set(answer) == {"id", "request_id", "status", "created_at"}


async def test_without_header_or_weight_the_job_carries_neither(
    client: Client, store: FakeJobStore
) -> None:
    for headers in ({"x-bf-vk": KEY_B}, {}):
        status, answer = await submit(client, headers)
        assert status == 202
        spec = store.objects[answer["id"]]["spec"]
        assert "keyWeight" not in spec
        assert "priority" not in spec


async def test_the_provider_routes_take_the_priority_too(
    client: Client, store: FakeJobStore
) -> None:
    response = await client.post(
        "/openai/v1/responses",
        json={"model": "gpt-4o-mini", "input": "hi"},
        headers={"x-bf-async": "true", PRIORITY: "10"},
    )
    assert response.status == 200, await response.text()  # OpenAI answers a queued 200
    (obj,) = store.objects.values()
    assert obj["spec"]["priority"] == 10


@pytest.mark.parametrize("value", ["11", "-11", "high", "1.0", "+1", "", "1 2"])
async def test_a_bad_priority_answers_400_and_creates_nothing(
    client: Client, store: FakeJobStore, value: str
) -> None:
    status, answer = await submit(client, {"x-bf-vk": KEY_A, PRIORITY: value})
    assert status == 400
    assert answer == {
        "is_bifrost_error": False,
        "status_code": 400,
        "error": {
            "message": "invalid x-asyncjobs-priority header: must be a whole number from -10 to 10"
        },
        "extra_fields": {},
    }
    assert store.objects == {}


async def test_an_unknown_key_weighs_nothing_it_is_refused_as_before(
    settings: Settings, store: FakeJobStore, keys: KeyRing, clock: FakeClock
) -> None:
    app = create_app(settings, store=store, keys=keys, clock=clock)
    async with TestClient(TestServer(app)) as client:
        status, answer = await submit(client, {"x-bf-vk": "sk-bf-unknown", PRIORITY: "1"})
    assert status == 400
    assert answer["error"]["message"] == "virtual key not found"
    assert json.dumps(store.objects) == "{}"
