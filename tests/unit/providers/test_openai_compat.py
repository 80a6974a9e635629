"""Every request type round-trips through the OpenAI-compatible provider and a fake server."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest

from asyncjobs.core.providers.keys import ApiKey
from asyncjobs.core.providers.openai_compat import OpenAICompatProvider
from asyncjobs.core.request_types import RequestType
from tests.fakes.openai_answers import PNG_B64
from tests.fakes.openai_server import FakeOpenAIServer

from .conftest import GOOD_KEY
from .samples import SAMPLE_FILE, form_request, json_request, sample_request

# request type, the OpenAI path it must reach, where to look in the result, what is there
ROUND_TRIPS: list[tuple[RequestType, str, tuple[str | int, ...], Any]] = [
    (RequestType.TEXT_COMPLETION, "/v1/completions", ("choices", 0, "text"), " fake completion"),
    (RequestType.CHAT_COMPLETION, "/v1/chat/completions",
     ("choices", 0, "message", "content"), "fake chat answer"),
    (RequestType.RESPONSES, "/v1/responses",
     ("output", 0, "content", 0, "text"), "fake response"),
    (RequestType.EMBEDDING, "/v1/embeddings", ("data", 1, "index"), 1),
    (RequestType.SPEECH, "/v1/audio/speech", ("content_type",), "audio/mpeg"),
    (RequestType.TRANSCRIPTION, "/v1/audio/transcriptions", ("text",), "fake transcription"),
    (RequestType.IMAGE_GENERATION, "/v1/images/generations", ("data", 1, "b64_json"), PNG_B64),
    (RequestType.IMAGE_EDIT, "/v1/images/edits", ("data", 0, "b64_json"), PNG_B64),
    (RequestType.IMAGE_VARIATION, "/v1/images/variations", ("data", 0, "b64_json"), PNG_B64),
    (RequestType.RERANK, "/v1/rerank", ("results", 0, "index"), 1),
    (RequestType.OCR, "/v1/ocr", ("pages", 0, "markdown"), "# Fake page"),
]  # fmt: skip


def dig(value: Any, where: tuple[str | int, ...]) -> Any:
    for step in where:
        value = value[step]
    return value


def test_round_trip_table_covers_every_request_type() -> None:
    assert {row[0] for row in ROUND_TRIPS} == set(RequestType)


@pytest.mark.parametrize(
    ("request_type", "path", "where", "expected"), ROUND_TRIPS, ids=[r[0] for r in ROUND_TRIPS]
)
async def test_request_type_round_trips_on_the_wire(
    fake: FakeOpenAIServer,
    openai: OpenAICompatProvider,
    request_type: RequestType,
    path: str,
    where: tuple[str | int, ...],
    expected: Any,
) -> None:
    result = await openai.call(sample_request(request_type))
    assert dig(result.body, where) == expected
    stats = fake.stats()
    assert stats["violations"] == []
    (received,) = stats["requests"]
    assert (received["path"], received["model"], received["key"]) == (path, "gpt-test", GOOD_KEY)
    assert received["status"] == 200


async def test_json_body_drops_gateway_fields_and_maps_max_tokens(
    fake: FakeOpenAIServer, openai: OpenAICompatProvider
) -> None:
    request = json_request(
        RequestType.CHAT_COMPLETION, max_tokens=50, fallbacks=["openai/other"], seed=3
    )
    await openai.call(request)
    sent = fake.stats()["requests"][0]["json"]
    assert sent["model"] == "gpt-test"
    assert sent["max_completion_tokens"] == 50
    assert "max_tokens" not in sent
    assert "fallbacks" not in sent
    assert sent["seed"] == 3  # unknown fields pass through as extra parameters
    assert sent["temperature"] == 0.2


async def test_explicit_max_completion_tokens_wins_over_max_tokens(
    fake: FakeOpenAIServer, openai: OpenAICompatProvider
) -> None:
    request = json_request(RequestType.CHAT_COMPLETION, max_tokens=50, max_completion_tokens=9)
    await openai.call(request)
    assert fake.stats()["requests"][0]["json"]["max_completion_tokens"] == 9


async def test_max_tokens_is_kept_for_text_completions(
    fake: FakeOpenAIServer, openai: OpenAICompatProvider
) -> None:
    await openai.call(sample_request(RequestType.TEXT_COMPLETION))
    assert fake.stats()["requests"][0]["json"]["max_tokens"] == 20


async def test_image_edit_forwards_every_image_and_field(
    fake: FakeOpenAIServer, openai: OpenAICompatProvider
) -> None:
    request = form_request(RequestType.IMAGE_EDIT, extra_fields=[("fallbacks", "openai/x")])
    await openai.call(request)
    form = fake.stats()["requests"][0]["form"]
    assert form["fields"] == {"model": ["gpt-test"], "prompt": ["add a hat"], "n": ["1"]}
    sizes = [(part["filename"], part["size"]) for part in form["files"]["image[]"]]
    assert sizes == [("a.png", len(SAMPLE_FILE)), ("b.png", len(SAMPLE_FILE))]
    assert set(form["files"]) == {"image[]"}


async def test_image_variation_sends_its_image_as_the_field_openai_expects(
    fake: FakeOpenAIServer, openai: OpenAICompatProvider
) -> None:
    await openai.call(sample_request(RequestType.IMAGE_VARIATION))
    files = fake.stats()["requests"][0]["form"]["files"]
    assert files == {"image": [{"filename": "a.png", "size": len(SAMPLE_FILE)}]}


async def test_speech_audio_comes_back_base64_with_its_media_type(
    openai: OpenAICompatProvider,
) -> None:
    result = await openai.call(json_request(RequestType.SPEECH, response_format="wav"))
    assert result.body["content_type"] == "audio/wav"
    assert base64.b64decode(result.body["audio"]) == b"ID3\x04\x00\xff\xfb\x90fake-audio:alloy"


async def test_plain_text_transcription_becomes_json_text(openai: OpenAICompatProvider) -> None:
    request = form_request(RequestType.TRANSCRIPTION, extra_fields=[("response_format", "text")])
    result = await openai.call(request)
    assert result.body == {"text": "fake transcription"}


async def test_connection_pool_bounds_concurrent_requests(fake: FakeOpenAIServer) -> None:
    fake.latency_ms = 100
    provider = OpenAICompatProvider(
        "openai", base_url=fake.base_url, keys=[ApiKey(GOOD_KEY)], max_connections=2
    )
    try:
        request = sample_request(RequestType.EMBEDDING)
        await asyncio.gather(*(provider.call(request) for _ in range(6)))
    finally:
        await provider.close()
    stats = fake.stats()
    assert stats["count"] == 6
    assert stats["max_in_flight"] == 2
