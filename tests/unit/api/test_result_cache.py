"""The result cache: hits, misses and eviction under its byte budget, and the poll that
answers a completed job's second read from it without touching the store."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from asyncjobs.api import submit_and_poll
from asyncjobs.api.errors import ApiError
from asyncjobs.api.metrics import ApiMetrics
from asyncjobs.api.provider_names import ProviderNames
from asyncjobs.api.result_cache import ENTRY_OVERHEAD_BYTES, ResultCache
from asyncjobs.api.settings import Settings
from asyncjobs.api.state import ApiContext
from asyncjobs.api.store import Finished
from asyncjobs.api.virtual_keys import KeyRing
from asyncjobs.core import payloads
from asyncjobs.core.jobs import JobView, Phase
from asyncjobs.core.request_types import RequestType
from tests.unit.api.fakes import NOW, FakeClock, FakeJobStore

CHAT = RequestType.CHAT_COMPLETION


def ref_of(body: bytes, job_id: str | None = None) -> payloads.PayloadRef:
    return payloads.describe(job_id or str(uuid.uuid4()), "result", body, "application/json")


# --- the cache itself -------------------------------------------------------------------------


def test_a_put_result_is_a_hit_and_an_unknown_one_a_miss() -> None:
    cache = ResultCache(1024 * 1024)
    body = b'{"ok":true}'
    ref = ref_of(body)
    assert cache.get(ref) is None
    cache.put(ref, body)
    assert cache.get(ref) == body
    assert (cache.hits, cache.misses, len(cache)) == (1, 1, 1)
    assert cache.bytes == len(body) + ENTRY_OVERHEAD_BYTES


def test_the_same_name_with_other_bytes_is_a_miss() -> None:
    # The key carries the SHA-256: a reference to other bytes can never be served these.
    cache = ResultCache(1024 * 1024)
    job_id = str(uuid.uuid4())
    cache.put(ref_of(b'{"a":1}', job_id), b'{"a":1}')
    assert cache.get(ref_of(b'{"a":2}', job_id)) is None


def test_the_least_recently_used_go_first_once_the_bytes_pass_the_budget() -> None:
    entry = 100 + ENTRY_OVERHEAD_BYTES
    cache = ResultCache(8 * entry)  # the largest cacheable body is an eighth: exactly 100
    bodies = [bytes([index]) * 100 for index in range(9)]
    refs = [ref_of(body) for body in bodies]
    for ref, body in zip(refs[:8], bodies[:8], strict=True):
        cache.put(ref, body)
    assert (len(cache), cache.bytes) == (8, 8 * entry)
    assert cache.get(refs[0]) == bodies[0]  # now the most recently used
    cache.put(refs[8], bodies[8])
    assert (len(cache), cache.bytes) == (8, 8 * entry)
    assert cache.get(refs[1]) is None  # the least recently used went
    assert all(cache.get(ref) is not None for ref in (refs[0], *refs[2:]))


def test_a_body_above_an_eighth_of_the_budget_is_not_kept() -> None:
    cache = ResultCache(8 * 1000)
    small, large = b"x" * 1000, b"y" * 1001
    cache.put(ref_of(large), large)
    cache.put(ref_of(small), small)
    assert (len(cache), cache.bytes) == (1, 1000 + ENTRY_OVERHEAD_BYTES)


def test_a_budget_of_zero_keeps_nothing_and_counts_nothing() -> None:
    cache = ResultCache(0)
    body = b"{}"
    cache.put(ref_of(body), body)
    assert cache.get(ref_of(body)) is None
    assert (cache.enabled, len(cache), cache.bytes, cache.hits, cache.misses) == (
        False,
        0,
        0,
        0,
        0,
    )


# --- the poll ----------------------------------------------------------------------------------


class CountingStore(FakeJobStore):
    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.result_reads = 0

    async def result(self, view: JobView) -> Finished | None:
        self.result_reads += 1
        return await super().result(view)


@pytest.fixture
def counting(clock: FakeClock) -> CountingStore:
    return CountingStore(clock)


def context(store: FakeJobStore, keys: KeyRing, clock: FakeClock, budget: int) -> ApiContext:
    settings = Settings(namespace="unit")
    return ApiContext(
        settings,
        store,
        keys,
        ProviderNames(settings.providers),
        ApiMetrics(),
        clock,
        ResultCache(budget),
    )


async def test_second_poll_of_a_completed_job_is_answered_without_reading_the_store(
    counting: CountingStore, keys: KeyRing, clock: FakeClock
) -> None:
    ctx = context(counting, keys, clock, 1024 * 1024)
    job_id = str(uuid.uuid4())
    counting.put_job(job_id)
    counting.complete(job_id, b'{"ok":1}', completed=NOW, ttl=timedelta(hours=1))
    first = await submit_and_poll.poll(ctx, CHAT, job_id, {})
    second = await submit_and_poll.poll(ctx, CHAT, job_id, {})
    assert first == second
    assert (second[0].phase, second[1]) == (Phase.COMPLETED, b'{"ok":1}')
    assert counting.result_reads == 1
    assert (ctx.results.hits, ctx.results.misses) == (1, 1)


async def test_without_the_cache_every_poll_reads_the_store(
    counting: CountingStore, keys: KeyRing, clock: FakeClock
) -> None:
    ctx = context(counting, keys, clock, 0)
    job_id = str(uuid.uuid4())
    counting.put_job(job_id)
    counting.complete(job_id, b'{"ok":1}', completed=NOW, ttl=timedelta(hours=1))
    for _ in range(3):
        await submit_and_poll.poll(ctx, CHAT, job_id, {})
    assert counting.result_reads == 3


async def test_a_cached_result_of_an_expired_or_deleted_job_answers_404(
    counting: CountingStore, keys: KeyRing, clock: FakeClock
) -> None:
    ctx = context(counting, keys, clock, 1024 * 1024)
    expiring, deleted = str(uuid.uuid4()), str(uuid.uuid4())
    for job_id in (expiring, deleted):
        counting.put_job(job_id)
        counting.complete(job_id, b'{"ok":1}', completed=NOW, ttl=timedelta(seconds=60))
        await submit_and_poll.poll(ctx, CHAT, job_id, {})
    assert len(ctx.results) == 2
    del counting.objects[deleted]
    with pytest.raises(ApiError) as refused:
        await submit_and_poll.poll(ctx, CHAT, deleted, {})
    assert refused.value.status == 404
    clock.advance(timedelta(seconds=60))
    with pytest.raises(ApiError) as refused:
        await submit_and_poll.poll(ctx, CHAT, expiring, {})
    assert refused.value.status == 404


async def test_an_unreadable_result_is_failed_on_the_first_read_and_never_cached(
    counting: CountingStore, keys: KeyRing, clock: FakeClock
) -> None:
    ctx = context(counting, keys, clock, 1024 * 1024)
    job_id = str(uuid.uuid4())
    counting.put_job(job_id)
    counting.complete(job_id, b'{"ok":1}', completed=NOW, ttl=timedelta(hours=1))
    counting.results[job_id] = b'{"ok":2}'  # other bytes: the checksum does not match
    view, result = await submit_and_poll.poll(ctx, CHAT, job_id, {})
    assert (view.phase, result) == (Phase.FAILED, None)
    assert (len(ctx.results), ctx.results.bytes) == (0, 0)


async def test_metrics_show_the_hit_of_a_second_poll(
    client: TestClient[web.Request, web.Application], store: FakeJobStore
) -> None:
    job_id = str(uuid.uuid4())
    store.put_job(job_id)
    store.complete(job_id, b'{"ok":1}', completed=NOW, ttl=timedelta(hours=1))
    for _ in range(2):
        response = await client.get(f"/v1/async/chat/completions/{job_id}")
        assert (response.status, (await response.json())["result"]) == (200, {"ok": 1})
    metrics = await (await client.get("/metrics")).text()
    assert "asyncjobs_api_result_cache_hits_total 1.0" in metrics
    assert "asyncjobs_api_result_cache_misses_total 1.0" in metrics
    assert f"asyncjobs_api_result_cache_bytes {8 + ENTRY_OVERHEAD_BYTES}.0" in metrics
    assert "asyncjobs_api_result_cache_entries 1.0" in metrics
