"""Large bodies are joined and hashed in a thread, small ones on the loop: bytes.join and
hashlib let go of the GIL for large buffers, so a 25-40 MiB body no longer holds the
loop (every poll of the API, every job and Lease renewal of the operator)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.streams import EMPTY_PAYLOAD

from asyncjobs.core import large_bytes

LARGE = b"x" * (large_bytes.IN_THREAD_BYTES + 1)


@pytest.fixture
def threads_used(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of each function large_bytes handed to a thread."""
    used: list[str] = []
    real = asyncio.to_thread

    async def recording(function: Callable[..., Any], /, *args: Any) -> Any:
        used.append(getattr(function, "__name__", repr(function)))
        return await real(function, *args)

    monkeypatch.setattr(asyncio, "to_thread", recording)
    return used


async def test_a_large_body_is_hashed_in_a_thread_and_a_small_one_inline(
    threads_used: list[str],
) -> None:
    assert await large_bytes.sha256_hex(LARGE) == hashlib.sha256(LARGE).hexdigest()
    assert threads_used == ["sha256_hex_now"]
    assert await large_bytes.sha256_hex(b"small") == hashlib.sha256(b"small").hexdigest()
    assert threads_used == ["sha256_hex_now"]


async def test_large_parts_are_joined_in_a_thread_and_small_ones_inline(
    threads_used: list[str],
) -> None:
    assert await large_bytes.joined([b"{", LARGE, b"}"]) == b"{" + LARGE + b"}"
    assert threads_used == ["join"]
    assert await large_bytes.joined([b"a", b"b"]) == b"ab"
    assert threads_used == ["join"]


async def test_hashing_in_a_thread_leaves_the_loop_free() -> None:
    """While the thread hashes, the loop runs other callbacks (hashlib releases the GIL)."""
    ticks = 0
    done = asyncio.Event()

    async def ticking() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(ticking())
    body = LARGE * 32
    digest = await large_bytes.sha256_hex(body)
    done.set()
    await ticker
    assert digest == hashlib.sha256(body).hexdigest()
    assert ticks > 1


async def test_empty_bodies_are_read_to_their_end_every_time() -> None:
    """A 204's body is aiohttp's one shared empty reader: reading it twice must end."""
    for _ in range(3):
        assert await asyncio.wait_for(large_bytes.read_all(EMPTY_PAYLOAD), 5) == b""
