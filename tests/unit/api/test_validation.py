"""Table tests of the pure submit validation: every submit row of spec §4."""

from __future__ import annotations

import json
from typing import Any

import pytest

from asyncjobs.api.validation import Accepted, Rejected, result_ttl, split_model, validate
from asyncjobs.core import multipart
from asyncjobs.core.request_types import REQUEST_TYPES, RequestType

PROVIDERS = frozenset({"local", "openai"})
MODEL = "openai/gpt-4o-mini"


def check_json(request_type: RequestType, body: Any) -> Rejected | Accepted:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return validate(REQUEST_TYPES[request_type], raw, "application/json", PROVIDERS)


T = RequestType

JSON_REJECTIONS = [
    # (request type, body, exact message)
    pytest.param(
        T.CHAT_COMPLETION,
        {"model": MODEL},
        "messages is required for chat completion",
        id="chat-no-messages",
    ),
    pytest.param(
        T.CHAT_COMPLETION,
        {"model": MODEL, "messages": []},
        "messages is required for chat completion",
        id="chat-empty-messages",
    ),
    pytest.param(
        T.TEXT_COMPLETION,
        {"model": MODEL},
        "prompt is required for text completion",
        id="text-no-prompt",
    ),
    pytest.param(
        T.TEXT_COMPLETION,
        {"model": MODEL, "prompt": None},
        "prompt is required for text completion",
        id="text-null-prompt",
    ),
    pytest.param(
        T.RESPONSES, {"model": MODEL}, "input is required for responses", id="responses-no-input"
    ),
    pytest.param(
        T.EMBEDDING, {"model": MODEL}, "input is required for embeddings", id="embeddings-no-input"
    ),
    pytest.param(
        T.SPEECH,
        {"model": MODEL, "voice": "alloy"},
        "input is required for speech completion",
        id="speech-no-input",
    ),
    pytest.param(
        T.SPEECH,
        {"model": MODEL, "input": "", "voice": "alloy"},
        "input is required for speech completion",
        id="speech-empty-input",
    ),
    pytest.param(
        T.SPEECH,
        {"model": MODEL, "input": "hi"},
        "voice is required for speech completion",
        id="speech-no-voice",
    ),
    pytest.param(
        T.IMAGE_GENERATION, {"model": MODEL}, "prompt cannot be empty", id="imagegen-no-prompt"
    ),
    pytest.param(
        T.IMAGE_GENERATION,
        {"model": MODEL, "prompt": ""},
        "prompt cannot be empty",
        id="imagegen-empty-prompt",
    ),
    pytest.param(
        T.RERANK,
        {"model": MODEL, "documents": [{"text": "a"}]},
        "query is required for rerank",
        id="rerank-no-query",
    ),
    pytest.param(
        T.RERANK,
        {"model": MODEL, "query": " \t\u3000\xa0\u2009", "documents": [{"text": "a"}]},
        "query is required for rerank",
        id="rerank-go-white-space-query",
    ),
    pytest.param(
        T.RERANK,
        {"model": MODEL, "query": "q"},
        "documents are required for rerank",
        id="rerank-no-documents",
    ),
    pytest.param(
        T.RERANK,
        {"model": MODEL, "query": "q", "documents": []},
        "documents are required for rerank",
        id="rerank-empty-documents",
    ),
    pytest.param(
        T.RERANK,
        {"model": MODEL, "query": "q", "documents": [{"text": "a"}], "top_n": 0},
        "top_n must be at least 1",
        id="rerank-top-n-zero",
    ),
    # model format, on every JSON type
    *[
        pytest.param(
            rt,
            {"model": model},
            "model should be in provider/model format",
            id=f"{rt.value}-model-{label}",
        )
        for rt in (
            T.CHAT_COMPLETION,
            T.TEXT_COMPLETION,
            T.RESPONSES,
            T.EMBEDDING,
            T.SPEECH,
            T.IMAGE_GENERATION,
            T.RERANK,
            T.OCR,
        )
        for label, model in (
            ("missing", None),
            ("bare", "gpt-4o"),
            ("unknown-provider", "acme/m"),
            ("empty-name", "openai/"),
        )
    ],
    # streaming refused
    pytest.param(
        T.TEXT_COMPLETION,
        {"model": MODEL, "prompt": "p", "stream": True},
        "stream is not supported for async text completions",
        id="text-stream",
    ),
    pytest.param(
        T.CHAT_COMPLETION,
        {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "stream": True},
        "stream is not supported for async chat completions",
        id="chat-stream",
    ),
    pytest.param(
        T.RESPONSES,
        {"model": MODEL, "input": "x", "stream": True},
        "stream is not supported for async responses",
        id="responses-stream",
    ),
    pytest.param(
        T.IMAGE_GENERATION,
        {"model": MODEL, "prompt": "cat", "stream": True},
        "stream is not supported for async image generations",
        id="imagegen-stream",
    ),
    pytest.param(
        T.SPEECH,
        {"model": MODEL, "input": "hi", "voice": "alloy", "stream_format": "sse"},
        "stream is not supported for async speech",
        id="speech-sse",
    ),
]


