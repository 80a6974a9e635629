"""`--require-virtual-key`: every request carries a known virtual key, as Bifrost's
governance does with enforce_governance_header (its 401 `virtual_key_required`, word for
word). A request without one is refused before its body is read; an unknown key keeps
the contract's own answers (400 on submit, 404 on poll)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from asyncjobs.api.app import create_app
from asyncjobs.api.settings import Settings
from asyncjobs.api.virtual_keys import KeyRing
from tests.unit.api.conftest import KEY_A, KEY_A_ID
from tests.unit.api.fakes import FakeClock, FakeJobStore

Client = TestClient[web.Request, web.Application]
CHAT = {"model": "local/echo", "messages": [{"role": "user", "content": "hi"}]}
TOKEN = "gw-token-123"
REQUIRED = {
    "type": "virtual_key_required",
    "is_bifrost_error": False,
    "status_code": 401,
    "error": {"message": "virtual key is required. Provide a virtual key via the x-bf-vk header."},
    "extra_fields": {},
}


@pytest.fixture
async def required(
    settings: Settings, store: FakeJobStore, keys: KeyRing, clock: FakeClock
) -> AsyncIterator[Client]:
    strict = dataclasses.replace(settings, require_virtual_key=True)
    app = create_app(strict, store=store, keys=keys, clock=clock)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        pytest.param("/v1/async/chat/completions", {}, id="generic"),
        pytest.param("/openai/v1/responses", {"x-bf-async": "true"}, id="openai-route"),
        pytest.param("/anthropic/v1/messages", {"x-bf-async": "true"}, id="anthropic-route"),
    ],
)
async def test_a_submit_without_a_key_answers_bifrosts_401_and_creates_nothing(
    required: Client, store: FakeJobStore, path: str, headers: dict[str, str]
) -> None:
    answer = await required.post(path, json=CHAT, headers=headers)
    assert answer.status == 401
    body = await answer.json()
    if path.startswith("/v1/"):
        assert body == REQUIRED
    else:  # the provider's own error shape carries the same message
        assert REQUIRED["error"]["message"] in str(body)  # type: ignore[index]
    assert store.objects == {}


async def test_a_submit_without_a_key_is_refused_before_its_body_is_read(
    required: Client, store: FakeJobStore
) -> None:
    # Not even JSON: a body error would be a 400, so the 401 shows it was never parsed.
    answer = await required.post("/v1/async/chat/completions", data=b"{not json")
    assert (answer.status, await answer.json()) == (401, REQUIRED)
    # Bifrost's key order: the outer type comes first.
    assert list(await answer.json()) == list(REQUIRED)


async def test_a_known_key_submits_and_polls(required: Client, store: FakeJobStore) -> None:
    answer = await required.post(
        "/v1/async/chat/completions", json=CHAT, headers={"x-bf-vk": KEY_A}
    )
    assert answer.status == 202, await answer.text()
    job_id = (await answer.json())["id"]
    assert store.specs[job_id].virtual_key_id == KEY_A_ID
    poll = await required.get(f"/v1/async/chat/completions/{job_id}", headers={"x-bf-vk": KEY_A})
    assert poll.status == 202


async def test_an_unknown_key_keeps_the_contracts_400_on_submit(
    required: Client, store: FakeJobStore
) -> None:
    answer = await required.post(
        "/v1/async/chat/completions", json=CHAT, headers={"x-bf-vk": "sk-bf-unknown"}
    )
    assert answer.status == 400
    assert (await answer.json())["error"]["message"] == "virtual key not found"
    assert store.objects == {}


async def test_a_job_submitted_without_a_key_needs_a_known_key_once_keys_are_required(
    required: Client, store: FakeJobStore
) -> None:
    job_id = str(uuid.uuid4())
    store.put_job(job_id)  # submitted before keys were required
    path = f"/v1/async/chat/completions/{job_id}"
    assert (await required.get(path)).status == 401
    unknown = await required.get(path, headers={"x-bf-vk": "sk-bf-unknown"})
    assert unknown.status == 404
    assert (await unknown.json())["error"]["message"] == "virtual key not found"
    assert (await required.get(path, headers={"x-bf-vk": KEY_A})).status == 202


async def test_gateway_token_and_virtual_key_together(
    settings: Settings, store: FakeJobStore, keys: KeyRing, clock: FakeClock
) -> None:
    both = dataclasses.replace(settings, gateway_token=TOKEN, require_virtual_key=True)
    app = create_app(both, store=store, keys=keys, clock=clock)
    async with TestClient(TestServer(app)) as client:
        path = "/v1/async/chat/completions"
        only_key = await client.post(path, json=CHAT, headers={"x-bf-vk": KEY_A})
        assert (only_key.status, (await only_key.json())["error"]["message"]) == (
            401,
            "Unauthorized",
        )
        only_token = await client.post(
            path, json=CHAT, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert (only_token.status, await only_token.json()) == (401, REQUIRED)
        both_sent = await client.post(
            path, json=CHAT, headers={"Authorization": f"Bearer {TOKEN}", "x-bf-vk": KEY_A}
        )
        assert both_sent.status == 202, await both_sent.text()


async def test_without_the_flag_a_keyless_submit_is_still_accepted(
    client: Client, store: FakeJobStore
) -> None:
    answer = await client.post("/v1/async/chat/completions", json=CHAT)
    assert answer.status == 202
