"""The stored result: the provider's body plus Bifrost's extra_fields; usage for the status."""

from __future__ import annotations

import json
from typing import Any

import pytest

from asyncjobs.core import results


def test_result_body_adds_extra_fields_and_keeps_the_provider_body() -> None:
    body = {"id": "c1", "choices": [{"message": {"content": "hi"}}], "extra_fields": {"x": 1}}
    stored = json.loads(
        results.result_body(
            body,
            request_type="chat_completion",
            provider="openai",
            model_requested="gpt-4o-mini",
            latency_ms=12,
        )
    )
    assert stored["choices"] == body["choices"]
    assert stored["extra_fields"] == {
        "x": 1,
        "request_type": "chat_completion",
        "provider": "openai",
        "model_requested": "gpt-4o-mini",
        "latency": 12,
    }


def test_usage_in_chat_and_responses_shapes() -> None:
    chat = {"usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}
    responses = {"usage": {"input_tokens": 5, "output_tokens": 6}}
    assert results.usage_of(chat) == {"promptTokens": 3, "completionTokens": 4, "totalTokens": 7}
    assert results.usage_of(responses) == {
        "promptTokens": 5,
        "completionTokens": 6,
        "totalTokens": 11,
    }
    assert results.usage_of({"data": []}) is None
    assert results.usage_of({"usage": {"prompt_tokens": True}}) is None


def test_what_orjson_refuses_is_still_stored_as_json_that_reads_back_the_same() -> None:
    # Half a surrogate pair (a provider may escape one in JSON), an integer past 64 bits.
    awkward = {"text": "a\ud800b", "big": 2**70, "floats": [0.1, 1e-05, 1e300], "ü": "é"}
    stored = results.encoded(awkward)
    assert json.loads(stored) == awkward


def test_the_encoding_is_compact_utf8_json() -> None:
    stored = results.encoded({"a": [1, 2.5, None, True], "name": "café"})
    assert stored == '{"a":[1,2.5,null,true],"name":"café"}'.encode()


GATEWAY_FIELDS = {
    "request_type": "embedding",
    "provider": "p",
    "model_requested": "m",
    "latency": 9,
}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"data": [{"embedding": [0.1, -2.5e-07]}], "usage": {"prompt_tokens": 3}},
        {"id": "x", "extra_fields": {"cache": "hit"}, "data": [1]},
        {"extra_fields": None, "ü": "é"},
        {"text": "a\ud800b", "extra_fields": {"k": 1}, "big": 2**70},
    ],
    ids=["empty", "embeddings", "extra fields inside", "extra fields not a mapping", "awkward"],
)
def test_a_prepared_answer_stores_the_encoding_of_the_whole_result(body: dict[str, Any]) -> None:
    """The stored body, built around the extra fields, is what encoding the whole result
    at once gives: the provider's keys in their order, its own extra fields kept."""
    own = body.get("extra_fields") if isinstance(body.get("extra_fields"), dict) else {}
    whole = {**body, "extra_fields": {**own, **GATEWAY_FIELDS}}
    stored = results.stored_body(
        results.prepare(body),
        request_type="embedding",
        provider="p",
        model_requested="m",
        latency_ms=9,
    )
    assert stored == results.encoded(whole)
    assert results.prepare(body).usage == results.usage_of(body)
