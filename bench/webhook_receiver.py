"""The chaos run's completion-webhook receiver (bench/chaos.py --webhooks).

A real HTTP server on loopback that verifies every delivery with the `standardwebhooks`
package (not the code under test), answers every `fail_every`-th delivery with 503 on
purpose (so retries happen while processes are killed) and keeps, per job, the deliveries
it accepted. What the run then reports is a pure function of those and of the jobs:

- undelivered: terminal jobs that never got an accepted (2xx-answered) delivery; at
  least once means this must be 0;
- duplicates: accepted deliveries beyond the first of a job (at least once allows them;
  the same webhook-id on each lets a receiver drop them).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from standardwebhooks import Webhook

ENDPOINT = "chaos"
HEADER = "x-bf-async-webhook"


@dataclass
class Receiver:
    fail_every: int = 5
    secret: str = ""
    received: int = 0
    failed_on_purpose: int = 0
    unverified: int = 0
    accepted: Counter[str] = field(default_factory=Counter)  # job id -> 2xx deliveries
    ids: dict[str, set[str]] = field(default_factory=dict)  # job id -> webhook-ids
    accepted_one: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            event = Webhook(self.secret).verify(raw, dict(request.headers))
        except Exception:
            self.unverified += 1
            return web.Response(status=401)
        self.received += 1
        if self.fail_every and self.received % self.fail_every == 0:
            self.failed_on_purpose += 1
            return web.Response(status=503)
        job_id = str(event["data"]["job_id"])
        self.accepted[job_id] += 1
        self.ids.setdefault(job_id, set()).add(request.headers["webhook-id"])
        self.accepted_one.set()
        return web.Response(status=200)


class Serving:
    """The receiver listening on a free loopback port for as long as the run."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> Serving:
        app = web.Application()
        app.router.add_post("/hook", self.receiver.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def __aexit__(self, *_: object) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def register(session: aiohttp.ClientSession, api: str, url: str, receiver: Receiver) -> None:
    """The endpoint, through /api/webhooks; its secret goes to the receiver."""
    body = {"name": ENDPOINT, "url": url, "allow_private_network": True, "max_attempts": 10}
    async with session.post(f"{api}/api/webhooks", json=body) as answer:
        document: dict[str, Any] = await answer.json()
        if answer.status != 201:
            raise RuntimeError(f"could not register the webhook endpoint: {document}")
    receiver.secret = document["secret"]


def undelivered(receiver: Receiver, terminal_ids: Iterable[str]) -> list[str]:
    return [job_id for job_id in terminal_ids if not receiver.accepted.get(job_id)]


async def wait_delivered(receiver: Receiver, terminal_ids: list[str], timeout: float) -> float:
    """Seconds until every terminal job's notification was accepted, or the timeout."""
    started = time.monotonic()
    while undelivered(receiver, terminal_ids):
        left = timeout - (time.monotonic() - started)
        if left <= 0:
            break
        receiver.accepted_one.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(receiver.accepted_one.wait(), left)
    return time.monotonic() - started


def figures(receiver: Receiver, terminal_ids: list[str]) -> dict[str, Any]:
    missing = undelivered(receiver, terminal_ids)
    return {
        "webhook_terminal_jobs": len(terminal_ids),
        "webhook_undelivered": len(missing),
        "webhook_undelivered_examples": missing[:5],
        "webhook_duplicates": sum(n - 1 for n in receiver.accepted.values() if n > 1),
        "webhook_deliveries_received": receiver.received,
        "webhook_failed_on_purpose": receiver.failed_on_purpose,
        "webhook_unverified": receiver.unverified,
        "webhook_ids_per_job_max": max((len(ids) for ids in receiver.ids.values()), default=0),
    }
