"""Expiry deletes each terminal job at its time, once, and not after it was forgotten."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from asyncjobs.controller.expiry import Expiry
from asyncjobs.core.kube import KubeError


async def test_jobs_are_deleted_in_expiry_order_and_forgotten_ones_are_not() -> None:
    start = datetime.now(UTC)
    deleted: list[tuple[str, str]] = []
    done = asyncio.Event()

    async def delete(name: str, uid: str) -> None:
        deleted.append((name, uid))
        if len(deleted) == 2:
            done.set()

    expiry = Expiry(delete, lambda: datetime.now(UTC))
    runner = asyncio.create_task(expiry.run())
    expiry.schedule("late", "u2", start + timedelta(seconds=0.3))
    expiry.schedule("gone", "u3", start + timedelta(seconds=0.1))
    expiry.schedule("early", "u1", start + timedelta(seconds=0.05))
    expiry.schedule("early", "u1", start + timedelta(seconds=0.05))  # seen twice
    expiry.forget("gone")
    await asyncio.wait_for(done.wait(), timeout=5)
    runner.cancel()
    assert deleted == [("early", "u1"), ("late", "u2")]
    assert len(expiry) == 0


async def test_an_earlier_job_wakes_a_long_wait() -> None:
    deleted = asyncio.Event()

    async def delete(name: str, uid: str) -> None:
        deleted.set()

    now = datetime.now(UTC)
    expiry = Expiry(delete, lambda: datetime.now(UTC))
    runner = asyncio.create_task(expiry.run())
    expiry.schedule("hour", "u1", now + timedelta(hours=1))
    await asyncio.sleep(0.01)
    expiry.schedule("now", "u2", now)
    await asyncio.wait_for(deleted.wait(), timeout=5)
    runner.cancel()
    assert len(expiry) == 1


async def test_a_failed_delete_is_retried_until_it_succeeds() -> None:
    attempts: list[str] = []
    deleted = asyncio.Event()

    async def delete(name: str, uid: str) -> None:
        attempts.append(name)
        if len(attempts) == 1:
            raise KubeError(503, "ServiceUnavailable", "apiserver restarting")
        if len(attempts) == 2:
            raise OSError("connection refused")
        deleted.set()

    expiry = Expiry(delete, lambda: datetime.now(UTC), retry_delays=(0.0,))
    runner = asyncio.create_task(expiry.run())
    expiry.schedule("j1", "u1", datetime.now(UTC))
    await asyncio.wait_for(deleted.wait(), timeout=5)
    runner.cancel()
    assert attempts == ["j1", "j1", "j1"]
    assert len(expiry) == 0
