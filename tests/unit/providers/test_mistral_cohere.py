"""Mistral (chat, embeddings, OCR) and Cohere v2 (chat, embed, rerank) against their fakes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from asyncjobs.core.providers.base import ProviderError
from asyncjobs.core.providers.cohere import CohereWire
from asyncjobs.core.providers.keys import ApiKey
from asyncjobs.core.providers.mistral import MistralWire
from asyncjobs.core.providers.transport import HttpProvider, WireFormat
from asyncjobs.core.request_types import RequestType
from tests.fakes.cohere_fake import ERRORS, CohereDialect
from tests.fakes.mistral_fake import MistralDialect
from tests.fakes.wire_server import FakeProviderServer

from .samples import sample_request
from .support import NOW, FirstKeyFirst, request

KEY = "key-good"


@pytest.fixture
async def mistral_fake() -> AsyncIterator[FakeProviderServer]:
    async with FakeProviderServer(MistralDialect(), api_keys={KEY}) as server:
        yield server


@pytest.fixture
async def cohere_fake() -> AsyncIterator[FakeProviderServer]:
    async with FakeProviderServer(CohereDialect(), api_keys={KEY}) as server:
        yield server


def provider(name: str, wire: WireFormat, *keys: str) -> HttpProvider:
    return HttpProvider(
        name,
        wire,
        keys=[ApiKey(key) for key in keys or (KEY,)],
        timeout_seconds=10,
        rng=FirstKeyFirst(),
        clock=lambda: NOW,
    )


async def call(p: HttpProvider, req: Any) -> dict[str, Any]:
    try:
        return (await p.call(req)).body
    finally:
        await p.close()


async def failure(p: HttpProvider, req: Any) -> ProviderError:
    try:
        with pytest.raises(ProviderError) as caught:
            await p.call(req)
    finally:
        await p.close()
    return caught.value


def last_sent(fake: FakeProviderServer, path: str) -> Any:
    stats = fake.stats()
    assert stats["violations"] == []
    received = stats["requests"][-1]
    assert (received["path"], received["key"]) == (path, KEY)
    return received["json"]


# -- Mistral ----------------------------------------------------------------------------


def mistral(fake: FakeProviderServer, *keys: str) -> HttpProvider:
    return provider("mistral", MistralWire(base_url=fake.url + "/v1"), *keys)


async def test_mistral_chat_uses_mistral_spellings(mistral_fake: FakeProviderServer) -> None:
    body = await call(
        mistral(mistral_fake),
        request(
            RequestType.CHAT_COMPLETION,
            "mistral-small",
            "mistral",
            messages=[{"role": "user", "content": "Salut"}],
            max_tokens=10,
            max_completion_tokens=20,
            seed=4,
            user="u",
            safe_prompt=True,
        ),
    )
    sent = last_sent(mistral_fake, "/v1/chat/completions")
    assert sent == {
        "model": "mistral-small",
        "messages": [{"role": "user", "content": "Salut"}],
        "max_tokens": 20,
        "random_seed": 4,
        "safe_prompt": True,
    }
    assert body["choices"][0]["message"]["content"] == "Bonjour!"
    assert body["usage"]["total_tokens"] == 10


async def test_mistral_embeddings_and_ocr_round_trip(mistral_fake: FakeProviderServer) -> None:
    body = await call(
        mistral(mistral_fake),
        request(RequestType.EMBEDDING, "mistral-embed", "mistral", input=["a", "b"], dimensions=2),
    )
    assert last_sent(mistral_fake, "/v1/embeddings")["output_dimension"] == 2
    assert [d["embedding"] for d in body["data"]] == [[0.5, 0.5], [1.0, 1.0]]
    ocr = await call(mistral(mistral_fake), sample_request(RequestType.OCR, model="mistral-ocr"))
    assert last_sent(mistral_fake, "/v1/ocr")["document"] == {
        "type": "document_url",
        "document_url": "https://x/doc.pdf",
    }
    assert ocr["pages"][0]["markdown"] == "# Mistral OCR page"


@pytest.mark.parametrize(
    "request_type",
    sorted(
        set(RequestType) - {RequestType.CHAT_COMPLETION, RequestType.EMBEDDING, RequestType.OCR}
    ),
)
async def test_mistral_unsupported_types_fail_cleanly(
    mistral_fake: FakeProviderServer, request_type: RequestType
) -> None:
    error = await failure(mistral(mistral_fake), sample_request(request_type))
    assert error.message == f"unsupported request type {request_type.value} for provider mistral"
    assert (error.status_code, error.retryable) == (400, False)
    assert mistral_fake.stats()["count"] == 0


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ({"status": 400, "message": "Invalid model: x", "code": "1500"},
         (400, False, "invalid_request_error", "1500", None, "Invalid model: x")),
        ({"status": 422, "param": "messages", "message": "Field required"},
         (422, False, "missing", None, "messages", "Field required")),
        ({"status": 429, "retry_after": "2"},
         (429, True, "rate_limited", None, None, "Requests rate limit exceeded")),
    ],
)  # fmt: skip
async def test_mistral_error_bodies_map(
    mistral_fake: FakeProviderServer, step: dict[str, Any], expected: tuple[Any, ...]
) -> None:
    mistral_fake.script("gpt-test", step)
    e = await failure(mistral(mistral_fake), sample_request(RequestType.CHAT_COMPLETION))
    assert (e.status_code, e.retryable, e.error_type, e.code, e.param, e.message) == expected


async def test_mistral_keys_rotate_on_401_and_429(mistral_fake: FakeProviderServer) -> None:
    mistral_fake.api_keys.add("key-second")
    mistral_fake.script("gpt-test", {"status": 429})
    await call(
        mistral(mistral_fake, "key-revoked", KEY, "key-second"),
        sample_request(RequestType.CHAT_COMPLETION),
    )
    sent = [(r["key"], r["status"]) for r in mistral_fake.stats()["requests"]]
    assert sent == [("key-revoked", 401), (KEY, 429), ("key-second", 200)]


# -- Cohere -----------------------------------------------------------------------------


def cohere(fake: FakeProviderServer, *keys: str) -> HttpProvider:
    return provider("cohere", CohereWire(base_url=fake.url), *keys)


async def test_cohere_chat_translates_parameters_and_answer(
    cohere_fake: FakeProviderServer,
) -> None:
    body = await call(
        cohere(cohere_fake),
        request(
            RequestType.CHAT_COMPLETION,
            "command-r",
            "cohere",
            messages=[
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": "Capital of France?"},
            ],
            top_p=0.8,
            stop="\n",
            max_completion_tokens=3,
            user="u",
        ),
    )
    sent = last_sent(cohere_fake, "/v2/chat")
    assert sent == {
        "model": "command-r",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Capital of France?"},
        ],
        "p": 0.8,
        "stop_sequences": ["\n"],
        "max_tokens": 3,
    }
    assert body["choices"][0] == {
        "index": 0,
        "message": {"role": "assistant", "content": "Paris is the", "refusal": None},
        "finish_reason": "length",
        "logprobs": None,
    }
    assert body["usage"] == {"prompt_tokens": 70, "completion_tokens": 6, "total_tokens": 76}
    assert body["model"] == "command-r"


async def test_cohere_tool_calls_round_trip(cohere_fake: FakeProviderServer) -> None:
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
    first = await call(
        cohere(cohere_fake),
        request(
            RequestType.CHAT_COMPLETION,
            "command-r",
            "cohere",
            messages=[{"role": "user", "content": "Weather?"}],
            tools=[tool],
            tool_choice="required",
        ),
    )
    assert last_sent(cohere_fake, "/v2/chat")["tool_choice"] == "REQUIRED"
    choice = first["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (tool_call,) = choice["message"]["tool_calls"]
    assert json.loads(tool_call["function"]["arguments"]) == {"city": "Paris"}
    await call(
        cohere(cohere_fake),
        request(
            RequestType.CHAT_COMPLETION,
            "command-r",
            "cohere",
            messages=[
                {"role": "user", "content": "Weather?"},
                choice["message"],
                {"role": "tool", "tool_call_id": tool_call["id"], "content": "sunny"},
            ],
            tools=[tool],
        ),
    )
    messages = last_sent(cohere_fake, "/v2/chat")["messages"]
    assert messages[1] == {"role": "assistant", "tool_calls": [tool_call]}
    assert messages[2] == {"role": "tool", "tool_call_id": tool_call["id"], "content": "sunny"}


async def test_cohere_embeddings_round_trip(cohere_fake: FakeProviderServer) -> None:
    body = await call(cohere(cohere_fake), sample_request(RequestType.EMBEDDING, "embed-v3"))
    sent = last_sent(cohere_fake, "/v2/embed")
    assert sent == {
        "model": "embed-v3",
        "texts": ["first text", "second text"],
        "input_type": "search_document",
        "embedding_types": ["float"],
    }
    assert [d["embedding"] for d in body["data"]] == [[0.125] * 3, [0.25] * 3]
    assert body["usage"] == {"prompt_tokens": 5, "total_tokens": 5}


async def test_cohere_rerank_round_trip(cohere_fake: FakeProviderServer) -> None:
    body = await call(
        cohere(cohere_fake),
        request(
            RequestType.RERANK,
            "rerank-v3.5",
            "cohere",
            query="capital of france",
            documents=[
                {"text": "Berlin is in Germany"},
                {"text": "Paris is the capital of France"},
            ],
            top_n=1,
            return_documents=True,
        ),
    )
    sent = last_sent(cohere_fake, "/v2/rerank")
    assert sent["documents"] == ["Berlin is in Germany", "Paris is the capital of France"]
    assert body["results"] == [
        {"index": 1, "relevance_score": 1.0, "document": {"text": "Paris is the capital of France"}}
    ]
    assert body["usage"] == {"search_units": 1}


@pytest.mark.parametrize(
    "request_type",
    sorted(
        set(RequestType) - {RequestType.CHAT_COMPLETION, RequestType.EMBEDDING, RequestType.RERANK}
    ),
)
async def test_cohere_unsupported_types_fail_cleanly(
    cohere_fake: FakeProviderServer, request_type: RequestType
) -> None:
    error = await failure(cohere(cohere_fake), sample_request(request_type))
    assert error.message == f"unsupported request type {request_type.value} for provider cohere"
    assert cohere_fake.stats()["count"] == 0


@pytest.mark.parametrize(
    ("status", "retryable"), [(400, False), (404, False), (429, True), (500, True)]
)
async def test_cohere_error_bodies_keep_the_message(
    cohere_fake: FakeProviderServer, status: int, retryable: bool
) -> None:
    cohere_fake.script("gpt-test", {"status": status})
    error = await failure(cohere(cohere_fake), sample_request(RequestType.CHAT_COMPLETION))
    assert (error.status_code, error.retryable) == (status, retryable)
    assert error.message == ERRORS[status]


async def test_cohere_keys_rotate_on_401_and_429(cohere_fake: FakeProviderServer) -> None:
    cohere_fake.api_keys.add("key-second")
    cohere_fake.script("gpt-test", {"status": 429})
    await call(
        cohere(cohere_fake, "key-revoked", KEY, "key-second"),
        sample_request(RequestType.CHAT_COMPLETION),
    )
    sent = [(r["key"], r["status"]) for r in cohere_fake.stats()["requests"]]
    assert sent == [("key-revoked", 401), (KEY, 429), ("key-second", 200)]
