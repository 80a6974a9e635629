"""Anthropic: chat and Responses through the Messages API, both ways, against a fake."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from asyncjobs.core.providers.anthropic import AnthropicWire
from asyncjobs.core.providers.base import ProviderError
from asyncjobs.core.providers.keys import ApiKey
from asyncjobs.core.providers.transport import HttpProvider
from asyncjobs.core.request_types import RequestType
from tests.fakes.anthropic_fake import AnthropicDialect
from tests.fakes.wire_server import FakeProviderServer

from .samples import sample_request
from .support import NOW, FirstKeyFirst, request

KEY = "sk-ant-good"
MODEL = "claude-test"
PIXEL = "iVBORw0KGgo="
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture
async def fake() -> AsyncIterator[FakeProviderServer]:
    async with FakeProviderServer(AnthropicDialect(), api_keys={KEY}) as server:
        yield server


def claude_for(fake: FakeProviderServer, *keys: str) -> HttpProvider:
    return HttpProvider(
        "anthropic",
        AnthropicWire(base_url=fake.url + "/v1"),
        keys=[ApiKey(key) for key in keys],
        timeout_seconds=10,
        rng=FirstKeyFirst(),
        clock=lambda: NOW,
    )


@pytest.fixture
async def claude(fake: FakeProviderServer) -> AsyncIterator[HttpProvider]:
    provider = claude_for(fake, KEY)
    yield provider
    await provider.close()


def chat(**body: Any) -> Any:
    return request(RequestType.CHAT_COMPLETION, MODEL, "anthropic", **body)


def sent(fake: FakeProviderServer) -> dict[str, Any]:
    stats = fake.stats()
    assert stats["violations"] == []
    (received,) = stats["requests"][-1:]
    assert received["headers"]["anthropic-version"] == "2023-06-01"
    assert received["key"] == KEY
    return dict(received["json"])


async def test_chat_round_trips_system_prompt_parameters_and_usage(
    fake: FakeProviderServer, claude: HttpProvider
) -> None:
    result = await claude.call(
        chat(
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": "Answer in English."},
                {"role": "user", "content": "What is the capital of France?"},
            ],
            max_tokens=100,
            temperature=0.3,
            stop=["\n\n"],
            user="u-1",
            top_k=5,
            fallbacks=["openai/gpt-4o"],
        )
    )
    body = sent(fake)
    assert body == {
        "model": MODEL,
        "max_tokens": 100,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is the capital of France?"}]}],
        "system": "Be brief.\n\nAnswer in English.",
        "temperature": 0.3,
        "metadata": {"user_id": "u-1"},
        "stop_sequences": ["\n\n"],
        "top_k": 5,
    }  # fmt: skip
    assert result.body == {
        "id": "msg_01FakeMessage",
        "object": "chat.completion",
        "created": int(NOW.timestamp()),
        "model": MODEL,
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
            "prompt_tokens": 25,
            "completion_tokens": 9,
            "total_tokens": 34,
            "prompt_tokens_details": {"cached_tokens": 4},
        },
    }


async def test_chat_without_a_limit_gets_the_default_max_tokens(
    fake: FakeProviderServer, claude: HttpProvider
) -> None:
    await claude.call(sample_request(RequestType.CHAT_COMPLETION, model=MODEL))
    assert sent(fake)["max_tokens"] == 4096


async def test_max_tokens_stop_reason_becomes_length(
    fake: FakeProviderServer, claude: HttpProvider
) -> None:
    result = await claude.call(
        chat(messages=[{"role": "user", "content": "hi"}], max_completion_tokens=2)
    )
    assert sent(fake)["max_tokens"] == 2
    choice = result.body["choices"][0]
    assert (choice["finish_reason"], choice["message"]["content"]) == ("length", "Paris is")


async def test_images_become_base64_and_url_sources(
    fake: FakeProviderServer, claude: HttpProvider
) -> None:
    content = [
        {"type": "text", "text": "Compare these."},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]
    await claude.call(chat(messages=[{"role": "user", "content": content}]))
    blocks = sent(fake)["messages"][0]["content"]
    assert blocks[1:] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


async def test_tools_are_offered_and_a_tool_call_comes_back_in_openai_shape(
    fake: FakeProviderServer, claude: HttpProvider
) -> None:
    result = await claude.call(
        chat(
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=[WEATHER_TOOL],
            tool_choice="required",
            parallel_tool_calls=False,
        )
    )
    body = sent(fake)
    assert body["tools"] == [
        {
            "name": "get_weather",
            "input_schema": WEATHER_TOOL["function"]["parameters"],  # type: ignore[index]
            "description": "Weather in a city",
        }
    ]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    choice = result.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check."
    (call,) = choice["message"]["tool_calls"]
    assert call["id"] == "toolu_01Fake"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}


async def test_tool_calls_and_results_in_history_become_blocks(
    fake: FakeProviderServer, claude: HttpProvider
) -> None:
    history = [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
                {"id": "call_2", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "rain"}]},
    ]  # fmt: skip
    result = await claude.call(chat(messages=history, tools=[WEATHER_TOOL]))
    messages = sent(fake)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}},
    ]
    assert messages[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
        {"type": "tool_result", "tool_use_id": "call_2", "content": "rain"},
    ]
    assert result.body["choices"][0]["message"]["content"] == "The weather is sunny."


async def test_responses_round_trip_through_messages(
    fake: FakeProviderServer, claude: HttpProvider
) -> None:
    items = [
        {"role": "user", "content": [
            {"type": "input_text", "text": "Weather?"},
            {"type": "input_image", "image_url": f"data:image/jpeg;base64,{PIXEL}"}]},
        {"type": "function_call", "call_id": "call_9", "name": "get_weather",
         "arguments": '{"city": "Oslo"}'},
        {"type": "function_call_output", "call_id": "call_9", "output": "snow"},
    ]  # fmt: skip
    result = await claude.call(
        request(
            RequestType.RESPONSES,
            MODEL,
            "anthropic",
            input=items,
            instructions="Be brief.",
            max_output_tokens=3,
            tools=[{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
        )
    )
    body = sent(fake)
    assert body["system"] == "Be brief."
    assert body["max_tokens"] == 3
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][0]["content"][1]["source"]["media_type"] == "image/jpeg"
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_9", "content": "snow"}
    ]
    assert body["tools"] == [{"name": "get_weather", "input_schema": {"type": "object"}}]
    answer = result.body
    assert (answer["object"], answer["status"]) == ("response", "incomplete")
    assert answer["incomplete_details"] == {"reason": "max_output_tokens"}
    assert answer["output"][0]["content"][0] == {
        "type": "output_text",
        "text": "The weather is",
        "annotations": [],
    }
    assert answer["usage"]["input_tokens"] == 25
    assert answer["usage"]["total_tokens"] == 34


async def test_responses_tool_call_becomes_a_function_call_item(
    fake: FakeProviderServer, claude: HttpProvider
) -> None:
    result = await claude.call(
        request(
            RequestType.RESPONSES,
            MODEL,
            "anthropic",
            input="Weather in Paris?",
            tools=[{"type": "function", "name": "get_weather"}],
        )
    )
    assert sent(fake)["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]}
    ]
    kinds = [item["type"] for item in result.body["output"]]
    assert kinds == ["message", "function_call"]
    call = result.body["output"][1]
    assert (call["call_id"], call["name"]) == ("toolu_01Fake", "get_weather")
    assert json.loads(call["arguments"]) == {"city": "Paris"}
    assert result.body["status"] == "completed"


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ({"n": 2}, "n=2 is not supported by anthropic"),
        ({"logprobs": True}, "logprobs=true is not supported by anthropic"),
        ({"response_format": {"type": "json_object"}}, "response_format json_object"),
        ({"messages": [{"role": "function", "content": "x"}]}, "role 'function'"),
    ],
)
async def test_what_anthropic_cannot_honour_fails_as_400_without_a_call(
    fake: FakeProviderServer, claude: HttpProvider, body: dict[str, Any], complaint: str
) -> None:
    full = {"messages": [{"role": "user", "content": "hi"}], **body}
    with pytest.raises(ProviderError) as caught:
        await claude.call(chat(**full))
    assert complaint in caught.value.message
    assert (caught.value.status_code, caught.value.retryable) == (400, False)
    assert fake.stats()["count"] == 0


@pytest.mark.parametrize(
    "request_type",
    sorted(set(RequestType) - {RequestType.CHAT_COMPLETION, RequestType.RESPONSES}),
)
async def test_unsupported_request_types_fail_cleanly(
    fake: FakeProviderServer, claude: HttpProvider, request_type: RequestType
) -> None:
    with pytest.raises(ProviderError) as caught:
        await claude.call(sample_request(request_type, model=MODEL))
    assert caught.value.message == (
        f"unsupported request type {request_type.value} for provider anthropic"
    )
    assert (caught.value.status_code, caught.value.retryable) == (400, False)
    assert fake.stats()["count"] == 0


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ({"status": 400, "message": "messages: roles must alternate"},
         (400, False, "invalid_request_error", "messages: roles must alternate", None)),
        ({"status": 429, "retry_after": "20"},
         (429, True, "rate_limit_error",
          "Number of request tokens has exceeded your per-minute rate limit", 20.0)),
        ({"status": 529}, (529, True, "overloaded_error", "Overloaded", None)),
        ({"status": 413}, (413, False, "request_too_large",
                           "Request exceeds the maximum allowed number of bytes.", None)),
    ],
)  # fmt: skip
async def test_anthropic_error_bodies_map_to_provider_errors(
    fake: FakeProviderServer, step: dict[str, Any], expected: tuple[Any, ...]
) -> None:
    fake.script(MODEL, step)
    provider = claude_for(fake, KEY)
    try:
        with pytest.raises(ProviderError) as caught:
            await provider.call(sample_request(RequestType.CHAT_COMPLETION, model=MODEL))
    finally:
        await provider.close()
    error = caught.value
    actual = (error.status_code, error.retryable, error.error_type, error.message)
    assert (*actual, error.retry_after) == expected


async def test_rejected_then_throttled_keys_rotate(fake: FakeProviderServer) -> None:
    fake.api_keys.add("sk-ant-second")
    fake.script(MODEL, {"status": 429})
    provider = claude_for(fake, "sk-ant-revoked", KEY, "sk-ant-second")
    try:
        await provider.call(sample_request(RequestType.CHAT_COMPLETION, model=MODEL))
    finally:
        await provider.close()
    keys = [(r["key"], r["status"]) for r in fake.stats()["requests"]]
    assert keys == [("sk-ant-revoked", 401), (KEY, 429), ("sk-ant-second", 200)]
    first = fake.stats()["requests"][0]
    assert "authorization" not in first["headers"]


def test_the_fake_refuses_an_openai_shaped_body() -> None:
    # The fake must catch the mistakes the adapter exists to avoid, or it proves nothing.
    from tests.fakes.anthropic_fake import check_messages_body

    problems = check_messages_body(
        {
            "model": "anthropic/claude",
            "max_completion_tokens": 5,
            "messages": [
                {"role": "system", "content": "x"},
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f",
                                                   "input": "{}"}]},
            ],
        }
    )  # fmt: skip
    assert problems == [
        "max_tokens is required",
        "max_completion_tokens is not a Messages API field",
        "model 'anthropic/claude' still carries a gateway prefix",
        "max_tokens must be a positive integer",
        "message role must be user or assistant, got 'system'",
        "unknown content block {'type': 'image_url', 'image_url': {'url': 'u'}}",
        "tool_use.input must be an object",
    ]
