"""GET /v1/async/jobs: the caller's jobs, newest first, filtered and paginated, from
the job cache; a virtual key sees its own, the gateway token everyone's, an anonymous
caller nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from asyncjobs.api import job_list
from asyncjobs.api.app import create_app
from asyncjobs.api.settings import Settings
from asyncjobs.api.virtual_keys import KeyRing
from tests.unit.api.conftest import KEY_A, KEY_A_ID, KEY_B, KEY_B_ID
from tests.unit.api.fakes import NOW, FakeClock, FakeJobStore

Client = TestClient[web.Request, web.Application]
LIST = "/v1/async/jobs"
TOKEN = "gateway-token-1"


def put(
    store: FakeJobStore, second: int, key_id: str | None, request_type: str = "chat_completion"
) -> str:
    job_id = str(uuid.uuid4())
    store.put_job(
        job_id,
        request_type,
        virtual_key_id=key_id,
        submitted_at=f"2026-02-19T08:10:{second:02d}.000Z",
    )
    return job_id


async def listed(client: Client, **params: Any) -> tuple[int, dict[str, Any]]:
    headers = params.pop("headers", {})
    response = await client.get(LIST, params=params, headers=headers)
    return response.status, await response.json()


async def test_a_key_lists_its_own_jobs_newest_first_without_results(
    client: Client, store: FakeJobStore
) -> None:
    older = put(store, 1, KEY_A_ID)
    newer = put(store, 2, KEY_A_ID)
    put(store, 3, KEY_B_ID)
    put(store, 4, None)
    store.complete(older, b'{"secret":"answer"}', completed=NOW, ttl=timedelta(hours=1))
    status, document = await listed(client, headers={"x-bf-vk": KEY_A})
    assert status == 200
    assert [item["id"] for item in document["data"]] == [newer, older]
    assert document["has_more"] is False
    assert "next_cursor" not in document
    assert document["data"][0] == {
        "id": newer,
        "status": "pending",
        "created_at": "2026-02-19T08:10:02.000Z",
        "request_type": "chat_completion",
        "model": "local/echo",
    }
    done = document["data"][1]
    assert set(done) == {
        "id",
        "status",
        "created_at",
        "completed_at",
        "expires_at",
        "status_code",
        "request_type",
        "model",
    }


async def test_an_anonymous_caller_lists_nothing(client: Client, store: FakeJobStore) -> None:
    put(store, 1, None)
    assert await listed(client) == (200, {"object": "list", "data": [], "has_more": False})


async def test_an_unknown_key_is_400(client: Client) -> None:
    status, document = await listed(client, headers={"x-bf-vk": "sk-bf-unknown"})
    assert status == 400
    assert document["error"]["message"] == "virtual key not found"


@pytest.fixture
async def token_client(
    store: FakeJobStore, keys: KeyRing, clock: FakeClock
) -> AsyncIterator[Client]:
    settings = Settings(namespace="unit", providers=frozenset({"local"}), gateway_token=TOKEN)
    app = create_app(settings, store=store, keys=keys, clock=clock)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def test_the_gateway_token_lists_every_job_and_a_key_still_only_its_own(
    token_client: Client, store: FakeJobStore
) -> None:
    ids = [put(store, 1, None), put(store, 2, KEY_A_ID), put(store, 3, KEY_B_ID)]
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    status, document = await listed(token_client, headers=bearer)
    assert status == 200
    assert [item["id"] for item in document["data"]] == ids[::-1]
    _, own = await listed(token_client, headers={**bearer, "x-bf-vk": KEY_B})
    assert [item["id"] for item in own["data"]] == [ids[2]]
    status, _ = await listed(token_client)
    assert status == 401


async def test_filters_by_status_and_request_type(client: Client, store: FakeJobStore) -> None:
    chat = put(store, 1, KEY_A_ID)
    ocr = put(store, 2, KEY_A_ID, "ocr")
    done = put(store, 3, KEY_A_ID)
    store.complete(done, b"{}", completed=NOW, ttl=timedelta(hours=1))
    vk = {"x-bf-vk": KEY_A}
    _, pending = await listed(client, headers=vk, status="pending")
    assert [item["id"] for item in pending["data"]] == [ocr, chat]
    _, chats = await listed(client, headers=vk, request_type="chat_completion")
    assert [item["id"] for item in chats["data"]] == [done, chat]
    _, both = await listed(client, headers=vk, status="pending", request_type="ocr")
    assert [item["id"] for item in both["data"]] == [ocr]


async def test_pages_follow_the_cursor_without_repeats_or_gaps(
    client: Client, store: FakeJobStore
) -> None:
    ids = [put(store, second, KEY_A_ID) for second in range(7)]
    # Two jobs in the same millisecond are ordered by id, so none is lost between pages.
    same = [put(store, 7, KEY_A_ID), put(store, 7, KEY_A_ID)]
    expected = sorted(same, reverse=True) + ids[::-1]
    seen: list[str] = []
    params: dict[str, Any] = {"limit": "3"}
    while True:
        _, document = await listed(client, headers={"x-bf-vk": KEY_A}, **params)
        seen += [item["id"] for item in document["data"]]
        if not document["has_more"]:
            break
        # A job submitted meanwhile is newer than the cursor: later pages do not show it.
        put(store, 59, KEY_A_ID)
        params["cursor"] = document["next_cursor"]
    assert seen == expected


async def test_expired_jobs_are_not_listed(
    client: Client, store: FakeJobStore, clock: FakeClock
) -> None:
    job_id = put(store, 1, KEY_A_ID)
    store.complete(job_id, b"{}", completed=NOW, ttl=timedelta(seconds=10))
    clock.advance(timedelta(seconds=11))
    _, document = await listed(client, headers={"x-bf-vk": KEY_A})
    assert document["data"] == []


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"status": "done"}, "status must be one of pending, processing, completed, failed"),
        ({"request_type": "chat"}, "request_type must be one of"),
        ({"limit": "0"}, "limit must be an integer from 1 to 100"),
        ({"limit": "101"}, "limit must be an integer from 1 to 100"),
        ({"limit": "x"}, "limit must be an integer from 1 to 100"),
        ({"cursor": "!!"}, "cursor is not one this API returned"),
        ({"cursor": "bnVsbA"}, "cursor is not one this API returned"),
    ],
)
async def test_bad_parameters_are_400_naming_the_parameter(
    client: Client, params: dict[str, str], message: str
) -> None:
    status, document = await listed(client, headers={"x-bf-vk": KEY_A}, **params)
    assert status == 400
    assert document["error"]["message"].startswith(message)


async def test_before_the_cache_has_synced_the_list_is_503(
    client: Client, store: FakeJobStore
) -> None:
    store.is_ready = False
    status, _ = await listed(client, headers={"x-bf-vk": KEY_A})
    assert status == 503


def test_a_cursor_reads_back_as_the_position_it_encodes() -> None:
    store = FakeJobStore()
    job_id = put(store, 5, KEY_A_ID)
    (view,) = store.newest_first(None, None)
    assert job_list.decode_cursor(job_list.encode_cursor(view)) == (view.created_at, job_id)


async def test_jobs_of_one_millisecond_split_across_pages_by_id(
    client: Client, store: FakeJobStore
) -> None:
    same = [put(store, 3, KEY_A_ID) for _ in range(5)]
    older = put(store, 1, KEY_A_ID)
    seen: list[str] = []
    params: dict[str, Any] = {"limit": "2"}
    while True:
        _, document = await listed(client, headers={"x-bf-vk": KEY_A}, **params)
        seen += [item["id"] for item in document["data"]]
        if not document["has_more"]:
            break
        params["cursor"] = document["next_cursor"]
    assert seen == [*sorted(same, reverse=True), older]
