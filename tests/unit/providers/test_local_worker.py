"""The local provider answers a body with many JSON values in the CPU worker process.

Before, its answer was built in a thread, and the standard parser holds the GIL for a
whole parse: a 6 MiB chat body of 819,200 small objects (within the API's value bound)
held the operator's loop for seconds (bench/abuse_bench.py), and with it every other
job and the Lease renewals. The answer is the same wherever it is built.
"""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import Executor, ThreadPoolExecutor

import pytest

from asyncjobs.core.cpu_worker import INLINE_MAX_MARKS, MAX_WAITING, CpuWorker
from asyncjobs.core.providers.base import ProviderError, ProviderRequest
from asyncjobs.core.providers.local import LocalProvider
from asyncjobs.core.request_types import RequestType
from tests.support.executors import CountingExecutor

FIXED_NOW = 1_760_000_000.0


def chat(values: int) -> ProviderRequest:
    body = (
        b'{"model":"echo","messages":[{"role":"user","content":"hello there"}],"metadata":{"v":['
        + b"1," * values
        + b"1]}}"
    )
    return ProviderRequest(RequestType.CHAT_COMPLETION, "echo", body, "application/json")


async def test_only_a_heavy_body_goes_to_the_worker() -> None:
    executor = CountingExecutor()
    worker = CpuWorker(lambda: executor)
    local = LocalProvider(clock=lambda: FIXED_NOW, worker=worker)
    try:
        await local.call(chat(10))
        assert executor.submitted == 0
        await local.call(chat(INLINE_MAX_MARKS + 1))
        assert executor.submitted == 1
    finally:
        worker.close()


async def test_the_worker_process_gives_the_answer_built_inline() -> None:
    worker = CpuWorker()
    heavy = chat(INLINE_MAX_MARKS + 1)
    try:
        from_worker = await LocalProvider(clock=lambda: FIXED_NOW, worker=worker).call(heavy)
        assert await worker.run(os.getpid) != os.getpid()
    finally:
        worker.close()
    inline = LocalProvider(clock=lambda: FIXED_NOW)
    expected = await inline.call(heavy)
    assert from_worker.body == expected.body
    assert from_worker.body["choices"][0]["message"]["content"].endswith(": hello there")


async def test_a_busy_worker_is_a_retryable_503() -> None:
    release = threading.Event()

    def one_thread() -> Executor:
        return ThreadPoolExecutor(max_workers=1)

    worker = CpuWorker(one_thread)
    local = LocalProvider(clock=lambda: FIXED_NOW, worker=worker)
    held = [asyncio.create_task(worker.run(release.wait)) for _ in range(MAX_WAITING + 1)]
    await asyncio.sleep(0)
    try:
        with pytest.raises(ProviderError) as refused:
            await local.call(chat(INLINE_MAX_MARKS + 1))
        assert (refused.value.status_code, refused.value.retryable) == (503, True)
    finally:
        release.set()
        await asyncio.gather(*held)
        worker.close()
