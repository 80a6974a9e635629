"""The local provider answers every request type in the right shape, deterministically."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import struct
import time
import wave
import zlib
from collections.abc import Awaitable
from typing import Any

import pytest

from asyncjobs.core import provider_config
from asyncjobs.core.provider_config import LocalLimits
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


# Output bounds: a small request must not become a large answer (issue 13).


def test_local_limits_default_when_the_file_names_none() -> None:
    config = provider_config.parse(b"providers: {local: {type: local}}")
    assert config.providers["local"].local_limits is None
    loaded = provider_config.parse(
        b"providers: {local: {type: local, localLimits: {maxEmbeddingValues: 8}}}"
    )
    limits = loaded.providers["local"].local_limits
    assert limits is not None
    assert limits.max_embedding_values == 8
    assert limits.max_output_bytes == LocalLimits().max_output_bytes


def test_local_limits_apply_to_the_local_type_only() -> None:
    with pytest.raises(ValueError, match="localLimits applies to type local only"):
        provider_config.parse(b"providers: {o: {type: openai, localLimits: {maxChoices: 2}}}")


async def refused(request: ProviderRequest, local: LocalProvider | None = None) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await (local or provider()).call(request)
    assert caught.value.status_code == 400
    assert caught.value.retryable is False
    assert caught.value.code == "local_output_limit"
    return caught.value


async def test_embedding_of_400_inputs_by_4096_dimensions_is_refused_naming_the_bound() -> None:
    # The 2 KB request that answered 35 MiB and stalled the operator for 8.2 s.
    request = json_request(RequestType.EMBEDDING, input=["x"] * 400, dimensions=4096)
    error = await refused(request)
    assert error.message == (
        "the embedding request asks for 400 inputs x 4096 dimensions = 1638400 values;"
        " the local provider answers at most 131072 (option localLimits.maxEmbeddingValues)"
    )
    assert error.param == "input"


async def test_embedding_inputs_are_bounded_even_with_one_dimension() -> None:
    request = json_request(RequestType.EMBEDDING, input=["x"] * 2049, dimensions=1)
    error = await refused(request)
    assert "2049 inputs" in error.message
    assert "localLimits.maxEmbeddingInputs" in error.message


async def test_embedding_at_the_bound_is_answered_under_the_output_budget() -> None:
    request = json_request(RequestType.EMBEDDING, input=["x"] * 32, dimensions=4096)
    body = await answer(request)
    assert len(body["data"]) == 32
    assert len(json.dumps(body)) < LocalLimits().max_output_bytes


async def test_text_completion_choices_are_bounded() -> None:
    request = json_request(RequestType.TEXT_COMPLETION, prompt=[""] * 100, n=16)
    error = await refused(request)
    assert error.message.startswith("the request asks for 1600 choices (100 prompts x n=16)")
    assert "localLimits.maxChoices" in error.message


async def test_chat_echo_of_a_huge_prompt_cannot_multiply_past_the_output_bytes() -> None:
    # 48 words of 100 KB, echoed into 16 choices, would answer about 77 MB.
    words = " ".join(["w" * 100_000] * 48)
    request = json_request(
        RequestType.CHAT_COMPLETION, messages=[{"role": "user", "content": words}], n=16
    )
    error = await refused(request)
    assert "localLimits.maxOutputBytes" in error.message


async def test_configured_limits_tighten_the_answer() -> None:
    tight = LocalProvider(limits=LocalLimits(maxOutputBytes=1024), clock=lambda: FIXED_NOW)
    request = json_request(RequestType.EMBEDDING, input=["x"] * 4, dimensions=256)
    error = await refused(request, tight)
    assert "at most 1024 bytes (option localLimits.maxOutputBytes)" in error.message
    rerank = json_request(
        RequestType.RERANK, documents=["d" * 2000], top_n=1, return_documents=True
    )
    assert "localLimits.maxOutputBytes" in (await refused(rerank, tight)).message


async def longest_loop_stall(work: Awaitable[Any]) -> float:
    """Runs `work` while a ticker records the longest gap between its wake-ups."""
    longest = 0.0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal longest
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            longest = max(longest, now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.02)
    try:
        await work
    finally:
        done.set()
        await task
    return longest


@pytest.mark.timeout(60)
async def test_a_large_bounded_answer_does_not_stall_the_event_loop() -> None:
    # Bounds raised so the request is allowed: it takes about a second to build.
    roomy = LocalProvider(
        limits=LocalLimits(maxEmbeddingValues=2_000_000, maxOutputBytes=64 << 20),
        clock=lambda: FIXED_NOW,
    )
    request = json_request(RequestType.EMBEDDING, input=["x"] * 400, dimensions=4096)
    stall = await longest_loop_stall(roomy.call(request))
    assert stall < 0.2
