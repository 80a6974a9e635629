"""One Anthropic ⇄ chat translation, both directions: what a round trip keeps.

The operator translates chat to Messages and the answer back; the API's
/anthropic/v1/messages route translates Messages to chat and the answer back. These
tables run each direction into the other, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

import pytest

from asyncjobs.core.providers.anthropic_messages import (
    FINISH_REASONS,
    STOP_REASONS,
    answer_as_message,
    chat_answer,
    chat_request,
    finish_reason,
    request_as_chat,
    stop_reason,
)
from asyncjobs.core.providers.transport import BadRequestBody

MODEL = "claude-test"
CREATED = 1_772_366_400
PNG = "data:image/png;base64,iVBORw0KGgo="
CAT = "https://example.com/cat.jpg"


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


BASE64_BLOCK = {
    "type": "image",
    "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
}
URL_BLOCK = {"type": "image", "source": {"type": "url", "url": CAT}}


# -- stop reasons ---------------------------------------------------------------------


@pytest.mark.parametrize("finish", sorted(set(FINISH_REASONS.values())))
def test_every_finish_reason_survives_the_way_to_a_stop_reason_and_back(finish: str) -> None:
    assert finish_reason(stop_reason(finish)) == finish


@pytest.mark.parametrize(
    ("stop", "back"),
    [
        ("end_turn", "end_turn"),
        ("stop_sequence", "end_turn"),
        ("pause_turn", "end_turn"),
        ("max_tokens", "max_tokens"),
        ("model_context_window_exceeded", "max_tokens"),
        ("tool_use", "tool_use"),
        ("refusal", "refusal"),
    ],
)
def test_a_stop_reason_comes_back_as_the_first_of_its_finish_reason(stop: str, back: str) -> None:
    assert stop_reason(finish_reason(stop)) == back


def test_the_stop_reasons_are_the_finish_reasons_inverted() -> None:
    assert STOP_REASONS == {
        "stop": "end_turn",
        "length": "max_tokens",
        "tool_calls": "tool_use",
        "content_filter": "refusal",
    }


@pytest.mark.parametrize("unknown", [None, "", "function_call", "something_new"])
def test_unknown_reasons_read_as_a_normal_end(unknown: str | None) -> None:
    assert (finish_reason(unknown), stop_reason(unknown)) == ("stop", "end_turn")


# -- requests -------------------------------------------------------------------------

# One user turn of text blocks reads the same in both APIs.
MINIMAL = {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": [text("hi")]}]}
MESSAGES_REQUESTS = {
    "minimal": MINIMAL,
    "parameters": {
        "model": MODEL,
        "max_tokens": 64,
        "system": "be brief",
        "temperature": 0.3,
        "top_p": 0.9,
        "stop_sequences": ["END", "\n\n"],
        "metadata": {"user_id": "u-1"},
        "messages": [{"role": "user", "content": [text("hi")]}],
    },
    "images-and-turns": {
        "model": MODEL,
        "max_tokens": 100,
        "messages": [
            {"role": "user", "content": [text("compare"), BASE64_BLOCK, URL_BLOCK]},
            {"role": "assistant", "content": [text("the first is smaller")]},
            {"role": "user", "content": [text("why?")]},
        ],
    },
}


@pytest.mark.parametrize("body", MESSAGES_REQUESTS.values(), ids=MESSAGES_REQUESTS.keys())
def test_a_messages_request_survives_the_way_to_chat_and_back(body: dict[str, Any]) -> None:
    assert chat_request(request_as_chat(body), MODEL) == body


CHAT_REQUESTS = {
    "minimal": MINIMAL,
    "parameters": {
        "model": MODEL,
        "max_tokens": 64,
        "temperature": 0.3,
        "top_p": 0.9,
        "stop": ["END"],
        "user": "u-1",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [text("hi")]},
        ],
    },
    "images-and-turns": {
        "model": MODEL,
        "max_tokens": 100,
        "messages": [
            {"role": "user", "content": [text("compare"), image(PNG), image(CAT)]},
            {"role": "assistant", "content": [text("the first is smaller")]},
            {"role": "user", "content": [text("why?")]},
        ],
    },
}


@pytest.mark.parametrize("body", CHAT_REQUESTS.values(), ids=CHAT_REQUESTS.keys())
def test_a_chat_request_survives_the_way_to_messages_and_back(body: dict[str, Any]) -> None:
    assert request_as_chat(chat_request(body, MODEL)) == body


@pytest.mark.parametrize(
    ("sent", "back"),
    [
        pytest.param(
            {"messages": [{"role": "user", "content": "hi"}]},
            {"max_tokens": 4096, "messages": [{"role": "user", "content": [text("hi")]}]},
            id="string-content-and-default-limit",
        ),
        pytest.param(
            {
                "max_completion_tokens": 7,
                "stop": "END",
                "messages": [
                    {"role": "system", "content": "one"},
                    {"role": "developer", "content": "two"},
                    {"role": "user", "content": [text("hi")]},
                ],
            },
            {
                "max_tokens": 7,
                "stop": ["END"],
                "messages": [
                    {"role": "system", "content": "one\n\ntwo"},
                    {"role": "user", "content": [text("hi")]},
                ],
            },
            id="chat-only-spellings",
        ),
    ],
)
def test_a_chat_request_comes_back_in_the_spelling_messages_has(
    sent: dict[str, Any], back: dict[str, Any]
) -> None:
    assert request_as_chat(chat_request(sent, MODEL)) == {"model": MODEL, **back}


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ({"messages": {"role": "user"}}, "messages must be a list"),
        ({"messages": [{"role": "system", "content": "x"}]}, "needs role user or assistant"),
        ({"messages": [{"role": "user", "content": 3}]}, "a string or a list of blocks"),
        ({"messages": [{"role": "user", "content": ["x"]}]}, "blocks must be objects"),
        ({"messages": [{"role": "user", "content": [{"type": "image"}]}]}, "base64 or url"),
        ({"system": [{"type": "image"}], "messages": []}, "system accepts only text blocks"),
        ({"system": 3, "messages": []}, "system must be a string or a list of content blocks"),
    ],
)
def test_a_messages_request_without_a_chat_equivalent_is_refused(
    body: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(BadRequestBody) as caught:
        request_as_chat(body)
    assert str(caught.value).startswith("invalid request format: ")
    assert complaint in str(caught.value)


# -- answers --------------------------------------------------------------------------


def message_answer(stop: str) -> dict[str, Any]:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [text("a cat")],
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": 11, "output_tokens": 2},
    }


@pytest.mark.parametrize("stop", ["end_turn", "max_tokens", "refusal"])
def test_a_messages_answer_survives_the_way_to_chat_and_back(stop: str) -> None:
    answer = message_answer(stop)
    assert answer_as_message(chat_answer(answer, CREATED), "msg_01") == answer


def chat_completion(finish: str) -> dict[str, Any]:
    return {
        "id": "msg_01",
        "object": "chat.completion",
        "created": CREATED,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "a cat", "refusal": None},
                "finish_reason": finish,
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": 11,
            "completion_tokens": 2,
            "total_tokens": 13,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    }


@pytest.mark.parametrize("finish", ["stop", "length", "content_filter"])
def test_a_chat_answer_survives_the_way_to_messages_and_back(finish: str) -> None:
    answer = chat_completion(finish)
    assert chat_answer(answer_as_message(answer, "msg_01"), CREATED) == answer


def test_an_answer_without_text_comes_back_as_a_message_without_blocks() -> None:
    answer = chat_completion("stop")
    answer["choices"][0]["message"]["content"] = None
    assert answer_as_message(answer, "msg_01")["content"] == []
