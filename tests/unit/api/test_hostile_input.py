"""Inputs built to break the API: each is a 400 BifrostError naming what is wrong,
nothing is written, and nothing reaches the log as an unhandled error.

Non-UTF-8 credential headers, JSON nested or repeated beyond the parser's bounds,
malformed Anthropic bodies, and values the AsyncJob CRD would refuse (a model over 256
characters, more than 16 fallbacks) all answered 500 with a traceback before.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from asyncjobs.api import validation
from asyncjobs.api.app import create_app
from asyncjobs.api.settings import Settings
from asyncjobs.api.validation import MAX_JSON_DEPTH, max_json_values
from asyncjobs.api.virtual_keys import KeyRing
from asyncjobs.core import multipart
from tests.unit.api.fakes import FakeClock, FakeJobStore

Client = TestClient[web.Request, web.Application]
CHAT = "/v1/async/chat/completions"
MESSAGES = [{"role": "user", "content": "hi"}]
TOKEN = "gateway-secret"


def gateway_error(status: int, message: str) -> dict[str, Any]:
    return {
        "is_bifrost_error": False,
        "status_code": status,
        "error": {"message": message},
        "extra_fields": {},
    }


@pytest.fixture
def unhandled(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """The middleware's log of unhandled errors (each one a 500 with a traceback)."""
    caplog.set_level(logging.ERROR, logger="asyncjobs.api.middleware")
    return caplog


def assert_refused(
    status: int, document: Any, message: str, store: FakeJobStore, log: pytest.LogCaptureFixture
) -> None:
    assert (status, document) == (400, gateway_error(400, message))
    assert store.objects == {}
    assert store.bodies == {}
    assert [record for record in log.records if record.exc_info] == []


