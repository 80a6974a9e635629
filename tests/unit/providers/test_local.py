"""The local provider answers every request type in the right shape, deterministically."""

from __future__ import annotations

import base64
import io
import json
import math
import struct
import time
import wave
import zlib
from typing import Any

import pytest

from asyncjobs.core.providers.base import ProviderError, ProviderRequest
from asyncjobs.core.providers.local import LocalProvider
from asyncjobs.core.request_types import RequestType

from .samples import json_request, sample_request

FIXED_NOW = 1_760_000_000.0


def provider(latency_ms: float = 0.0) -> LocalProvider:
    return LocalProvider(latency_ms=latency_ms, clock=lambda: FIXED_NOW)


async def answer(request: ProviderRequest) -> dict[str, Any]:
    return (await provider().call(request)).body


def png_size(data: bytes) -> tuple[int, int]:
    """Checks a PNG's signature, chunk CRCs and pixel data; returns (width, height)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, chunks = 8, {}
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        payload = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert zlib.crc32(kind + payload) & 0xFFFFFFFF == crc
        chunks[kind] = payload
        offset += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, colour) == (8, 2)  # 8-bit RGB
    assert len(zlib.decompress(chunks[b"IDAT"])) == height * (1 + 3 * width)
    assert b"IEND" in chunks
    return width, height


async def test_chat_completion_has_choices_message_and_usage() -> None:
    body = await answer(sample_request(RequestType.CHAT_COMPLETION))
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-test"
    assert body["created"] == int(FIXED_NOW)
    (choice,) = body["choices"]
    assert choice["message"]["role"] == "assistant"
    assert "capital of France" in choice["message"]["content"]
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0


async def test_chat_completion_honours_max_tokens_n_and_json_mode() -> None:
    cut = await answer(json_request(RequestType.CHAT_COMPLETION, max_tokens=3, n=2))
    assert [c["index"] for c in cut["choices"]] == [0, 1]
    assert all(len(c["message"]["content"].split()) == 3 for c in cut["choices"])
    assert {c["finish_reason"] for c in cut["choices"]} == {"length"}
    structured = await answer(
        json_request(RequestType.CHAT_COMPLETION, response_format={"type": "json_object"})
    )
    assert "reply" in json.loads(structured["choices"][0]["message"]["content"])


async def test_text_completion_and_responses_shapes() -> None:
    completion = await answer(sample_request(RequestType.TEXT_COMPLETION))
    assert completion["object"] == "text_completion"
    assert "Say this is a test" in completion["choices"][0]["text"]
    response = await answer(sample_request(RequestType.RESPONSES))
    assert response["object"] == "response"
    assert response["status"] == "completed"
    (message,) = response["output"]
    assert message["role"] == "assistant"
    assert message["content"][0]["type"] == "output_text"
    assert "haiku" in message["content"][0]["text"]
    assert response["usage"]["total_tokens"] > 0


async def test_embeddings_are_unit_vectors_derived_from_the_input() -> None:
    body = await answer(sample_request(RequestType.EMBEDDING))
    assert body["object"] == "list"
    first, second = (item["embedding"] for item in body["data"])
    assert [item["index"] for item in body["data"]] == [0, 1]
    assert len(first) == len(second) == 128
    assert math.isclose(sum(v * v for v in first), 1.0, rel_tol=1e-9)
    assert first != second
    again = await answer(json_request(RequestType.EMBEDDING, input="second text"))
    assert again["data"][0]["embedding"] == second


async def test_embeddings_honour_dimensions_and_base64_encoding() -> None:
    floats = await answer(json_request(RequestType.EMBEDDING, input="x", dimensions=8))
    packed = await answer(
        json_request(RequestType.EMBEDDING, input="x", dimensions=8, encoding_format="base64")
    )
    decoded = struct.unpack("<8f", base64.b64decode(packed["data"][0]["embedding"]))
    assert len(floats["data"][0]["embedding"]) == 8
    assert decoded == pytest.approx(floats["data"][0]["embedding"], rel=1e-6)


async def test_speech_is_a_playable_wav_in_base64() -> None:
    body = await answer(sample_request(RequestType.SPEECH))
    assert body["content_type"] == "audio/wav"
    with wave.open(io.BytesIO(base64.b64decode(body["audio"]))) as audio:
        assert audio.getnchannels() == 1
        assert audio.getsampwidth() == 2
        assert audio.getnframes() > 0


async def test_transcription_names_the_uploaded_file() -> None:
    body = await answer(sample_request(RequestType.TRANSCRIPTION))
    assert "hello.wav" in body["text"]


@pytest.mark.parametrize(
    ("request_type", "count"),
    [
        (RequestType.IMAGE_GENERATION, 2),
        (RequestType.IMAGE_EDIT, 1),
        (RequestType.IMAGE_VARIATION, 1),
    ],
)
async def test_images_are_valid_pngs_in_b64_json(request_type: RequestType, count: int) -> None:
    body = await answer(sample_request(request_type))
    assert body["created"] == int(FIXED_NOW)
    assert len(body["data"]) == count
    for item in body["data"]:
        assert png_size(base64.b64decode(item["b64_json"])) == (8, 8)


async def test_image_url_format_answers_a_data_url() -> None:
    body = await answer(json_request(RequestType.IMAGE_GENERATION, response_format="url", n=1))
    url = body["data"][0]["url"]
    assert url.startswith("data:image/png;base64,")
    assert png_size(base64.b64decode(url.split(",", 1)[1])) == (8, 8)


async def test_rerank_sorts_by_score_and_puts_the_matching_document_first() -> None:
    body = await answer(sample_request(RequestType.RERANK))
    scores = [result["relevance_score"] for result in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert body["results"][0]["index"] == 1  # "Paris is the capital of France"
    top_one = await answer(json_request(RequestType.RERANK, top_n=1, return_documents=True))
    (only,) = top_one["results"]
    assert only["document"] == {"text": "Paris is the capital of France"}


async def test_ocr_answers_pages_with_markdown() -> None:
    body = await answer(sample_request(RequestType.OCR))
    (page,) = body["pages"]
    assert page["index"] == 0
    assert page["markdown"].startswith("# ")
    assert body["usage_info"]["pages_processed"] == 1


@pytest.mark.parametrize("request_type", list(RequestType))
async def test_every_answer_is_deterministic_and_depends_on_the_request(
    request_type: RequestType,
) -> None:
    request = sample_request(request_type)
    first, second = await answer(request), await answer(request)
    assert first == second
    assert json.loads(json.dumps(first)) == first  # storable as the job's JSON result
    other = await answer(sample_request(request_type, model="other-model"))
    assert other != first


async def test_unreadable_body_fails_as_non_retryable_400() -> None:
    request = ProviderRequest(RequestType.CHAT_COMPLETION, "m", b"{not json", "application/json")
    with pytest.raises(ProviderError) as caught:
        await answer(request)
    assert caught.value.status_code == 400
    assert caught.value.retryable is False


async def test_latency_option_delays_each_answer() -> None:
    started = time.monotonic()
    await provider(latency_ms=60).call(sample_request(RequestType.CHAT_COMPLETION))
    assert time.monotonic() - started >= 0.06
