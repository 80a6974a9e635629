"""A provider's large answer is decoded, translated and encoded for storage in the CPU
worker process, and stores the same bytes as an answer decoded on the operator's loop.

Every wire format is called over a real socket (its fake server) with a provider that
sends every answer to a real spawned worker; the answer it got is then decoded inline,
as a small answer is, and both stored bodies are compared byte for byte. Before this,
every answer was decoded and re-encoded on the loop: 2,048 embeddings of 3,072 values
(tens of MiB of JSON) held it, and every other job and Lease renewal, for seconds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, ParamSpec, TypeVar

import pytest
from aiohttp import web

from asyncjobs.core import results
from asyncjobs.core.cpu_worker import INLINE_MAX_BYTES, CpuWorker
from asyncjobs.core.providers.anthropic import AnthropicWire
from asyncjobs.core.providers.azure import AzureWire
from asyncjobs.core.providers.base import ProviderError, ProviderRequest, ProviderResult
from asyncjobs.core.providers.cohere import CohereWire
from asyncjobs.core.providers.gemini import GeminiWire
from asyncjobs.core.providers.keys import ApiKey
from asyncjobs.core.providers.mistral import MistralWire
from asyncjobs.core.providers.openai_wire import OpenAIWire
from asyncjobs.core.providers.transport import (
    Answer,
    HttpProvider,
    UnsupportedRequestType,
    WireFormat,
    prepared_for_storage,
)
from asyncjobs.core.request_types import RequestType
from tests.fakes.anthropic_fake import AnthropicDialect
from tests.fakes.azure_fake import AzureDialect
from tests.fakes.cohere_fake import CohereDialect
from tests.fakes.gemini_fake import GeminiDialect
from tests.fakes.mistral_fake import MistralDialect
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.serving import RealSocketServer
from tests.fakes.wire_server import FakeProviderServer

from .samples import form_request, json_request, sample_request
from .support import NOW

KEY = "key-good"
P = ParamSpec("P")
T = TypeVar("T")

# name -> (the fake server, the wire format at the fake's URL)
PROVIDERS: dict[str, tuple[Callable[[], RealSocketServer], Callable[[str], WireFormat]]] = {
    "openai": (
        lambda: FakeOpenAIServer(api_keys={KEY}),
        lambda url: OpenAIWire(url + "/v1", frozenset(RequestType)),
    ),
    "azure": (
        lambda: FakeProviderServer(AzureDialect(), api_keys={KEY}),
        lambda url: AzureWire(base_url=url + "/", deployments={"gpt-test": "dep"}),
    ),
    "anthropic": (
        lambda: FakeProviderServer(AnthropicDialect(), api_keys={KEY}),
        lambda url: AnthropicWire(base_url=url + "/v1"),
    ),
    "gemini": (
        lambda: FakeProviderServer(GeminiDialect(), api_keys={KEY}),
        lambda url: GeminiWire(base_url=url + "/v1beta"),
    ),
    "mistral": (
        lambda: FakeProviderServer(MistralDialect(), api_keys={KEY}),
        lambda url: MistralWire(base_url=url + "/v1"),
    ),
    "cohere": (
        lambda: FakeProviderServer(CohereDialect(), api_keys={KEY}),
        lambda url: CohereWire(base_url=url),
    ),
}


def requests_of(name: str) -> list[tuple[str, ProviderRequest]]:
    """Every request type the wire format serves, and the answers its decode rewrites most."""
    wire = PROVIDERS[name][1]("http://unused")
    cases = []
    for request_type in RequestType:
        try:
            wire.build(sample_request(request_type))
        except UnsupportedRequestType:
            continue
        cases.append((request_type.value, sample_request(request_type)))
    if name == "openai":
        text = form_request(RequestType.TRANSCRIPTION, extra_fields=[("response_format", "text")])
        cases.append(("transcription as text", text))
    if name in ("gemini", "cohere"):
        # Their floats are packed into base64 by the decode.
        base64 = json_request(RequestType.EMBEDDING, encoding_format="base64")
        cases.append(("embedding as base64", base64))
    return cases


CASES = [
    pytest.param(name, request, id=f"{name}-{label}")
    for name in PROVIDERS
    for label, request in requests_of(name)
]


class RecordingWorker(CpuWorker):
    """The real worker process, remembering what it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.given: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    async def run(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        self.given.append((function, args))
        return await super().run(function, *args, **kwargs)

    def answers(self) -> list[tuple[Any, ...]]:
        """(decode, answer, now) of each answer handed to the worker."""
        return [args for function, args in self.given if function is prepared_for_storage]


@pytest.fixture(scope="module")
def worker() -> Iterator[RecordingWorker]:
    # One spawned process for the module: starting one takes most of a second.
    started = RecordingWorker()
    yield started
    started.close()


def stored(prepared: results.PreparedResult) -> bytes:
    return results.stored_body(
        prepared, request_type="t", provider="p", model_requested="m", latency_ms=7
    )


async def call_with(
    server: RealSocketServer,
    wire_at: Callable[[str], WireFormat],
    request: ProviderRequest,
    worker: CpuWorker,
    offload: Callable[[bytes], bool],
) -> ProviderResult:
    async with server as fake:
        url = f"http://127.0.0.1:{fake.port}"
        provider = HttpProvider(
            "p", wire_at(url), keys=[ApiKey(KEY)], worker=worker, offload=offload, clock=lambda: NOW
        )
        try:
            return await provider.call(request)
        finally:
            await provider.close()


@pytest.mark.parametrize(("name", "request_"), CASES)
async def test_an_answer_decoded_in_the_worker_stores_the_bytes_of_one_decoded_inline(
    worker: RecordingWorker, name: str, request_: ProviderRequest
) -> None:
    server, wire_at = PROVIDERS[name]
    worker.given.clear()
    # Every request is built inline; every answer goes to the worker.
    result = await call_with(
        server(), wire_at, request_, worker, lambda body: body != request_.body
    )
    [(decode, answer, now)] = worker.answers()
    assert result.prepared is not None
    assert result.body == {}
    inline = ProviderResult(body=decode(answer, now))
    assert stored(result.for_storage()) == stored(inline.for_storage())
    assert result.for_storage().usage == inline.for_storage().usage


def test_the_providers_own_extra_fields_keep_their_place() -> None:
    answer = Answer(
        200, {}, "application/json", b'{"id":"x","extra_fields":{"cache":"hit"},"data":[0.5]}'
    )
    decode = OpenAIWire("http://unused").build(json_request(RequestType.EMBEDDING)).decode
    prepared = prepared_for_storage(decode, answer, NOW)
    assert stored(prepared) == (
        b'{"id":"x","extra_fields":{"cache":"hit","request_type":"t","provider":"p",'
        b'"model_requested":"m","latency":7},"data":[0.5]}'
    )


@pytest.fixture
async def embeddings_fake() -> AsyncIterator[FakeOpenAIServer]:
    async with FakeOpenAIServer(api_keys={KEY}) as fake:
        yield fake


async def test_a_large_embeddings_answer_is_decoded_and_encoded_in_the_worker_process(
    worker: RecordingWorker, embeddings_fake: FakeOpenAIServer
) -> None:
    worker.given.clear()
    # 128 inputs of 3,072 values: a 2 MiB answer, past the inline bound.
    request = json_request(RequestType.EMBEDDING, input=["x"] * 128, dimensions=3072)
    provider = HttpProvider(
        "openai",
        OpenAIWire(embeddings_fake.base_url, frozenset(RequestType)),
        keys=[ApiKey(KEY)],
        worker=worker,
    )
    try:
        result = await provider.call(request)
    finally:
        await provider.close()
    [(_, answer, _)] = worker.answers()
    assert len(answer.body) > INLINE_MAX_BYTES
    # The loop holds the stored bytes and the usage, never the answer's objects.
    assert result.body == {}
    assert result.prepared is not None
    assert result.prepared.usage == {"promptTokens": 3, "completionTokens": 0, "totalTokens": 3}
    body = stored(result.for_storage())
    assert body.startswith(b'{"object":"list","data":[{"object":"embedding","index":0,')
    assert len(body) > INLINE_MAX_BYTES


class TruncatedAnswers(RealSocketServer):
    """Answers every request with 200 and the first MiB and more of a JSON document."""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/embeddings", self._answer)
        await self.serve(app)

    async def _answer(self, _: web.Request) -> web.Response:
        body = b'{"data":[' + b"0.5," * (INLINE_MAX_BYTES // 4)
        return web.Response(body=body, content_type="application/json")


async def test_an_unreadable_large_answer_fails_retryably_without_quoting_it(
    worker: RecordingWorker,
) -> None:
    worker.given.clear()
    async with TruncatedAnswers() as server:
        wire = OpenAIWire(f"http://127.0.0.1:{server.port}/v1", frozenset(RequestType))
        provider = HttpProvider("openai", wire, keys=[ApiKey(KEY)], worker=worker)
        try:
            with pytest.raises(ProviderError) as caught:
                await provider.call(json_request(RequestType.EMBEDDING))
        finally:
            await provider.close()
    assert len(worker.answers()) == 1
    assert (caught.value.retryable, caught.value.error_type) == (True, "invalid_response")
    assert "0.5" not in caught.value.message
