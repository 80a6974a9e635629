"""The watch-fed cache against a fake apiserver on a real socket: list, watch, relist on
410 Gone and after a dropped connection, and deletions seen through a relist."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from asyncjobs.api.reflector import Reflector
from asyncjobs.api.store import JobCache
from asyncjobs.core import resources
from asyncjobs.core.kube import KubeClient, KubeConfig

PATH = resources.asyncjobs_path("ns")


def job(name: str, version: int, phase: str = "Pending") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "uid": f"u-{name}", "resourceVersion": str(version)},
        "spec": {"requestType": "ocr", "submittedAt": "2026-01-01T00:00:00.000Z"},
        "status": {"phase": phase},
    }


class FakeApiserver:
    """Serves a list of jobs and scripted watch streams, one script per watch request."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.version = 1
        self.watch_scripts: list[list[dict[str, Any]]] = []
        self.lists = 0
        self.watches: list[str] = []
        self.hold = asyncio.Event()
        self.gate = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") != "true":
            self.lists += 1
            return web.json_response(
                {"items": self.items, "metadata": {"resourceVersion": str(self.version)}}
            )
        self.watches.append(request.query["resourceVersion"])
        response = web.StreamResponse()
        await response.prepare(request)
        script = self.watch_scripts.pop(0) if self.watch_scripts else None
        if script is None:
            await self.hold.wait()  # an idle watch, until the test ends
            return response
        for event in script:
            if event.get("type") == "WAIT":
                await self.gate.wait()
                continue
            if event.get("type") == "DROP":
                request.transport.close()  # type: ignore[union-attr]
                return response
            await response.write(json.dumps(event).encode() + b"\n")
        return response


@pytest.fixture
async def apiserver() -> AsyncIterator[tuple[FakeApiserver, KubeClient]]:
    fake = FakeApiserver()
    app = web.Application()
    app.router.add_get(PATH, fake.handle)
    async with TestServer(app) as server:
        config = KubeConfig(server=str(server.make_url("")).rstrip("/"))
        async with KubeClient(config) as client:
            yield fake, client
            fake.hold.set()


async def wait_for(condition: Any, timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        # The state changes in another task behind a socket; there is no event to await.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def run_reflector(
    client: KubeClient, cache: JobCache, restarts: list[str]
) -> asyncio.Task[None]:
    reflector = Reflector(
        client,
        PATH,
        name="test",
        on_replace=cache.replace,
        on_event=cache.apply,
        on_restart=restarts.append,
        max_backoff=0.05,
    )
    return asyncio.create_task(reflector.run())


async def test_cache_follows_list_then_watch_events(
    apiserver: tuple[FakeApiserver, KubeClient],
) -> None:
    fake, client = apiserver
    fake.items = [job("a", 1)]
    fake.watch_scripts = [
        [
            {"type": "ADDED", "object": job("b", 2)},
            {"type": "MODIFIED", "object": job("a", 3, "Processing")},
            {"type": "DELETED", "object": job("b", 4)},
            {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}},
        ],
    ]
    cache, restarts = JobCache(), []
    task = await run_reflector(client, cache, restarts)
    try:
        await wait_for(lambda: len(fake.watches) == 2)
        view = cache.get("a")
        assert view is not None
        assert view.phase.value == "Processing"
        assert cache.get("b") is None
        # A watch the server ended normally resumes from the newest version, no relist.
        assert fake.watches == ["1", "9"]
        assert fake.lists == 1
        assert restarts == []
    finally:
        task.cancel()


async def test_410_gone_relists_and_drops_what_was_deleted_meanwhile(
    apiserver: tuple[FakeApiserver, KubeClient],
) -> None:
    fake, client = apiserver
    fake.items = [job("a", 1), job("b", 1)]
    gone = {"type": "ERROR", "object": {"code": 410, "reason": "Expired", "message": "too old"}}
    fake.watch_scripts = [[{"type": "WAIT"}, gone]]
    cache, restarts = JobCache(), []
    task = await run_reflector(client, cache, restarts)
    try:
        await wait_for(lambda: len(cache) == 2)
        fake.items = [job("a", 5, "Completed")]
        fake.version = 5
        fake.gate.set()
        await wait_for(lambda: fake.lists == 2 and len(fake.watches) == 2)
        assert cache.get("b") is None
        assert cache.get("a") is not None
        assert restarts == ["expired"]
        assert fake.watches == ["1", "5"]
    finally:
        task.cancel()


async def test_dropped_connection_relists_after_backoff(
    apiserver: tuple[FakeApiserver, KubeClient],
) -> None:
    fake, client = apiserver
    fake.items = [job("a", 1)]
    fake.watch_scripts = [[{"type": "ADDED", "object": job("b", 2)}, {"type": "DROP"}]]
    cache, restarts = JobCache(), []
    task = await run_reflector(client, cache, restarts)
    try:
        await wait_for(lambda: fake.lists == 2 and len(fake.watches) == 2)
        assert restarts == ["error"]
        assert cache.get("a") is not None
    finally:
        task.cancel()
