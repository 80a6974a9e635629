"""The submit quota and the result TTL cap (no cluster needed)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from asyncjobs.api.app import create_app
from asyncjobs.api.quota import Limits, Usage, refusal
from asyncjobs.api.settings import BACKEND_DEFAULTS, Settings
from asyncjobs.api.store import JobCache
from asyncjobs.api.virtual_keys import KeyEntry, KeyRing, digest
from asyncjobs.core import payloads
from tests.unit.api.conftest import KEY_A, KEY_B
from tests.unit.api.fakes import FakeClock, FakeJobStore

CHAT = {"model": "local/echo", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("usage", "limits", "body", "refused"),
    [
        pytest.param(Usage(9, 0), Limits(max_jobs=10), 1, None, id="one-job-left"),
        pytest.param(Usage(10, 0), Limits(max_jobs=10), 1, "job quota exceeded", id="jobs-full"),
        pytest.param(Usage(1, 90), Limits(max_stored_bytes=100), 10, None, id="bytes-exactly-fit"),
        pytest.param(
            Usage(1, 90), Limits(max_stored_bytes=100), 11, "storage quota", id="bytes-over"
        ),
        pytest.param(Usage(10**9, 10**12), Limits(), 10**6, None, id="no-limits"),
    ],
)
def test_refusal_counts_jobs_and_bytes(
    usage: Usage, limits: Limits, body: int, refused: str | None
) -> None:
    error = refusal(usage, limits, body)
    if refused is None:
        assert error is None
    else:
        assert error is not None
        assert error.status == 429
        assert refused in error.message
        assert error.headers["Retry-After"].isdigit()


def test_secrets_backend_defaults_are_tighter_than_s3() -> None:
    secrets, s3 = BACKEND_DEFAULTS[payloads.SECRETS], BACKEND_DEFAULTS[payloads.S3]
    assert secrets.max_request_bytes < s3.max_request_bytes
    assert secrets.max_result_ttl < s3.max_result_ttl
    assert secrets.max_jobs is not None
    assert s3.max_jobs is None
    assert secrets.max_stored_bytes is not None
    assert s3.max_stored_bytes is None


def test_job_cache_keeps_the_total_of_stored_bytes() -> None:
    store = FakeJobStore()
    store.put_job("a")
    store.put_job("b")
    store.complete("b", b"x" * 100, completed=store.clock(), ttl=timedelta(days=1))
    cache = JobCache()
    cache.replace(JobCache.slim(obj) for obj in store.objects.values())
    request_size = 2  # "{}", as put_job stores it
    assert (cache.usage().jobs, cache.usage().stored_bytes) == (2, 2 * request_size + 100)
    cache.apply("MODIFIED", store.objects["b"])  # the same job again counts once
    assert cache.usage().stored_bytes == 2 * request_size + 100
    cache.apply("DELETED", store.objects["b"])
    assert (cache.usage().jobs, cache.usage().stored_bytes) == (1, request_size)


async def serve(
    settings: Settings, store: FakeJobStore
) -> TestClient[web.Request, web.Application]:
    app = create_app(settings, store=store, keys=KeyRing([]), clock=FakeClock())
    return TestClient(TestServer(app))


async def test_a_full_quota_answers_429_with_retry_after_and_writes_nothing(
    settings: Settings,
) -> None:
    store = FakeJobStore()
    store.put_job("existing")
    limited = replace(settings, quota=Limits(max_jobs=1))
    async with await serve(limited, store) as client:
        response = await client.post("/v1/async/chat/completions", json=CHAT)
        assert response.status == 429
        assert response.headers["Retry-After"] == "30"
        document = await response.json()
        assert document["status_code"] == 429
        assert "job quota exceeded" in document["error"]["message"]
    assert list(store.objects) == ["existing"]


async def test_a_result_ttl_above_the_cap_is_cut_to_it(settings: Settings) -> None:
    store = FakeJobStore()
    capped = replace(settings, max_result_ttl=7200)
    async with await serve(capped, store) as client:
        asked = await client.post(
            "/v1/async/chat/completions", json=CHAT, headers={"x-bf-async-job-result-ttl": "99999"}
        )
        within = await client.post(
            "/v1/async/chat/completions", json=CHAT, headers={"x-bf-async-job-result-ttl": "60"}
        )
        assert store.specs[(await asked.json())["id"]].result_ttl_seconds == 7200
        assert store.specs[(await within.json())["id"]].result_ttl_seconds == 60


@pytest.mark.parametrize(
    ("usage", "limits", "with_key", "refused"),
    [
        pytest.param(Usage(5, 0, pending=4), Limits(max_pending_jobs=5), False, None, id="room"),
        pytest.param(
            Usage(5, 0, pending=5), Limits(max_pending_jobs=5), False, "backlog full:", id="full"
        ),
        pytest.param(
            Usage(9, 0, pending=3, pending_of_key=3),
            Limits(max_pending_per_key=3),
            True,
            "backlog full for this virtual key",
            id="key-full",
        ),
        pytest.param(
            Usage(9, 0, pending=3, pending_of_key=3),
            Limits(max_pending_per_key=3),
            False,
            None,
            id="per-key-cap-needs-a-key",
        ),
    ],
)
def test_backlog_caps_count_jobs_not_yet_terminal(
    usage: Usage, limits: Limits, with_key: bool, refused: str | None
) -> None:
    error = refusal(usage, limits, 1, with_key=with_key)
    if refused is None:
        assert error is None
    else:
        assert error is not None
        assert error.status == 429
        assert refused in error.message
        assert error.headers["Retry-After"] == "5"


def test_job_cache_counts_the_backlog_per_virtual_key() -> None:
    store = FakeJobStore()
    store.put_job("a", virtual_key_id="team-a")
    store.put_job("b", virtual_key_id="team-a")
    store.put_job("c")
    cache = JobCache()
    cache.replace(JobCache.slim(obj) for obj in store.objects.values())
    assert (cache.usage("team-a").pending, cache.usage("team-a").pending_of_key) == (3, 2)
    assert cache.usage(None).pending_of_key == 1
    store.complete("a", b"{}", completed=store.clock(), ttl=timedelta(days=1))
    cache.apply("MODIFIED", store.objects["a"])  # terminal: out of the backlog
    assert (cache.usage("team-a").pending, cache.usage("team-a").pending_of_key) == (2, 1)
    cache.apply("DELETED", store.objects["b"])
    assert (cache.usage("team-a").pending, cache.usage("team-a").pending_of_key) == (1, 0)


async def test_a_full_backlog_of_one_key_refuses_only_that_keys_submits(
    settings: Settings,
) -> None:
    store = FakeJobStore()
    store.put_job("waiting", virtual_key_id="team-a")
    keys = KeyRing(
        [KeyEntry("vk-a", "team-a", digest(KEY_A)), KeyEntry("vk-b", "team-b", digest(KEY_B))]
    )
    limited = replace(settings, quota=Limits(max_pending_per_key=1))
    app = create_app(limited, store=store, keys=keys, clock=FakeClock())
    async with TestClient(TestServer(app)) as client:
        refused = await client.post(
            "/v1/async/chat/completions", json=CHAT, headers={"x-bf-vk": KEY_A}
        )
        assert refused.status == 429
        assert refused.headers["Retry-After"] == "5"
        accepted = await client.post(
            "/v1/async/chat/completions", json=CHAT, headers={"x-bf-vk": KEY_B}
        )
        assert accepted.status == 202
    assert len(store.objects) == 2
