"""A provider answer past the limit fails the call without being read to its end: a
buggy or hostile server must not take the operator (or its worker) past its memory."""

from __future__ import annotations

import pytest
from aiohttp import web

from asyncjobs.core.providers import transport
from asyncjobs.core.providers.base import ProviderError, ProviderResult
from asyncjobs.core.providers.keys import ApiKey
from asyncjobs.core.providers.openai_wire import OpenAIWire
from asyncjobs.core.providers.transport import HttpProvider
from asyncjobs.core.request_types import RequestType
from tests.fakes.serving import RealSocketServer

from .samples import sample_request
from .support import NOW, FirstKeyFirst


class Flood(RealSocketServer):
    """Answers every request 200 with `size` bytes of a JSON string, streamed."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        await self.serve(app)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b'{"object":"chat.completion","x":"')
        piece = b"a" * 65536
        for _ in range(self.size // len(piece)):
            await response.write(piece)
        await response.write(b'"}')
        await response.write_eof()
        return response


async def call(size: int) -> object:
    async with Flood(size) as server:
        provider = HttpProvider(
            "openai",
            OpenAIWire(f"http://127.0.0.1:{server.port}/v1"),
            keys=[ApiKey("k")],
            timeout_seconds=30,
            rng=FirstKeyFirst(),
            clock=lambda: NOW,
        )
        try:
            return await provider.call(sample_request(RequestType.CHAT_COMPLETION, "m"))
        except ProviderError as error:
            return error
        finally:
            await provider.close()


async def test_an_answer_over_the_limit_fails_the_call_and_is_not_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transport, "MAX_ANSWER_BYTES", 1 << 20)
    error = await call(2 << 20)
    assert isinstance(error, ProviderError)
    assert error.error_type == "answer_too_large"
    assert error.retryable is False
    assert error.status_code == 502
    assert error.message == "provider openai answered with more than 1 MiB; the answer was not read"


async def test_an_answer_under_the_limit_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport, "MAX_ANSWER_BYTES", 1 << 20)
    outcome = await call(512 << 10)
    assert isinstance(outcome, ProviderResult)
    assert outcome.body is not None
    assert len(outcome.body["x"]) == 512 << 10, "read to its end"
