"""Gemini: chat through generateContent, embeddings through (batch)embedContent, errors."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest

from asyncjobs.core.providers.base import ProviderError
from asyncjobs.core.providers.gemini import GeminiWire
from asyncjobs.core.providers.keys import ApiKey
from asyncjobs.core.providers.transport import HttpProvider
from asyncjobs.core.request_types import RequestType
from tests.fakes.gemini_fake import GeminiDialect, check_generate
from tests.fakes.wire_server import FakeProviderServer

from .samples import sample_request
from .support import NOW, FirstKeyFirst, request

KEY = "AIza-good"
MODEL = "gemini-test"
WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object"}},
}


@pytest.fixture
async def fake() -> AsyncIterator[FakeProviderServer]:
    async with FakeProviderServer(GeminiDialect(), api_keys={KEY}) as server:
        yield server


def gemini_for(fake: FakeProviderServer, *keys: str) -> HttpProvider:
    return HttpProvider(
        "gemini",
        GeminiWire(base_url=fake.url + "/v1beta"),
        keys=[ApiKey(key) for key in keys],
        timeout_seconds=10,
        rng=FirstKeyFirst(),
        clock=lambda: NOW,
    )


@pytest.fixture
async def gemini(fake: FakeProviderServer) -> AsyncIterator[HttpProvider]:
    provider = gemini_for(fake, KEY)
    yield provider
    await provider.close()


def sent(fake: FakeProviderServer, path: str) -> Any:
    stats = fake.stats()
    assert stats["violations"] == []
    received = stats["requests"][-1]
    assert (received["path"], received["key"], received["query"]) == (path, KEY, {})
    return received["json"]


GENERATE = f"/v1beta/models/{MODEL}:generateContent"


async def test_chat_round_trips_system_parameters_and_usage(
    fake: FakeProviderServer, gemini: HttpProvider
) -> None:
    result = await gemini.call(
        request(
            RequestType.CHAT_COMPLETION,
            MODEL,
            "gemini",
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Capital of France?"},
                {"role": "assistant", "content": "Paris."},
                {"role": "user", "content": "And its weather?"},
            ],
            temperature=0.5,
            top_p=0.9,
            max_tokens=64,
            stop="END",
            seed=7,
            response_format={"type": "json_object"},
            safetySettings=[{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
        )
    )
    body = sent(fake, GENERATE)
    assert body == {
        "contents": [
            {"role": "user", "parts": [{"text": "Capital of France?"}]},
            {"role": "model", "parts": [{"text": "Paris."}]},
            {"role": "user", "parts": [{"text": "And its weather?"}]},
        ],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {
            "temperature": 0.5,
            "topP": 0.9,
            "seed": 7,
            "maxOutputTokens": 64,
            "stopSequences": ["END"],
            "responseMimeType": "application/json",
        },
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
    }
    assert result.body == {
        "id": "fakeResponseId",
        "object": "chat.completion",
        "created": int(NOW.timestamp()),
        "model": "gemini-test-001",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Paris is the capital of France.",
                    "refusal": None,
                },
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": 11,
            "completion_tokens": 7,
            "total_tokens": 18,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    }


async def test_images_become_inline_data_and_file_data(
    fake: FakeProviderServer, gemini: HttpProvider
) -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/webp;base64,UklGRg=="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
    ]
    await gemini.call(
        request(
            RequestType.CHAT_COMPLETION,
            MODEL,
            "gemini",
            messages=[{"role": "user", "content": content}],
        )
    )
    parts = sent(fake, GENERATE)["contents"][0]["parts"]
    assert parts[1:] == [
        {"inlineData": {"mimeType": "image/webp", "data": "UklGRg=="}},
        {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/a.png"}},
    ]


async def test_tool_call_and_tool_result_round_trip(
    fake: FakeProviderServer, gemini: HttpProvider
) -> None:
    first = await gemini.call(
        request(
            RequestType.CHAT_COMPLETION,
            MODEL,
            "gemini",
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=[WEATHER_TOOL],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
        )
    )
    body = sent(fake, GENERATE)
    assert body["tools"] == [
        {"functionDeclarations": [{"name": "get_weather", "parameters": {"type": "object"}}]}
    ]
    assert body["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
    }
    choice = first.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}

    second = await gemini.call(
        request(
            RequestType.CHAT_COMPLETION,
            MODEL,
            "gemini",
            messages=[
                {"role": "user", "content": "Weather in Paris?"},
                choice["message"],
                {"role": "tool", "tool_call_id": call["id"], "content": '{"sky": "clear"}'},
            ],
            tools=[WEATHER_TOOL],
        )
    )
    contents = sent(fake, GENERATE)["contents"]
    assert contents[1] == {
        "role": "model",
        "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}],
    }
    assert contents[2] == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "get_weather", "response": {"sky": "clear"}}}],
    }
    assert second.body["choices"][0]["message"]["content"] == "It is sunny."


async def test_max_tokens_and_several_candidates(
    fake: FakeProviderServer, gemini: HttpProvider
) -> None:
    result = await gemini.call(
        request(
            RequestType.CHAT_COMPLETION,
            MODEL,
            "gemini",
            messages=[{"role": "user", "content": "hi"}],
            max_completion_tokens=2,
            n=2,
        )
    )
    assert sent(fake, GENERATE)["generationConfig"] == {"candidateCount": 2, "maxOutputTokens": 2}
    reasons = [(c["index"], c["finish_reason"]) for c in result.body["choices"]]
    assert reasons == [(0, "length"), (1, "length")]


async def test_one_embedding_input_uses_embed_content(
    fake: FakeProviderServer, gemini: HttpProvider
) -> None:
    result = await gemini.call(
        request(RequestType.EMBEDDING, "emb-test", "gemini", input="hello", dimensions=4)
    )
    assert sent(fake, "/v1beta/models/emb-test:embedContent") == {
        "model": "models/emb-test",
        "content": {"parts": [{"text": "hello"}]},
        "outputDimensionality": 4,
    }
    assert result.body == {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.25] * 4}],
        "model": "emb-test",
        "usage": {"prompt_tokens": 0, "total_tokens": 0},
    }


async def test_several_embedding_inputs_use_batch_embed_contents(
    fake: FakeProviderServer, gemini: HttpProvider
) -> None:
    result = await gemini.call(sample_request(RequestType.EMBEDDING, model="emb-test"))
    body = sent(fake, "/v1beta/models/emb-test:batchEmbedContents")
    assert [r["content"]["parts"][0]["text"] for r in body["requests"]] == [
        "first text",
        "second text",
    ]
    assert [(d["index"], d["embedding"]) for d in result.body["data"]] == [
        (0, [0.25] * 3),
        (1, [0.5] * 3),
    ]


async def test_base64_embeddings_are_little_endian_float32(gemini: HttpProvider) -> None:
    result = await gemini.call(
        request(RequestType.EMBEDDING, "emb", "gemini", input="x", encoding_format="base64")
    )
    raw = base64.b64decode(result.body["data"][0]["embedding"])
    assert struct.unpack("<3f", raw) == (0.25, 0.25, 0.25)


@pytest.mark.parametrize(
    "request_type",
    sorted(set(RequestType) - {RequestType.CHAT_COMPLETION, RequestType.EMBEDDING}),
)
async def test_unsupported_request_types_fail_cleanly(
    fake: FakeProviderServer, gemini: HttpProvider, request_type: RequestType
) -> None:
    with pytest.raises(ProviderError) as caught:
        await gemini.call(sample_request(request_type, model=MODEL))
    assert caught.value.message == (
        f"unsupported request type {request_type.value} for provider gemini"
    )
    assert (caught.value.status_code, caught.value.retryable) == (400, False)
    assert fake.stats()["count"] == 0


async def test_token_array_embeddings_fail_as_400(
    fake: FakeProviderServer, gemini: HttpProvider
) -> None:
    with pytest.raises(ProviderError) as caught:
        await gemini.call(request(RequestType.EMBEDDING, "emb", "gemini", input=[[1, 2, 3]]))
    assert "strings only" in caught.value.message
    assert fake.stats()["count"] == 0


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ({"status": 400, "param": "contents[0].parts", "message": "Invalid part."},
         (400, False, "INVALID_ARGUMENT", None, "contents[0].parts", "Invalid part.", None)),
        ({"status": 429},
         (429, True, "RESOURCE_EXHAUSTED", None, None, "You exceeded your current quota.", 37.0)),
        ({"status": 429, "retry_after": "3"},
         (429, True, "RESOURCE_EXHAUSTED", None, None, "You exceeded your current quota.", 3.0)),
        ({"status": 403, "code": "SERVICE_DISABLED"},
         (403, False, "PERMISSION_DENIED", "SERVICE_DISABLED", None,
          "The caller does not have permission.", None)),
        ({"status": 503},
         (503, True, "UNAVAILABLE", None, None,
          "The model is overloaded. Please try again later.", None)),
    ],
)  # fmt: skip
async def test_google_error_bodies_map_to_provider_errors(
    fake: FakeProviderServer, step: dict[str, Any], expected: tuple[Any, ...]
) -> None:
    fake.script(MODEL, step)
    provider = gemini_for(fake, KEY)
    try:
        with pytest.raises(ProviderError) as caught:
            await provider.call(sample_request(RequestType.CHAT_COMPLETION, model=MODEL))
    finally:
        await provider.close()
    e = caught.value
    assert (
        e.status_code, e.retryable, e.error_type, e.code, e.param, e.message, e.retry_after
    ) == expected  # fmt: skip


async def test_invalid_key_400_and_throttled_key_rotate(fake: FakeProviderServer) -> None:
    fake.api_keys.add("AIza-second")
    fake.script(MODEL, {"status": 429})
    provider = gemini_for(fake, "AIza-revoked", KEY, "AIza-second")
    try:
        await provider.call(sample_request(RequestType.CHAT_COMPLETION, model=MODEL))
    finally:
        await provider.close()
    sent_keys = [(r["key"], r["status"]) for r in fake.stats()["requests"]]
    assert sent_keys == [("AIza-revoked", 400), (KEY, 429), ("AIza-second", 200)]


async def test_when_every_key_is_invalid_the_google_reason_is_kept(
    fake: FakeProviderServer,
) -> None:
    provider = gemini_for(fake, "AIza-old")
    try:
        with pytest.raises(ProviderError) as caught:
            await provider.call(sample_request(RequestType.CHAT_COMPLETION, model=MODEL))
    finally:
        await provider.close()
    assert (caught.value.status_code, caught.value.code) == (400, "API_KEY_INVALID")
    assert caught.value.retryable is False


def test_the_fake_refuses_an_openai_shaped_body() -> None:
    problems = check_generate(
        {"model": "m", "contents": [{"role": "assistant", "parts": [{"text": "a", "x": 1}]}],
         "generationConfig": {"max_tokens": 3}}
    )  # fmt: skip
    assert problems == [
        "model is not a generateContent field",
        "role must be user or model, got 'assistant'",
        "unknown generationConfig fields ['max_tokens']",
    ]


async def test_a_hanging_provider_times_out_with_a_clear_message(fake: FakeProviderServer) -> None:
    fake.script(MODEL, {"hang": True})
    provider = HttpProvider("gemini", GeminiWire(fake.url + "/v1beta"), keys=[ApiKey(KEY)],
                            timeout_seconds=0.3)  # fmt: skip
    try:
        with pytest.raises(ProviderError) as caught:
            await provider.call(sample_request(RequestType.CHAT_COMPLETION, model=MODEL))
    finally:
        await provider.close()
    assert (caught.value.status_code, caught.value.retryable) == (None, True)
    assert caught.value.message == "provider did not answer within 0.3 seconds"


async def test_a_provider_without_keys_fails_before_calling(fake: FakeProviderServer) -> None:
    provider = HttpProvider("gemini", GeminiWire(fake.url + "/v1beta"))
    try:
        with pytest.raises(ProviderError) as caught:
            await provider.call(sample_request(RequestType.CHAT_COMPLETION, model=MODEL))
    finally:
        await provider.close()
    assert caught.value.message == "provider gemini has no API key configured"
    assert fake.stats()["count"] == 0