@pytest.mark.parametrize(("request_type", "body", "message"), JSON_REJECTIONS)
def test_json_body_is_rejected_with_the_contract_message(
    request_type: RequestType, body: Any, message: str
) -> None:
    assert check_json(request_type, body) == Rejected(message)


@pytest.mark.parametrize(
    ("body", "detail_start"),
    [
        pytest.param(b"{not json", "invalid request format: Expecting property name", id="broken"),
        pytest.param(b"", "invalid request format: Expecting value", id="empty"),
        pytest.param(
            b"[1, 2]", "invalid request format: expected a JSON object, got array", id="array"
        ),
        pytest.param(
            b'{"model": 5}',
            "invalid request format: field model has the wrong type (number)",
            id="model-number",
        ),
        pytest.param(
            b'{"model": "openai/m", "messages": "hi"}',
            "invalid request format: field messages has the wrong type",
            id="messages-string",
        ),
        pytest.param(
            b'{"model": "openai/m", "messages": [1], "stream": "yes"}',
            "invalid request format: field stream has the wrong type",
            id="stream-string",
        ),
        pytest.param(
            b'{"model": "openai/m", "x": NaN}',
            "invalid request format: invalid literal NaN",
            id="nan",
        ),
        pytest.param(b"\xff\xfe", "invalid request format:", id="not-utf8"),
        pytest.param(
            b'{"model": "openai/m", "messages": [1], "max_completion_tokens": 1.5}',
            "invalid request format: field max_completion_tokens has the wrong type (number)",
            id="chat-max-completion-tokens-float",
        ),
    ],
)
def test_malformed_json_names_the_parser_detail(body: bytes, detail_start: str) -> None:
    outcome = check_json(T.CHAT_COMPLETION, body)
    assert isinstance(outcome, Rejected)
    assert outcome.message.startswith(detail_start)


# Integer parameters Bifrost decodes into Go ints: a JSON float is a decode error there,
# reported before the model or any required field is looked at.
INTEGER_FORMAT_ERRORS = [
    pytest.param(T.IMAGE_GENERATION, b'{"model": "openai/m", "prompt": "c", "n": 1.5}', id="n-1.5"),
    pytest.param(T.IMAGE_GENERATION, b'{"model": "openai/m", "prompt": "c", "n": 2.0}', id="n-2.0"),
    pytest.param(T.IMAGE_GENERATION, b'{"model": "openai/m", "prompt": "c", "n": 1e3}', id="n-1e3"),
    pytest.param(T.IMAGE_GENERATION, b'{"model": "openai/m", "prompt": "c", "n": "2"}', id="n-str"),
    pytest.param(
        T.IMAGE_GENERATION,
        b'{"model": "openai/m", "prompt": "c", "n": 9223372036854775808}',
        id="n-beyond-int64",
    ),
    pytest.param(T.IMAGE_GENERATION, b'{"model": "gpt", "n": 1.5}', id="n-before-model"),
    pytest.param(T.TEXT_COMPLETION, b'{"model": "openai/m", "prompt": "p", "n": 1.5}', id="text-n"),
    pytest.param(
        T.TEXT_COMPLETION,
        b'{"model": "openai/m", "prompt": "p", "max_tokens": 10.5}',
        id="text-max-tokens",
    ),
    pytest.param(
        T.EMBEDDING, b'{"model": "openai/m", "input": "a", "dimensions": 8.5}', id="dimensions"
    ),
    pytest.param(
        T.RESPONSES,
        b'{"model": "openai/m", "input": "a", "max_output_tokens": 1.5}',
        id="responses-max-output-tokens",
    ),
    pytest.param(
        T.RERANK,
        b'{"model": "openai/m", "query": "q", "documents": [{"text": "a"}], "top_n": 1.5}',
        id="rerank-top-n",
    ),
]


