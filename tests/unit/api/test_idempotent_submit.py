"""Idempotent submits: an Idempotency-Key names one job per virtual key for a window;
a replay answers that job, the key reused for another request answers 409."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from asyncjobs.api import idempotency
from asyncjobs.api.app import create_app
from asyncjobs.api.quota import Limits
from asyncjobs.api.settings import Settings
from asyncjobs.api.virtual_keys import KeyRing
from asyncjobs.core.jobs import JobView
from tests.unit.api.conftest import KEY_A, KEY_B
from tests.unit.api.fakes import NOW, FakeClock, FakeJobStore

Client = TestClient[web.Request, web.Application]
CHAT = "/v1/async/chat/completions"
WINDOW = timedelta(hours=24)


def chat(prompt: str = "hi") -> bytes:
    return (
        b'{"model":"local/echo","messages":[{"role":"user","content":"' + prompt.encode() + b'"}]}'
    )


async def submit(client: Client, body: bytes, path: str = CHAT, **headers: str) -> tuple[int, dict]:
    sent = {
        "Content-Type": "application/json",
        **{k.replace("_", "-"): v for k, v in headers.items()},
    }
    response = await client.post(path, data=body, headers=sent)
    return response.status, await response.json()


async def test_a_retry_with_the_same_key_and_body_answers_the_first_job(
    client: Client, store: FakeJobStore
) -> None:
    first_status, first = await submit(client, chat(), Idempotency_Key="k-1", x_request_id="r1")
    again_status, again = await submit(client, chat(), Idempotency_Key="k-1", x_request_id="r2")
    assert (first_status, again_status) == (202, 202)
    assert again == first
    assert again["request_id"] == "r1"  # the first submit's, which the job recorded
    assert list(store.objects) == [first["id"]]
    assert uuid.UUID(first["id"]).version == 4


async def test_a_replay_answers_the_job_as_it_now_stands(
    client: Client, store: FakeJobStore
) -> None:
    _, first = await submit(client, chat(), Idempotency_Key="k-1")
    store.complete(first["id"], b"{}", completed=NOW, ttl=timedelta(hours=1))
    status, again = await submit(client, chat(), Idempotency_Key="k-1")
    assert status == 202
    assert (again["id"], again["status"]) == (first["id"], "completed")


async def test_the_key_reused_for_another_body_is_409_and_creates_nothing(
    client: Client, store: FakeJobStore
) -> None:
    await submit(client, chat(), Idempotency_Key="k-1")
    status, document = await submit(client, chat("other"), Idempotency_Key="k-1")
    assert status == 409
    assert document["error"]["message"] == idempotency.REUSED_KEY
    assert len(store.objects) == 1


async def test_the_same_body_on_another_route_is_409(client: Client, store: FakeJobStore) -> None:
    # Valid for both routes: responses and embeddings both take `input`.
    body = b'{"model":"local/echo","input":"hi"}'
    first, _ = await submit(client, body, "/v1/async/responses", Idempotency_Key="k-9")
    status, document = await submit(client, body, "/v1/async/embeddings", Idempotency_Key="k-9")
    assert (first, status) == (202, 409)
    assert document["error"]["message"] == idempotency.REUSED_KEY
    assert len(store.objects) == 1


async def test_keys_are_per_virtual_key_and_anonymous_callers_have_their_own(
    client: Client, store: FakeJobStore
) -> None:
    _, anonymous = await submit(client, chat(), Idempotency_Key="shared")
    _, key_a = await submit(client, chat(), Idempotency_Key="shared", x_bf_vk=KEY_A)
    _, key_b = await submit(client, chat(), Idempotency_Key="shared", x_bf_vk=KEY_B)
    _, key_a_again = await submit(client, chat(), Idempotency_Key="shared", x_bf_vk=KEY_A)
    assert len({anonymous["id"], key_a["id"], key_b["id"]}) == 3
    assert key_a_again["id"] == key_a["id"]
    assert len(store.objects) == 3


async def test_without_a_key_every_submit_is_a_new_job(client: Client, store: FakeJobStore) -> None:
    await submit(client, chat())
    await submit(client, chat())
    assert len(store.objects) == 2


@pytest.mark.parametrize("value", ["", "   ", "x" * 256, "a\u00e9", "a\tb"])
async def test_a_malformed_key_is_400(client: Client, store: FakeJobStore, value: str) -> None:
    response = await client.post(
        CHAT,
        data=chat(),
        headers={"Content-Type": "application/json", "Idempotency-Key": value},
    )
    assert response.status == 400
    assert (await response.json())["error"]["message"] == idempotency.INVALID_KEY
    assert store.objects == {}


@pytest.fixture
def bucket_clock() -> FakeClock:
    # One second before a window bucket ends.
    start = datetime.fromtimestamp(
        (NOW.timestamp() // WINDOW.total_seconds() + 1) * WINDOW.total_seconds() - 1, UTC
    )
    return FakeClock(start)


@pytest.fixture
async def bucket_client(
    settings: Settings, keys: KeyRing, bucket_clock: FakeClock
) -> AsyncIterator[tuple[Client, FakeJobStore]]:
    store = FakeJobStore(bucket_clock)
    app = create_app(settings, store=store, keys=keys, clock=bucket_clock)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client, store


async def test_the_window_holds_across_a_bucket_boundary_and_ends_after_a_window(
    bucket_client: tuple[Client, FakeJobStore], bucket_clock: FakeClock
) -> None:
    client, store = bucket_client
    _, first = await submit(client, chat(), Idempotency_Key="k-edge")
    bucket_clock.advance(timedelta(seconds=2))  # into the next bucket, 2 s after the submit
    _, across = await submit(client, chat(), Idempotency_Key="k-edge")
    assert across["id"] == first["id"]
    bucket_clock.advance(WINDOW)  # a window after the first submit: a new job
    _, later = await submit(client, chat(), Idempotency_Key="k-edge")
    assert later["id"] != first["id"]
    assert len(store.objects) == 2


class UnseenStore(FakeJobStore):
    """A replica whose cache has not seen the job another replica just created."""

    async def find(self, job_id: str) -> JobView | None:
        return None


async def test_a_create_conflict_is_the_index_across_replicas(
    settings: Settings, keys: KeyRing, clock: FakeClock
) -> None:
    store = UnseenStore(clock)
    app = create_app(settings, store=store, keys=keys, clock=clock)
    async with TestClient(TestServer(app)) as client:
        _, first = await submit(client, chat(), Idempotency_Key="k-race")
        status, again = await submit(client, chat(), Idempotency_Key="k-race")
        assert (status, again["id"]) == (202, first["id"])
        status, _ = await submit(client, chat("x"), Idempotency_Key="k-race")
        assert status == 409
    assert len(store.objects) == 1


async def test_a_replay_is_not_refused_by_a_full_backlog(keys: KeyRing, clock: FakeClock) -> None:
    settings = Settings(
        namespace="unit", providers=frozenset({"local"}), quota=Limits(max_pending_jobs=1)
    )
    store = FakeJobStore(clock)
    app = create_app(settings, store=store, keys=keys, clock=clock)
    async with TestClient(TestServer(app)) as client:
        _, first = await submit(client, chat(), Idempotency_Key="k-full")
        status, again = await submit(client, chat(), Idempotency_Key="k-full")
        assert (status, again["id"]) == (202, first["id"])
        status, _ = await submit(client, chat(), Idempotency_Key="k-new")
        assert status == 429


def test_job_names_are_uuid4_per_key_id_and_bucket() -> None:
    names = idempotency.job_names("team-a", "k", NOW, WINDOW)
    assert names == idempotency.job_names("team-a", "k", NOW + timedelta(seconds=1), WINDOW)
    assert all(uuid.UUID(name).version == 4 and str(uuid.UUID(name)) == name for name in names)
    assert names[0] != names[1]
    assert names[1] == idempotency.job_names("team-a", "k", NOW - WINDOW, WINDOW)[0]
    assert set(names).isdisjoint(idempotency.job_names(None, "k", NOW, WINDOW))
    assert set(names).isdisjoint(idempotency.job_names("team-a", "k2", NOW, WINDOW))
