"""Fixtures for provider tests: a fake OpenAI server on a real socket, and a provider for it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from asyncjobs.core.providers.keys import ApiKey
from asyncjobs.core.providers.openai_compat import OpenAICompatProvider
from tests.fakes.openai_server import FakeOpenAIServer

GOOD_KEY = "sk-test-good"


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAIServer]:
    async with FakeOpenAIServer(api_keys={GOOD_KEY}) as server:
        yield server


@pytest.fixture
async def openai(fake: FakeOpenAIServer) -> AsyncIterator[OpenAICompatProvider]:
    provider = OpenAICompatProvider(
        "openai", base_url=fake.base_url, keys=[ApiKey(GOOD_KEY)], timeout_seconds=10
    )
    yield provider
    await provider.close()