@pytest.mark.parametrize(("request_type", "body"), INTEGER_FORMAT_ERRORS)
def test_non_integer_in_an_integer_field_is_a_format_error(
    request_type: RequestType, body: bytes
) -> None:
    outcome = check_json(request_type, body)
    assert isinstance(outcome, Rejected)
    assert outcome.message.startswith("invalid request format: field ")


VALID_JSON = [
    pytest.param(T.TEXT_COMPLETION, {"prompt": "once"}, id="text"),
    pytest.param(T.TEXT_COMPLETION, {"prompt": ""}, id="text-empty-string-prompt-is-present"),
    pytest.param(
        T.CHAT_COMPLETION,
        {"messages": [{"role": "user", "content": "x"}], "stream": False},
        id="chat-stream-false",
    ),
    pytest.param(T.RESPONSES, {"input": [{"role": "user", "content": "x"}]}, id="responses-items"),
    pytest.param(T.RESPONSES, {"input": ""}, id="responses-empty-string-input-is-present"),
    pytest.param(
        T.CHAT_COMPLETION,
        {"messages": [{"role": "user", "content": "x"}], "max_tokens": 10.5},
        id="chat-max-tokens-read-loosely",
    ),
    pytest.param(
        T.CHAT_COMPLETION,
        {"messages": [{"role": "user", "content": "x"}], "fallbacks": ["local/echo", "gpt-4o"]},
        id="chat-unparseable-fallback-dropped",
    ),
    pytest.param(
        T.CHAT_COMPLETION,
        {"messages": [{"role": "user", "content": "x"}], "fallbacks": ["acme/x", "local/echo"]},
        id="chat-unknown-provider-fallback-dropped",
    ),
    pytest.param(
        T.CHAT_COMPLETION,
        {"messages": [{"role": "user", "content": "x"}], "fallbacks": ["local/", "local/echo"]},
        id="chat-empty-model-fallback-dropped",
    ),
    pytest.param(T.EMBEDDING, {"input": ["a", "b"], "dimensions": 8}, id="embeddings-list"),
    pytest.param(
        T.SPEECH, {"input": "hi", "voice": "alloy", "stream_format": "audio"}, id="speech"
    ),
    pytest.param(T.IMAGE_GENERATION, {"prompt": "cat", "n": 2}, id="imagegen"),
    pytest.param(T.RERANK, {"query": "q", "documents": [{"text": "a"}], "top_n": 1}, id="rerank"),
    # Go's TrimSpace keeps the ASCII separators that Python's strip() removes.
    pytest.param(
        T.RERANK, {"query": "\x1c\x1f", "documents": [{"text": "a"}]}, id="rerank-separators"
    ),
    pytest.param(
        T.OCR, {"document": {"type": "image_url", "image_url": "https://x/y.png"}}, id="ocr"
    ),
]


@pytest.mark.parametrize(("request_type", "fields"), VALID_JSON)
def test_valid_json_body_is_accepted_with_model_and_fallbacks(
    request_type: RequestType, fields: dict[str, Any]
) -> None:
    body = {"model": MODEL, "fallbacks": ["local/echo"], "extra_param": 1, **fields}
    assert check_json(request_type, body) == Accepted(MODEL, ("local/echo",))


