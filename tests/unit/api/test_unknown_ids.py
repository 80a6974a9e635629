"""Polls of ids that do not exist: one apiserver GET per id and moment, not per poll."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from asyncjobs.api.store import JobCache, KubeJobStore, UnknownIds
from asyncjobs.core import resources
from asyncjobs.core.kube import KubeClient, KubeConfig

NS = "jobs"
START = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def counted() -> AsyncIterator[tuple[list[str], KubeJobStore, Clock]]:
    gets: list[str] = []

    async def get_job(request: web.Request) -> web.Response:
        gets.append(request.match_info["name"])
        return web.json_response({"code": 404, "reason": "NotFound"}, status=404)

    app = web.Application()
    app.router.add_get(resources.asyncjobs_path(NS, "{name}"), get_job)
    clock = Clock()
    async with TestServer(app) as server:
        config = KubeConfig(server=str(server.make_url("")).rstrip("/"))
        async with KubeClient(config) as client:
            yield gets, KubeJobStore(client, NS, JobCache(), clock=clock), clock


async def test_unknown_id_is_looked_up_once_per_moment(
    counted: tuple[list[str], KubeJobStore, Clock],
) -> None:
    gets, store, clock = counted
    for _ in range(50):
        assert await store.find("made-up") is None
    assert gets == ["made-up"]
    clock.now += timedelta(seconds=2)  # the moment has passed: ask again
    assert await store.find("made-up") is None
    assert gets == ["made-up", "made-up"]


def test_the_remembered_ids_are_bounded() -> None:
    unknown = UnknownIds(limit=3)
    for index in range(5):
        unknown.missing(f"id-{index}", START)
    assert not unknown.known_missing("id-0", START)
    assert not unknown.known_missing("id-1", START)
    assert unknown.known_missing("id-4", START)
    assert not unknown.known_missing("id-4", START + unknown.ttl)
