"""The watch-fed cache against a fake apiserver on a real socket: a paginated list, watch,
relist on 410 Gone and after a dropped connection, deletions seen through a relist, an
expired `continue` token, a transient page error retried, and `in_sync` during a relist."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from asyncjobs.api.store import JobCache
from asyncjobs.core import resources
from asyncjobs.core.kube import KubeClient, KubeConfig
from asyncjobs.core.reflector import Reflector

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
        # When set, pages after the first wait for it (a relist caught half way).
        self.list_gate: asyncio.Event | None = None
        self.list_queries: list[dict[str, str]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") != "true":
            return await self.list_page(request)
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

    async def list_page(self, request: web.Request) -> web.Response:
        self.list_queries.append(dict(request.query))
        token = request.query.get("continue", "")
        if not token:
            self.lists += 1
        if self.list_gate is not None and token:
            await self.list_gate.wait()
        start = int(token or 0)
        limit = int(request.query.get("limit", len(self.items) or 1))
        end = start + limit
        metadata = {"resourceVersion": str(self.version)}
        if end < len(self.items):
            metadata["continue"] = str(end)
        return web.json_response({"items": self.items[start:end], "metadata": metadata})


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


def make_reflector(
    client: KubeClient,
    cache: JobCache,
    restarts: list[str],
    page_size: int = 500,
    syncs: list[bool] | None = None,
) -> Reflector[object]:
    return Reflector(
        client,
        PATH,
        name="test",
        keep=JobCache.slim,
        on_replace=cache.replace,
        on_event=cache.apply,
        on_restart=restarts.append,
        on_sync=(syncs if syncs is not None else []).append,
        max_backoff=0.05,
        page_size=page_size,
    )


async def run_reflector(
    client: KubeClient, cache: JobCache, restarts: list[str]
) -> asyncio.Task[None]:
    return asyncio.create_task(make_reflector(client, cache, restarts).run())


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


async def test_list_is_read_in_pages_joined_in_order(
    apiserver: tuple[FakeApiserver, KubeClient],
) -> None:
    fake, client = apiserver
    fake.items = [job(f"j{i:02}", 1) for i in range(7)]
    fake.version = 3
    cache, restarts, syncs = JobCache(), [], []
    reflector = make_reflector(client, cache, restarts, page_size=3, syncs=syncs)
    task = asyncio.create_task(reflector.run())
    try:
        await wait_for(lambda: len(fake.watches) == 1)
        assert [q.get("continue", "") for q in fake.list_queries] == ["", "3", "6"]
        assert {q["limit"] for q in fake.list_queries} == {"3"}
        assert len(cache) == 7
        assert all(cache.get(f"j{i:02}") is not None for i in range(7))
        # The watch starts from the list's resourceVersion.
        assert fake.watches == ["3"]
        assert syncs == [True]
        assert reflector.in_sync
        assert restarts == []
    finally:
        task.cancel()


async def test_expired_continue_token_restarts_the_list(
    apiserver: tuple[FakeApiserver, KubeClient],
) -> None:
    fake, client = apiserver
    fake.items = [job(f"j{i}", 1) for i in range(5)]
    # Page 1 is served; page 2 answers 410 (its snapshot compacted); then a fresh list.
    cache, restarts, syncs = JobCache(), [], []
    reflector = make_reflector(client, cache, restarts, page_size=2, syncs=syncs)
    replaced: list[int] = []
    replace = cache.replace

    def counting_replace(views: list[object]) -> None:
        replaced.append(len(views))
        replace(views)  # type: ignore[arg-type]

    reflector.on_replace = counting_replace
    original = fake.list_page
    calls = 0

    async def expire_second_page(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if calls == 2:
            fake.list_queries.append(dict(request.query))
            return web.json_response({"reason": "Expired", "message": "too old"}, status=410)
        return await original(request)

    fake.list_page = expire_second_page  # type: ignore[method-assign]
    task = asyncio.create_task(reflector.run())
    try:
        await wait_for(lambda: len(fake.watches) == 1)
        assert [q.get("continue", "") for q in fake.list_queries] == ["", "2", "", "2", "4"]
        assert restarts == ["expired"]
        # Replaced once, with the whole second list (nothing of the abandoned one twice).
        assert replaced == [5]
        assert len(cache) == 5
        assert syncs == [True]
    finally:
        task.cancel()


async def test_transient_error_on_a_page_is_retried(
    apiserver: tuple[FakeApiserver, KubeClient],
) -> None:
    fake, client = apiserver
    fake.items = [job(f"j{i}", 1) for i in range(4)]
    cache, restarts = JobCache(), []
    reflector = make_reflector(client, cache, restarts, page_size=2)
    original = fake.list_page
    calls = 0

    async def fail_page_two_once(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if calls == 2:
            fake.list_queries.append(dict(request.query))
            return web.json_response({"reason": "Unavailable", "message": "x"}, status=503)
        return await original(request)

    fake.list_page = fail_page_two_once  # type: ignore[method-assign]
    task = asyncio.create_task(reflector.run())
    try:
        await wait_for(lambda: len(fake.watches) == 1)
        # Page 2 asked again with the same token; the list was not restarted.
        assert [q.get("continue", "") for q in fake.list_queries] == ["", "2", "2"]
        assert fake.lists == 1
        assert restarts == []
        assert len(cache) == 4
    finally:
        task.cancel()


async def test_not_in_sync_during_a_relist_and_in_sync_after(
    apiserver: tuple[FakeApiserver, KubeClient],
) -> None:
    fake, client = apiserver
    fake.items = [job("a", 1), job("b", 1), job("c", 1)]
    gone = {"type": "ERROR", "object": {"code": 410, "reason": "Expired", "message": "too old"}}
    fake.watch_scripts = [[{"type": "WAIT"}, gone]]
    cache, restarts, syncs = JobCache(), [], []
    reflector = make_reflector(client, cache, restarts, page_size=2, syncs=syncs)
    assert not reflector.in_sync
    task = asyncio.create_task(reflector.run())
    try:
        await wait_for(lambda: reflector.in_sync)
        assert len(cache) == 3
        # The relist after the 410 stops before its second page.
        fake.list_gate = asyncio.Event()
        fake.items = [job("a", 5, "Completed"), job("c", 5), job("d", 5)]
        fake.version = 5
        fake.gate.set()
        await wait_for(lambda: not reflector.in_sync)
        await wait_for(lambda: fake.lists == 2)
        assert syncs == [True, False]
        # The old cache still answers reads meanwhile; it is not replaced by a half list.
        assert len(cache) == 3
        assert cache.get("b") is not None
        fake.list_gate.set()
        await wait_for(lambda: reflector.in_sync)
        assert syncs == [True, False, True]
        assert cache.get("b") is None
        assert cache.get("d") is not None
        assert len(cache) == 3
        await wait_for(lambda: fake.watches == ["1", "5"])
    finally:
        task.cancel()
