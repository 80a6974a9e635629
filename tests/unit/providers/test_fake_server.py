"""The fake OpenAI server checks what it receives and can be driven from another process."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.fakes.openai_server import FakeOpenAIServer

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
AUTH = {"Authorization": "Bearer sk-any"}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.mark.parametrize(
    ("body", "headers", "problem"),
    [
        ({**CHAT, "model": "openai/gpt-test"}, AUTH, "still carries the gateway prefix"),
        ({**CHAT, "fallbacks": ["openai/x"]}, AUTH, "fallbacks is a gateway field"),
        ({**CHAT, "max_tokens": 5}, AUTH, "max_tokens must be sent as max_completion_tokens"),
        ({"model": "gpt-test"}, AUTH, "messages is required"),
        (CHAT, {}, "Authorization header is missing"),
    ],
)
async def test_fake_rejects_requests_openai_would_not_take(
    session: aiohttp.ClientSession, body: dict[str, Any], headers: dict[str, str], problem: str
) -> None:
    async with FakeOpenAIServer() as fake:
        url = fake.base_url + "/chat/completions"
        async with session.post(url, json=body, headers=headers) as response:
            assert response.status == 400
            error = (await response.json())["error"]
        assert error["code"] == "fake_check_failed"
        assert problem in error["message"]
        (violation,) = fake.stats()["violations"]
        assert problem in violation


async def test_fake_runs_as_a_process_scripted_through_its_control_api(
    session: aiohttp.ClientSession,
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.fakes.openai_server", "--port", "0", "--latency-ms", "50",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        port = int(await asyncio.wait_for(process.stdout.readline(), 30))
        root = f"http://127.0.0.1:{port}"
        script = {"model": "gpt-test", "steps": [{"status": 429, "retry_after": "2"}]}
        async with session.post(f"{root}/_fake/script", json=script) as response:
            assert (await response.json()) == {"queued": 1}
        statuses = []
        for _ in range(2):
            url = f"{root}/v1/chat/completions"
            async with session.post(url, json=CHAT, headers=AUTH) as response:
                statuses.append((response.status, response.headers.get("Retry-After")))
        assert statuses == [(429, "2"), (200, None)]
        async with session.get(f"{root}/_fake/stats") as response:
            stats = await response.json()
        assert stats["count"] == 2
        assert stats["violations"] == []
        async with session.post(f"{root}/_fake/reset") as response:
            assert response.status == 200
        async with session.get(f"{root}/_fake/stats") as response:
            assert (await response.json())["count"] == 0
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 30) == 0


async def test_fake_counts_the_most_requests_in_flight_at_once(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeOpenAIServer(latency_ms=150) as fake:
        url = fake.base_url + "/chat/completions"

        async def one() -> int:
            async with session.post(url, json=CHAT, headers=AUTH) as response:
                return response.status

        assert await asyncio.gather(*(one() for _ in range(4))) == [200] * 4
        stats = fake.stats()
        assert (stats["max_in_flight"], stats["in_flight"]) == (4, 0)
