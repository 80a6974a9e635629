"""Expiry deletes each terminal job at its time, once, and not after it was forgotten.

Time is moved by hand: each wait of the expiry is reported (nothing is due before it
ends), so the tests need no sleeps and no real clock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from asyncjobs.controller.expiry import Expiry
from asyncjobs.core.kube import KubeError

START = datetime(2026, 1, 1, tzinfo=UTC)


class FakeTime:
    """The wall clock and the waits of an Expiry. A wait ends on a change, or once the
    clock has been moved past its end; the test reads each wait's length in turn."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self._waits: asyncio.Queue[float | None] = asyncio.Queue()
        self._moved = asyncio.Event()

    def wall(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    async def wait(self, changed: asyncio.Event, seconds: float | None) -> None:
        self._waits.put_nowait(seconds)
        end = None if seconds is None else self.now + timedelta(seconds=seconds)
        while not changed.is_set() and (end is None or self.now < end):
            waiters = {
                asyncio.ensure_future(changed.wait()),
                asyncio.ensure_future(self._moved.wait()),
            }
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()

    async def next_wait(self) -> float | None:
        """The length of the expiry's next wait, once it has begun."""
        return await asyncio.wait_for(self._waits.get(), timeout=5)


@contextlib.asynccontextmanager
async def running(expiry: Expiry) -> AsyncIterator[None]:
    runner = asyncio.create_task(expiry.run())
    try:
        yield
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


@pytest.fixture
def time() -> FakeTime:
    return FakeTime(START)


async def test_jobs_are_deleted_in_expiry_order_and_forgotten_ones_are_not(
    time: FakeTime,
) -> None:
    deleted: list[tuple[str, str]] = []

    async def delete(name: str, uid: str) -> None:
        deleted.append((name, uid))

    expiry = Expiry(delete, time.wall, wait=time.wait)
    expiry.schedule("late", "u2", START + timedelta(seconds=300))
    expiry.schedule("gone", "u3", START + timedelta(seconds=100))
    expiry.schedule("early", "u1", START + timedelta(seconds=50))
    expiry.schedule("early", "u1", START + timedelta(seconds=50))  # seen twice
    expiry.forget("gone")
    async with running(expiry):
        assert await time.next_wait() == 50
        assert deleted == []
        time.advance(50)
        assert await time.next_wait() == 250  # "gone" was forgotten: "late" is next
        assert deleted == [("early", "u1")]
        time.advance(250)
        assert await time.next_wait() is None
    assert deleted == [("early", "u1"), ("late", "u2")]
    assert len(expiry) == 0


async def test_an_earlier_job_wakes_a_long_wait(time: FakeTime) -> None:
    deleted = asyncio.Event()

    async def delete(name: str, uid: str) -> None:
        deleted.set()

    expiry = Expiry(delete, time.wall, wait=time.wait)
    expiry.schedule("hour", "u1", START + timedelta(hours=1))
    async with running(expiry):
        assert await time.next_wait() == 3600
        expiry.schedule("now", "u2", START)  # the clock stands still: only this wakes it
        await asyncio.wait_for(deleted.wait(), timeout=5)
        assert await time.next_wait() == 3600
    assert len(expiry) == 1


async def test_a_failed_delete_is_retried_until_it_succeeds(time: FakeTime) -> None:
    attempts: list[str] = []
    deleted = asyncio.Event()

    async def delete(name: str, uid: str) -> None:
        attempts.append(name)
        if len(attempts) == 1:
            raise KubeError(503, "ServiceUnavailable", "apiserver restarting")
        if len(attempts) == 2:
            raise OSError("connection refused")
        deleted.set()

    expiry = Expiry(delete, time.wall, retry_delays=(1.0, 2.0), wait=time.wait)
    expiry.schedule("j1", "u1", START)
    async with running(expiry):
        assert await time.next_wait() == 1.0  # the first pause
        time.advance(1)
        assert await time.next_wait() == 2.0  # a longer one after the second failure
        time.advance(2)
        await asyncio.wait_for(deleted.wait(), timeout=5)
    assert attempts == ["j1", "j1", "j1"]
    assert len(expiry) == 0
