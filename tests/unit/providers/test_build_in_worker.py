"""A request body with many JSON values is turned into the provider's call in the CPU
worker process, not on the operator's loop.

Building a call parses the stored body and writes the provider's (every wire format
does, if only to replace `model`); for a body of 819,200 small objects, which the API's
value bound lets through at the s3 backend's 25 MiB limit, that held the operator's loop
for seconds. So a built call must survive the trip back from the worker process: its
decode function and the build errors are picklable, and the call is the same wherever
it was built.
"""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest

from asyncjobs.core.cpu_worker import INLINE_MAX_MARKS, CpuWorker
from asyncjobs.core.providers.anthropic import AnthropicWire
from asyncjobs.core.providers.azure import AzureWire
from asyncjobs.core.providers.base import ProviderError, ProviderRequest
from asyncjobs.core.providers.cohere import CohereWire
from asyncjobs.core.providers.gemini import GeminiWire
from asyncjobs.core.providers.keys import ApiKey
from asyncjobs.core.providers.mistral import MistralWire
from asyncjobs.core.providers.openai_wire import OpenAIWire
from asyncjobs.core.providers.transport import (
    Answer,
    HttpProvider,
    InvalidModelName,
    UnsupportedRequestType,
    WireCall,
    WireFormat,
)
from asyncjobs.core.request_types import RequestType
from tests.fakes.openai_server import FakeOpenAIServer
from tests.support.executors import CountingExecutor

from .conftest import GOOD_KEY
from .samples import sample_request

WIRES: dict[str, WireFormat] = {
    "openai": OpenAIWire("https://api.example/v1", frozenset(RequestType)),
    "azure": AzureWire(base_url="https://az.example/", deployments={"gpt-test": "dep"}),
    "anthropic": AnthropicWire(base_url="https://anthropic.example/v1"),
    "gemini": GeminiWire(base_url="https://gemini.example/v1beta"),
    "mistral": MistralWire(base_url="https://mistral.example/v1"),
    "cohere": CohereWire(base_url="https://cohere.example"),
}
NOW = datetime(2026, 11, 30, tzinfo=UTC)
T = TypeVar("T")


def round_trip(value: T) -> T:
    """What the worker process's pipe does to a value: pickled, then read back (here our
    own bytes, so loading them is safe)."""
    copy: T = pickle.loads(pickle.dumps(value))  # noqa: S301
    return copy


def every_call() -> list[tuple[str, RequestType]]:
    calls = []
    for name, wire in WIRES.items():
        for request_type in RequestType:
            try:
                wire.build(sample_request(request_type))
            except UnsupportedRequestType:
                continue
            calls.append((name, request_type))
    return calls


@pytest.mark.parametrize(("name", "request_type"), every_call())
def test_every_built_call_survives_pickling(name: str, request_type: RequestType) -> None:
    call = WIRES[name].build(sample_request(request_type))
    copy = round_trip(call)
    assert (copy.url, copy.body, copy.content_type, copy.headers) == (
        call.url,
        call.body,
        call.content_type,
        call.headers,
    )


def test_the_build_errors_survive_pickling() -> None:
    refused = round_trip(InvalidModelName("model", "a/../b", "letters only"))
    assert (refused.what, refused.shown, refused.rule) == ("model", "a/../b", "letters only")
    unsupported = round_trip(UnsupportedRequestType(RequestType.OCR))
    assert unsupported.request_type is RequestType.OCR
    failed = round_trip(
        ProviderError("too big", status_code=400, retryable=False, code="local_output_limit")
    )
    assert (failed.message, failed.status_code, failed.retryable, failed.code) == (
        "too big",
        400,
        False,
        "local_output_limit",
    )


def openai_chat_answer() -> Answer:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-test",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "ok"},
                "finish_reason": "stop",
            }
        ],
    }
    return Answer(200, {}, "application/json", json.dumps(body).encode())


def test_a_decode_from_a_pickled_call_reads_the_answer() -> None:
    call: WireCall = round_trip(WIRES["openai"].build(sample_request(RequestType.CHAT_COMPLETION)))
    decoded: dict[str, Any] = call.decode(openai_chat_answer(), NOW)
    assert decoded["choices"][0]["message"]["content"] == "ok"


def heavy_chat() -> ProviderRequest:
    values = b"1," * INLINE_MAX_MARKS + b"1"
    body = (
        b'{"model":"openai/gpt-test","messages":[{"role":"user","content":"hi"}],'
        b'"metadata":{"v":[' + values + b"]}}"
    )
    return ProviderRequest(RequestType.CHAT_COMPLETION, "gpt-test", body, "application/json")


async def test_a_heavy_request_is_built_in_the_worker_and_sent_as_built_inline() -> None:
    executor = CountingExecutor()
    async with FakeOpenAIServer(api_keys={GOOD_KEY}) as fake:
        wire = OpenAIWire(fake.base_url, frozenset(RequestType))
        worker = CpuWorker(lambda: executor)
        provider = HttpProvider("openai", wire, keys=[ApiKey(GOOD_KEY)], worker=worker)
        try:
            result = await provider.call(heavy_chat())
        finally:
            await provider.close()
            worker.close()
    assert executor.submitted == 1
    assert result.body["object"] == "chat.completion"


async def test_a_heavy_request_built_in_a_real_worker_process_matches_the_inline_one() -> None:
    worker = CpuWorker()
    try:
        built = await worker.run(WIRES["anthropic"].build, heavy_chat())
    finally:
        worker.close()
    inline = WIRES["anthropic"].build(heavy_chat())
    assert (built.url, built.body, built.headers) == (inline.url, inline.body, inline.headers)