def test_non_string_fallback_is_a_format_error() -> None:
    body = {"model": MODEL, "prompt": "p", "fallbacks": ["local/echo", 3]}
    outcome = check_json(T.TEXT_COMPLETION, body)
    message = "invalid request format: field fallbacks must be an array of strings"
    assert outcome == Rejected(message)


def form_body(fields: list[tuple[str, str]], files: list[tuple[str, str]]) -> tuple[bytes, str]:
    form = multipart.Form(
        fields=fields,
        files=[
            multipart.FilePart(name, filename, "application/octet-stream", b"\x00\x01bytes")
            for name, filename in files
        ],
    )
    return multipart.encode(form)


M = [("model", MODEL)]
AUDIO = [("file", "a.mp3")]
IMAGES = [("image[]", "a.png"), ("image[]", "b.png")]

MULTIPART_REJECTIONS = [
    pytest.param(T.TRANSCRIPTION, [], AUDIO, "model is required", id="transcription-no-model"),
    pytest.param(
        T.TRANSCRIPTION,
        [("model", "whisper-1")],
        AUDIO,
        "model should be in provider/model format",
        id="transcription-bare-model",
    ),
    pytest.param(T.TRANSCRIPTION, M, [], "file is required", id="transcription-no-file"),
    pytest.param(
        T.TRANSCRIPTION,
        [*M, ("stream", "true")],
        AUDIO,
        "stream is not supported for async transcriptions",
        id="transcription-stream",
    ),
    pytest.param(T.IMAGE_EDIT, [("prompt", "p")], IMAGES, "model is required", id="edit-no-model"),
    pytest.param(
        T.IMAGE_EDIT,
        [*M, ("prompt", "p")],
        [],
        "at least one image is required",
        id="edit-no-image",
    ),
    pytest.param(T.IMAGE_EDIT, M, IMAGES, "prompt is required", id="edit-no-prompt"),
    pytest.param(
        T.IMAGE_EDIT,
        [*M, ("prompt", "p"), ("n", "two")],
        IMAGES,
        'invalid n value: strconv.Atoi: parsing "two": invalid syntax',
        id="edit-n-not-int",
    ),
    pytest.param(
        T.IMAGE_EDIT,
        [*M, ("prompt", "p"), ("n", "1.5")],
        IMAGES,
        'invalid n value: strconv.Atoi: parsing "1.5": invalid syntax',
        id="edit-n-float",
    ),
    pytest.param(
        T.IMAGE_EDIT,
        [*M, ("prompt", "p"), ("n", "9223372036854775808")],
        IMAGES,
        'invalid n value: strconv.Atoi: parsing "9223372036854775808": value out of range',
        id="edit-n-out-of-range",
    ),
    pytest.param(
        T.IMAGE_EDIT,
        [*M, ("prompt", "p"), ("stream", "true")],
        IMAGES,
        "stream is not supported for async image edits",
        id="edit-stream",
    ),
    pytest.param(T.IMAGE_VARIATION, [], IMAGES, "model is required", id="variation-no-model"),
    pytest.param(
        T.IMAGE_VARIATION,
        [("model", "acme/x")],
        IMAGES,
        "model should be in provider/model format",
        id="variation-unknown-provider",
    ),
    pytest.param(
        T.IMAGE_VARIATION, M, [], "at least one image is required", id="variation-no-image"
    ),
    pytest.param(
        T.IMAGE_VARIATION,
        [*M, ("n", " 2")],
        IMAGES,
        'invalid n value: strconv.Atoi: parsing " 2": invalid syntax',
        id="variation-n-space",
    ),
]