async def raw_post(port: int, path: str, header_lines: bytes, body: bytes) -> tuple[int, Any]:
    """A POST written byte for byte: aiohttp's client will not send non-UTF-8 headers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: unit\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n".encode()
            + header_lines
            + b"\r\n"
            + body
        )
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, payload = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


# --- credential headers that are not UTF-8 -----------------------------------------------------

CHAT_BODY = json.dumps({"model": "local/echo", "messages": MESSAGES}).encode()


@pytest.mark.parametrize(
    ("line", "header"),
    [
        (b"x-bf-vk: sk-bf-\xff\xfe", "x-bf-vk"),
        (b"Authorization: Bearer sk-bf-\xff", "Authorization"),
        (b"x-api-key: sk-bf-\xc3\x28", "x-api-key"),
        (b"x-goog-api-key: sk-bf-\x80", "x-goog-api-key"),
    ],
)
async def test_a_virtual_key_header_that_is_not_utf8_answers_400(
    client: Client,
    store: FakeJobStore,
    unhandled: pytest.LogCaptureFixture,
    line: bytes,
    header: str,
) -> None:
    assert client.server.port is not None
    status, document = await raw_post(client.server.port, CHAT, line + b"\r\n", CHAT_BODY)
    assert_refused(status, document, f"invalid {header} header: not valid UTF-8", store, unhandled)


async def test_a_poll_with_a_key_that_is_not_utf8_answers_400(
    client: Client, store: FakeJobStore, unhandled: pytest.LogCaptureFixture
) -> None:
    job_id = "0b7bd8a4-0f1c-4a8e-9d61-3c4a8a1f2b11"
    store.put_job(job_id, virtual_key_id="team-a")
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    writer.write(
        f"GET {CHAT}/{job_id} HTTP/1.1\r\nHost: unit\r\nConnection: close\r\n".encode()
        + b"x-bf-vk: sk-bf-\xff\r\n\r\n"
    )
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert int(head.split()[1]) == 400
    assert json.loads(payload) == gateway_error(400, "invalid x-bf-vk header: not valid UTF-8")
    assert [record for record in unhandled.records if record.exc_info] == []


@pytest.fixture
async def guarded(
    store: FakeJobStore, clock: FakeClock
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    settings = Settings(namespace="unit", gateway_token=TOKEN)
    app = create_app(settings, store=store, keys=KeyRing(), clock=clock)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


@pytest.mark.parametrize(
    ("line", "header"),
    [
        (b"Authorization: Bearer gateway-\xff", "Authorization"),
        (b"x-api-key: gateway-\xe9", "x-api-key"),
    ],
)
async def test_a_gateway_token_header_that_is_not_utf8_answers_400(
    guarded: Client,
    store: FakeJobStore,
    unhandled: pytest.LogCaptureFixture,
    line: bytes,
    header: str,
) -> None:
    assert guarded.server.port is not None
    status, document = await raw_post(guarded.server.port, CHAT, line + b"\r\n", CHAT_BODY)
    assert_refused(status, document, f"invalid {header} header: not valid UTF-8", store, unhandled)


# --- JSON beyond the parser's bounds -----------------------------------------------------------


def nested(depth: int) -> bytes:
    """A chat body whose messages hold arrays `depth` levels deep in all."""
    inner = b"[" * (depth - 1) + b"]" * (depth - 1)
    return b'{"model":"local/echo","messages":' + inner + b"}"


async def test_json_nested_far_beyond_the_recursion_limit_answers_400(
    client: Client, store: FakeJobStore, unhandled: pytest.LogCaptureFixture
) -> None:
    response = await client.post(CHAT, data=nested(3_000))
    assert_refused(
        response.status,
        await response.json(),
        f"invalid request format: JSON nested deeper than {MAX_JSON_DEPTH} levels",
        store,
        unhandled,
    )


async def test_json_one_level_too_deep_answers_400_and_the_limit_itself_is_accepted(
    client: Client, store: FakeJobStore, unhandled: pytest.LogCaptureFixture
) -> None:
    at_limit = (
        b'{"model":"local/echo","messages":[{"role":"user","content":"hi","x":'
        + b"[" * (MAX_JSON_DEPTH - 3)
        + b"]" * (MAX_JSON_DEPTH - 3)
        + b"}]}"
    )
    accepted = await client.post(CHAT, data=at_limit)
    assert accepted.status == 202
    store.objects.clear()
    store.bodies.clear()
    too_deep = at_limit.replace(b"[[", b"[[[", 1).replace(b"]]", b"]]]", 1)
    response = await client.post(CHAT, data=too_deep)
    assert_refused(
        response.status,
        await response.json(),
        f"invalid request format: JSON nested deeper than {MAX_JSON_DEPTH} levels",
        store,
        unhandled,
    )


async def test_brackets_and_commas_inside_strings_count_for_nothing(
    client: Client, store: FakeJobStore
) -> None:
    text = '[[[{,"\\"' * 2000
    body = json.dumps({"model": "local/echo", "messages": [{"role": "user", "content": text}]})
    response = await client.post(CHAT, data=body)
    assert response.status == 202


async def test_more_json_values_than_the_body_limit_allows_answers_400(
    client: Client, settings: Settings, store: FakeJobStore, unhandled: pytest.LogCaptureFixture
) -> None:
    limit = max_json_values(settings.max_request_bytes)
    # `[],` is the body that costs the parser the most memory per byte.
    body = b'{"model":"local/echo","messages":[' + b"[]," * (limit // 2) + b"[]]}"
    assert len(body) <= settings.max_request_bytes
    response = await client.post(CHAT, data=body)
    assert_refused(
        response.status,
        await response.json(),
        f"invalid request format: more than {limit} JSON values",
        store,
        unhandled,
    )


# --- malformed Anthropic bodies ----------------------------------------------------------------

ANTHROPIC = "/anthropic/v1/messages"


def anthropic_error(message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": "invalid_request_error", "message": message}}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"model": "claude", "max_tokens": 8, "messages": MESSAGES, "metadata": "x"},
            "invalid request format: metadata must be an object",
        ),
        (
            {
                "model": "claude",
                "max_tokens": 8,
                "messages": [{"role": "user", "content": [{"type": "image", "source": "s"}]}],
            },
            "invalid request format: image blocks need a base64 or url source",
        ),
        (
            {"model": "claude", "max_tokens": 8, "messages": MESSAGES, "temperature": "NaN"},
            "invalid request format: invalid literal NaN",
        ),
    ],
    ids=["metadata-string", "image-source-string", "nan"],
)
async def test_a_malformed_anthropic_body_answers_400(
    client: Client,
    store: FakeJobStore,
    unhandled: pytest.LogCaptureFixture,
    body: dict[str, Any],
    message: str,
) -> None:
    data = json.dumps(body).replace('"NaN"', "NaN")
    response = await client.post(ANTHROPIC, data=data, headers={"x-bf-async": "true"})
    assert (response.status, await response.json()) == (400, anthropic_error(message))
    assert store.objects == {}
    assert [record for record in unhandled.records if record.exc_info] == []


async def test_an_anthropic_body_nested_too_deep_answers_400(
    client: Client, store: FakeJobStore, unhandled: pytest.LogCaptureFixture
) -> None:
    data = b'{"model":"claude","messages":' + b"[" * 3_000 + b"]" * 3_000 + b"}"
    response = await client.post(ANTHROPIC, data=data, headers={"x-bf-async": "true"})
    message = f"invalid request format: JSON nested deeper than {MAX_JSON_DEPTH} levels"
    assert (response.status, await response.json()) == (400, anthropic_error(message))
    assert store.objects == {}
    assert [record for record in unhandled.records if record.exc_info] == []


async def test_an_anthropic_body_with_a_lone_surrogate_is_stored_as_valid_json(
    client: Client, store: FakeJobStore, unhandled: pytest.LogCaptureFixture
) -> None:
    # JSON may escape half a surrogate pair; Go's decoder (Bifrost's) reads it as U+FFFD.
    data = '{"model":"claude","max_tokens":8,"messages":[{"role":"user","content":"a\\ud800b"}]}'
    response = await client.post(ANTHROPIC, data=data, headers={"x-bf-async": "true"})
    assert response.status == 200
    (stored,) = store.bodies.values()
    assert json.loads(stored)["messages"][0]["content"] == "a\ud800b"
    assert [record for record in unhandled.records if record.exc_info] == []


# --- what the AsyncJob CRD refuses -------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"model": "local/" + "m" * 251}, "model must be at most 256 characters"),
        ({"model": "local/echo\nx"}, "model must not contain a line break"),
        (
            {"model": "local/echo", "fallbacks": ["local/echo"] * 17},
            "at most 16 fallbacks are allowed",
        ),
        (
            {"model": "local/echo", "fallbacks": ["local/" + "m" * 251]},
            "each fallback must be at most 256 characters",
        ),
        (
            {"model": "local/echo", "fallbacks": ["local/a\nb"]},
            "a fallback must not contain a line break",
        ),
    ],
    ids=["long-model", "model-newline", "17-fallbacks", "long-fallback", "fallback-newline"],
)
async def test_a_json_submit_the_crd_would_refuse_answers_400(
    client: Client,
    store: FakeJobStore,
    unhandled: pytest.LogCaptureFixture,
    fields: dict[str, Any],
    message: str,
) -> None:
    response = await client.post(CHAT, json={**fields, "messages": MESSAGES})
    assert_refused(response.status, await response.json(), message, store, unhandled)


async def test_the_crd_limits_themselves_are_accepted(client: Client, store: FakeJobStore) -> None:
    body = {
        "model": "local/" + "m" * 250,
        "fallbacks": ["local/" + "f" * 250] * 16,
        "messages": MESSAGES,
    }
    response = await client.post(CHAT, json=body)
    assert response.status == 202
    (spec,) = store.specs.values()
    assert len(spec.model) == 256
    assert len(spec.fallbacks) == 16


async def test_an_anthropic_model_over_256_characters_answers_400(
    client: Client, store: FakeJobStore
) -> None:
    body = {"model": "c" * 250, "max_tokens": 8, "messages": MESSAGES}
    response = await client.post(ANTHROPIC, json=body, headers={"x-bf-async": "true"})
    # The route qualifies the bare name as anthropic/…, which is what must fit.
    assert (response.status, await response.json()) == (
        400,
        anthropic_error("model must be at most 256 characters"),
    )
    assert store.objects == {}


TRANSCRIPTION = "/v1/async/audio/transcriptions"


def form(*fields: tuple[str, str]) -> tuple[bytes, str]:
    return multipart.encode(
        multipart.Form(
            fields=list(fields), files=[multipart.FilePart("file", "a.mp3", "audio/mpeg", b"ID3")]
        )
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ((("model", "local/" + "m" * 251),), "model must be at most 256 characters"),
        (
            (("model", "local/echo"), *[("fallbacks", "local/echo")] * 17),
            "at most 16 fallbacks are allowed",
        ),
    ],
    ids=["long-model", "17-fallbacks"],
)
async def test_a_multipart_submit_the_crd_would_refuse_answers_400(
    client: Client,
    store: FakeJobStore,
    unhandled: pytest.LogCaptureFixture,
    fields: tuple[tuple[str, str], ...],
    message: str,
) -> None:
    body, content_type = form(*fields)
    response = await client.post(TRANSCRIPTION, data=body, headers={"Content-Type": content_type})
    assert_refused(response.status, await response.json(), message, store, unhandled)


async def test_a_multipart_content_type_over_256_characters_answers_400(
    client: Client, store: FakeJobStore, unhandled: pytest.LogCaptureFixture
) -> None:
    body, content_type = form(("model", "local/echo"))
    padded = f"{content_type}; x-padding={'p' * 256}"
    response = await client.post(TRANSCRIPTION, data=body, headers={"Content-Type": padded})
    assert_refused(
        response.status,
        await response.json(),
        "failed to parse multipart form: content type longer than 256 characters",
        store,
        unhandled,
    )


async def test_a_multipart_submit_of_10000_parts_answers_400_before_any_part_is_read(
    store: FakeJobStore, clock: FakeClock, unhandled: pytest.LogCaptureFixture
) -> None:
    # 520 KB of such parts held the event loop for 21.8 s in the email parser; the body
    # limit is the default 25 MiB here, as in a deployment.
    part = b'--b\r\nContent-Disposition: form-data; name="f"\r\n\r\nx\r\n'
    body = part * 10_000 + b"--b--\r\n"
    headers = {"Content-Type": "multipart/form-data; boundary=b"}
    app = create_app(Settings(namespace="unit"), store=store, keys=KeyRing(), clock=clock)
    started = time.perf_counter()
    async with TestClient(TestServer(app)) as client:
        response = await client.post(TRANSCRIPTION, data=body, headers=headers)
        document = await response.json()
    message = "failed to parse multipart form: more than 64 parts"
    assert_refused(response.status, document, message, store, unhandled)
    assert time.perf_counter() - started < 1.0


# --- the bounds check itself -------------------------------------------------------------------


def structure_by_hand(text: bytes) -> bytes:
    """The brackets and commas outside strings, read one byte at a time as a decoder does."""
    kept = bytearray()
    in_string = escaped = False
    for byte in text:
        char = bytes([byte])
        if in_string:
            if escaped:
                escaped = False
            elif char == b"\\":
                escaped = True
            elif char == b'"':
                in_string = False
        elif char == b'"':
            in_string = True
        elif char in b"[]{},":
            kept += char
    return bytes(kept)


@pytest.mark.parametrize(
    "value",
    [
        ["a]", "\\", '"', '\\"]', "[[[", {"k,": ["\\\\", "\\\\\\"]}],
        {"x": ["{" * 40, "a\nb\\n[", "\u00e9\u4e2d\ud83d\ude00", ""] * 3000},
        [["x" * 70_000, "]" * 70_000], [[["\\" * 70_001]]]],
    ],
    ids=["escapes", "across-chunks", "long-strings"],
)
def test_the_structure_outside_strings_is_what_a_decoder_reads(value: Any) -> None:
    text = json.dumps(value).encode()
    assert b"".join(validation._outside_strings(text)) == structure_by_hand(text)
    validation.check_json_bounds(text, max_values=10**6)


def test_the_bounds_leave_unbalanced_brackets_to_the_parser() -> None:
    with pytest.raises(validation.FormatError, match="Expecting value"):
        validation.parse_object(b"[1," * 70, max_values=1000)
