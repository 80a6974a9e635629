"""The operator's job watch against a fake apiserver on a real socket: listed jobs are
handed over page by page (type None, without managedFields) before the listing is
reported by name, the shard selector is sent with every request, and watch events follow."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from asyncjobs.controller import job_watch
from asyncjobs.core.kube import KubeClient
from tests.unit.test_reflector import (  # noqa: F401 - apiserver is a fixture
    FakeApiserver,
    apiserver,
    job,
    wait_for,
)

SELECTOR = "asyncjobs.dev/shard in (1,2)"


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str | None, str, dict[str, Any]]] = []
        self.listings: list[list[str]] = []
        # How many objects had been observed when each listing was reported.
        self.observed_at_listing: list[int] = []

    def observe(self, event_type: str | None, obj: dict[str, Any]) -> None:
        self.events.append((event_type, obj["metadata"]["name"], obj))

    def listed(self, names: Iterable[str]) -> None:
        self.listings.append(list(names))
        self.observed_at_listing.append(len(self.events))


async def test_listed_jobs_are_observed_page_by_page_then_reported_then_watched(
    apiserver: tuple[FakeApiserver, KubeClient],  # noqa: F811
) -> None:
    fake, client = apiserver
    fake.items = [job(f"j{i}", i + 1) for i in range(5)]
    fake.items[0]["metadata"]["managedFields"] = [{"manager": "asyncjobs-api"}]
    fake.version = 6
    fake.watch_scripts = [[{"type": "MODIFIED", "object": job("j1", 7, "Processing")}]]
    seen = Recorder()
    watch = job_watch.job_watch(client, "ns", SELECTOR, seen, seen, page_size=2)
    task = asyncio.create_task(watch.run())
    try:
        await wait_for(lambda: len(seen.events) == 6)
    finally:
        task.cancel()
    assert [(kind, name) for kind, name, _ in seen.events[:5]] == [
        (None, f"j{i}") for i in range(5)
    ]
    assert seen.listings == [[f"j{i}" for i in range(5)]]
    assert seen.observed_at_listing == [5], "every listed job is observed before the report"
    assert "managedFields" not in seen.events[0][2]["metadata"]
    assert "managedFields" in fake.items[0]["metadata"]
    kind, name, obj = seen.events[5]
    assert (kind, name, obj["status"]["phase"]) == ("MODIFIED", "j1", "Processing")
    assert len(fake.list_queries) == 3, "five jobs in pages of two"
    assert all(query["labelSelector"] == SELECTOR for query in fake.list_queries)
    assert fake.watches[0] == "6", "the watch starts at the listing's version"


async def test_a_listing_whose_continue_token_expired_starts_again_and_reports_once(
    apiserver: tuple[FakeApiserver, KubeClient],  # noqa: F811
) -> None:
    fake, client = apiserver
    fake.items = [job(f"j{i}", i + 1) for i in range(4)]
    original = fake.list_page
    expired: list[bool] = []

    async def expire_once(request: web.Request) -> web.Response:
        if request.query.get("continue") and not expired:
            expired.append(True)
            return web.json_response(
                {"kind": "Status", "code": 410, "reason": "Expired"}, status=410
            )
        return await original(request)

    fake.list_page = expire_once  # type: ignore[method-assign]
    seen = Recorder()
    task = asyncio.create_task(
        job_watch.job_watch(client, "ns", SELECTOR, seen, seen, page_size=2).run()
    )
    try:
        await wait_for(lambda: bool(seen.listings))
    finally:
        task.cancel()
    # The first page was observed twice (harmless: a job with a task is left alone).
    assert [name for _, name, _ in seen.events] == ["j0", "j1", "j0", "j1", "j2", "j3"]
    assert seen.listings == [["j0", "j1", "j2", "j3"]]
