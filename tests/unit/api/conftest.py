"""Fixtures for API unit tests: an app over an in-memory store and a fixed clock, served
on port 0."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from asyncjobs.api.app import create_app
from asyncjobs.api.settings import Settings
from asyncjobs.api.virtual_keys import KeyEntry, KeyRing, digest
from tests.unit.api.fakes import FakeClock, FakeJobStore

# Two virtual keys the ring knows; "sk-bf-unknown" is deliberately absent.
KEY_A = "sk-bf-alpha-0001"
KEY_B = "sk-bf-bravo-0002"
KEY_A_ID = "team-a"
KEY_B_ID = "team-b"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> FakeJobStore:
    return FakeJobStore(clock)


@pytest.fixture
def keys() -> KeyRing:
    return KeyRing(
        [
            KeyEntry("vk-a", KEY_A_ID, digest(KEY_A)),
            KeyEntry("vk-b", KEY_B_ID, digest(KEY_B)),
        ]
    )


@pytest.fixture
def settings() -> Settings:
    return Settings(
        namespace="unit",
        providers=frozenset({"local", "openai", "anthropic"}),
        max_request_bytes=64 * 1024,
        default_result_ttl=1800,
    )


@pytest.fixture
async def client(
    settings: Settings, store: FakeJobStore, keys: KeyRing, clock: FakeClock
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = create_app(settings, store=store, keys=keys, clock=clock)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client