@pytest.mark.parametrize(("request_type", "fields", "files", "message"), MULTIPART_REJECTIONS)
def test_multipart_body_is_rejected_with_the_contract_message(
    request_type: RequestType,
    fields: list[tuple[str, str]],
    files: list[tuple[str, str]],
    message: str,
) -> None:
    body, content_type = form_body(fields, files)
    assert validate(REQUEST_TYPES[request_type], body, content_type, PROVIDERS) == Rejected(message)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        pytest.param(b"model=openai/x", "application/x-www-form-urlencoded", id="not-multipart"),
        pytest.param(b"--x\r\n", "multipart/form-data", id="no-boundary"),
        pytest.param(
            b"--b\r\nContent-Disposition: form-data\r\n\r\nv\r\n--b--\r\n",
            "multipart/form-data; boundary=b",
            id="part-without-name",
        ),
    ],
)
def test_unparseable_multipart_is_rejected(body: bytes, content_type: str) -> None:
    outcome = validate(REQUEST_TYPES[T.TRANSCRIPTION], body, content_type, PROVIDERS)
    assert isinstance(outcome, Rejected)
    assert outcome.message.startswith("failed to parse multipart form: ")


VALID_MULTIPART = [
    pytest.param(
        T.TRANSCRIPTION, [*M, ("language", "en"), ("stream", "false")], AUDIO, id="transcription"
    ),
    pytest.param(
        T.IMAGE_EDIT,
        [*M, ("prompt", "p"), ("n", "2")],
        [("image", "a.png"), ("mask", "m.png")],
        id="edit-single-image",
    ),
    pytest.param(
        T.IMAGE_EDIT,
        [*M, ("type", "background_removal")],
        IMAGES,
        id="edit-background-removal-needs-no-prompt",
    ),
    pytest.param(T.IMAGE_VARIATION, [*M, ("n", "+3")], IMAGES, id="variation-signed-n"),
    # Bifrost asks for streaming only with the literal "true".
    pytest.param(
        T.IMAGE_EDIT, [*M, ("prompt", "p"), ("stream", "TRUE")], IMAGES, id="edit-stream-TRUE"
    ),
    pytest.param(T.IMAGE_EDIT, [*M, ("prompt", "p"), ("stream", "1")], IMAGES, id="edit-stream-1"),
    pytest.param(T.TRANSCRIPTION, [*M, ("stream", "True")], AUDIO, id="transcription-stream-True"),
    pytest.param(
        T.TRANSCRIPTION,
        [*M, ("fallbacks", "whisper"), ("fallbacks", "acme/w")],
        AUDIO,
        id="transcription-unusable-fallbacks-dropped",
    ),
]


@pytest.mark.parametrize(("request_type", "fields", "files"), VALID_MULTIPART)
def test_valid_multipart_is_accepted(
    request_type: RequestType, fields: list[tuple[str, str]], files: list[tuple[str, str]]
) -> None:
    body, content_type = form_body(fields, files)
    assert validate(REQUEST_TYPES[request_type], body, content_type, PROVIDERS) == Accepted(
        MODEL, ()
    )


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(None, 1800, id="absent-default"),
        pytest.param("", 1800, id="empty-default"),
        pytest.param("abc", 1800, id="not-integer-default"),
        pytest.param("1.5", 1800, id="float-default"),
        pytest.param("-5", 1800, id="negative-default"),
        pytest.param("0", 3600, id="zero-is-3600"),
        pytest.param("120", 120, id="integer"),
        pytest.param("+7", 7, id="signed-integer"),
        pytest.param("99999999999999999999", 1800, id="overflow-default"),
        pytest.param("9223372036854775807", 9223372036, id="huge-is-longest-duration"),
        pytest.param("9223372037", 9223372036, id="beyond-duration-is-longest-duration"),
        pytest.param("9223372036", 9223372036, id="longest-duration"),
    ],
)
def test_result_ttl_header_follows_bifrost_quirks(header: str | None, expected: int) -> None:
    assert result_ttl(header, 1800) == expected


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        pytest.param("openai/gpt-4o", ("openai", "gpt-4o"), id="simple"),
        pytest.param("openai/ft:org/model", ("openai", "ft:org/model"), id="splits-on-first-slash"),
        pytest.param("gpt-4o", None, id="no-provider"),
        pytest.param("nope/gpt", None, id="unknown-provider"),
        pytest.param("/gpt", None, id="empty-provider"),
    ],
)
def test_split_model(model: str, expected: tuple[str, str] | None) -> None:
    assert split_model(model, PROVIDERS) == expected
