"""JSON bodies with many values are parsed in a worker process, not on the event loop.

Before the worker, a body at the s3 backend's 25 MiB limit made of small values held the
API's loop for 200-450 ms while the standard parser ran (every poll on the replica
waited); now the loop only hands over the bytes. Routing is decided by a cheap count,
answers are the same whichever side parsed, a worker that dies is replaced, and the
number of large bodies waiting is bounded.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from asyncjobs.api import body_worker
from asyncjobs.api.app import create_app
from asyncjobs.api.body_worker import BodyWorker
from asyncjobs.api.errors import ApiError
from asyncjobs.api.settings import Settings
from asyncjobs.api.virtual_keys import KeyRing
from asyncjobs.core import cpu_worker
from asyncjobs.core.cpu_worker import INLINE_MAX_MARKS, MAX_WAITING, CpuWorker
from tests.unit.api.fakes import FakeClock, FakeJobStore

MANY_VALUES = b"[" + b"0," * INLINE_MAX_MARKS + b"0]"


def many_values_chat(extra: int = INLINE_MAX_MARKS) -> bytes:
    """A valid chat body whose `metadata` list holds more values than the loop parses."""
    return (
        b'{"model":"local/echo","messages":[{"role":"user","content":"hi"}],"metadata":{"n":['
        + b"1," * extra
        + b"1]}}"
    )


@pytest.mark.parametrize(
    ("body", "in_worker"),
    [
        (b'{"model":"local/echo"}', False),
        (b"[" + b"0," * (INLINE_MAX_MARKS - 1) + b"0]", False),
        (MANY_VALUES, True),
        # A string has no marks: under 1 MiB it is cheap to parse and stays inline...
        (b'{"image":"' + b"QUJD" * (1 << 17) + b'"}', False),
        # ...and beyond it even one string costs the parser too much (200 ms at 25 MiB).
        (b'{"image":"' + b"QUJD" * (1 << 18) + b'"}', True),
        # Commas inside strings count too: an overestimate never sends a costly body inline.
        (b'{"text":"' + b"," * (INLINE_MAX_MARKS + 1) + b'"}', True),
    ],
)
def test_bodies_with_more_marks_than_the_inline_bound_go_to_the_worker(
    body: bytes, in_worker: bool
) -> None:
    assert cpu_worker.is_heavy(body) is in_worker


async def test_a_large_body_is_handled_in_another_process_and_a_small_one_inline() -> None:
    worker = BodyWorker()
    try:
        assert await worker.run(b"{}", os.getpid) == os.getpid()
        assert await worker.run(MANY_VALUES, os.getpid) != os.getpid()
    finally:
        worker.close()


async def test_a_worker_that_dies_answers_503_and_is_replaced() -> None:
    worker = BodyWorker()
    try:
        with pytest.raises(ApiError) as refused:
            await worker.run(MANY_VALUES, os._exit, 3)
        assert refused.value.status == 503
        assert refused.value.headers == {"Retry-After": body_worker.RETRY_AFTER_SECONDS}
        assert await worker.run(MANY_VALUES, os.getpid) != os.getpid()
    finally:
        worker.close()


@pytest.fixture
def held() -> Iterator[threading.Event]:
    release = threading.Event()
    yield release
    release.set()


async def test_large_bodies_beyond_the_waiting_bound_answer_503(held: threading.Event) -> None:
    """A thread pool stands in for the process: the bound is about waiting, not where."""

    def one_thread() -> Executor:
        return ThreadPoolExecutor(max_workers=1)

    worker = BodyWorker(CpuWorker(one_thread))
    try:
        parsing = [
            asyncio.create_task(worker.run(MANY_VALUES, held.wait)) for _ in range(MAX_WAITING + 1)
        ]
        await asyncio.sleep(0)
        with pytest.raises(ApiError) as refused:
            await worker.run(MANY_VALUES, held.wait)
        assert refused.value.status == 503
        # A small body never waits for the worker.
        assert await worker.run(b"{}", len, b"ab") == 2
        held.set()
        assert await asyncio.gather(*parsing) == [True] * (MAX_WAITING + 1)
        assert await worker.run(MANY_VALUES, len, b"abc") == 3
    finally:
        worker.close()


# --- through the API: the answers do not depend on where the body was parsed --------------


@pytest.fixture
async def client(store: FakeJobStore, clock: FakeClock) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(Settings(namespace="unit"), store=store, keys=KeyRing(), clock=clock)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def test_a_valid_chat_with_many_values_is_accepted_and_stored_as_sent(
    client: TestClient[web.Request, web.Application], store: FakeJobStore
) -> None:
    body = many_values_chat()
    answer = await client.post("/v1/async/chat/completions", data=body)
    assert answer.status == 202
    job_id = (await answer.json())["id"]
    assert store.bodies[job_id] == body


async def test_an_invalid_body_with_many_values_answers_the_same_400_as_a_small_one(
    client: TestClient[web.Request, web.Application], store: FakeJobStore
) -> None:
    small = b'{"model":"local/echo","messages":[],"metadata":{"n":[1,2]}}'
    large = small.replace(b"[1,2]", b"[" + b"1," * INLINE_MAX_MARKS + b"2]")
    answers = []
    for body in (small, large):
        answer = await client.post("/v1/async/chat/completions", data=body)
        answers.append((answer.status, await answer.json()))
    assert answers[0] == answers[1]
    assert answers[0][0] == 400
    assert store.objects == {}


async def test_an_anthropic_message_with_many_values_is_translated_in_the_worker(
    client: TestClient[web.Request, web.Application], store: FakeJobStore
) -> None:
    values = list(range(INLINE_MAX_MARKS + 1))
    body = {
        "model": "local/echo",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "hi"}],
        "metadata": {"user_id": "u", "values": values},
    }
    answer = await client.post("/anthropic/v1/messages", json=body, headers={"x-bf-async": "true"})
    assert answer.status == 200, await answer.text()
    job_id = (await answer.json())["id"]
    stored = json.loads(store.bodies[job_id])
    assert stored["model"] == "local/echo"
    assert stored["messages"] == [{"role": "user", "content": "hi"}]


async def test_where_no_worker_process_can_start_the_work_runs_inline() -> None:
    """multiprocessing's locks need a writable /dev/shm; without one, submits still work."""

    def no_processes() -> Executor:
        raise PermissionError(13, "Permission denied", "/dev/shm")

    worker = CpuWorker(no_processes)
    assert await worker.run(os.getpid) == os.getpid()


class Unrebuildable(Exception):
    """Keyword-only arguments: pickling keeps only `args`, so it cannot be rebuilt."""

    def __init__(self, message: str, *, detail: int) -> None:
        super().__init__(message)
        self.detail = detail


def raise_unrebuildable() -> None:
    raise Unrebuildable("no way back", detail=1)


async def test_an_exception_that_cannot_cross_back_is_named_and_the_worker_survives() -> None:
    """Before, such an exception broke the pool: the submit answered 503 and the worker
    process was started again."""
    worker = CpuWorker()
    try:
        with pytest.raises(RuntimeError, match="Unrebuildable: no way back"):
            await worker.run(raise_unrebuildable)
        first = await worker.run(os.getpid)
        assert await worker.run(os.getpid) == first != os.getpid()
    finally:
        worker.close()
