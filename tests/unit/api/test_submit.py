"""Submit through HTTP: 202 and what is stored, and every refusal creating nothing."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from asyncjobs.api import store as store_module
from asyncjobs.api.errors import ApiError
from asyncjobs.core import multipart
from asyncjobs.core.kube import KubeError
from asyncjobs.core.request_types import REQUEST_TYPES, BodyKind, RequestType
from tests.unit.api.conftest import KEY_A, KEY_A_ID
from tests.unit.api.fakes import FakeJobStore

Client = TestClient[web.Request, web.Application]
MODEL = "openai/gpt-4o-mini"
CREATED_AT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")

# A minimal valid body for every request type.
JSON_BODIES: dict[RequestType, dict[str, Any]] = {
    RequestType.TEXT_COMPLETION: {"prompt": "once upon"},
    RequestType.CHAT_COMPLETION: {"messages": [{"role": "user", "content": "hi"}]},
    RequestType.RESPONSES: {"input": "hi"},
    RequestType.EMBEDDING: {"input": ["a", "b"]},
    RequestType.SPEECH: {"input": "hi", "voice": "alloy"},
    RequestType.IMAGE_GENERATION: {"prompt": "a cat"},
    RequestType.RERANK: {"query": "q", "documents": [{"text": "d"}]},
    RequestType.OCR: {"document": {"type": "document_url", "document_url": "https://x/d.pdf"}},
}
FORMS: dict[RequestType, multipart.Form] = {
    RequestType.TRANSCRIPTION: multipart.Form(
        fields=[("model", MODEL)],
        files=[multipart.FilePart("file", "a.mp3", "audio/mpeg", b"ID3audio")],
    ),
    RequestType.IMAGE_EDIT: multipart.Form(
        fields=[("model", MODEL), ("prompt", "add a hat")],
        files=[multipart.FilePart("image[]", "a.png", "image/png", b"\x89PNG")],
    ),
    RequestType.IMAGE_VARIATION: multipart.Form(
        fields=[("model", MODEL), ("n", "2")],
        files=[multipart.FilePart("image", "a.png", "image/png", b"\x89PNG")],
    ),
}


def valid_request(request_type: RequestType) -> tuple[bytes, str]:
    if REQUEST_TYPES[request_type].body is BodyKind.MULTIPART:
        return multipart.encode(FORMS[request_type])
    return json.dumps({"model": MODEL, **JSON_BODIES[request_type]}).encode(), "application/json"


def gateway_error(status: int, message: str) -> dict[str, Any]:
    return {
        "is_bifrost_error": False,
        "status_code": status,
        "error": {"message": message},
        "extra_fields": {},
    }


@pytest.mark.parametrize("request_type", list(RequestType), ids=lambda t: t.value)
async def test_submit_answers_202_and_stores_the_body_as_received(
    client: Client, store: FakeJobStore, request_type: RequestType
) -> None:
    body, content_type = valid_request(request_type)
    info = REQUEST_TYPES[request_type]
    response = await client.post(
        info.submit_path,
        data=body,
        headers={"Content-Type": content_type, "x-bf-async-job-result-ttl": "120"},
    )
    assert response.status == 202
    document = await response.json()
    # request_id right after id, as newer Bifrost versions answer (api/README.md).
    assert list(document) == ["id", "request_id", "status", "created_at"]
    assert uuid.UUID(document["request_id"]).version == 4
    assert uuid.UUID(document["id"]).version == 4
    assert document["id"] == document["id"].lower()
    assert document["status"] == "pending"
    assert CREATED_AT.fullmatch(document["created_at"])
    spec = store.specs[document["id"]]
    assert store.bodies[document["id"]] == body
    assert spec.request_type is request_type
    assert spec.model == MODEL
    assert spec.result_ttl_seconds == 120
    assert spec.virtual_key_id is None
    expected_type = content_type if info.body is BodyKind.MULTIPART else "application/json"
    assert spec.request_ref.content_type == expected_type
    assert spec.request_ref.name == f"{document['id']}-request"
    stored = store.objects[document["id"]]["spec"]
    assert stored["submittedAt"] == document["created_at"]
    assert stored["requestId"] == document["request_id"] == spec.request_id


async def test_submit_without_ttl_header_uses_the_configured_default(
    client: Client, store: FakeJobStore
) -> None:
    body, content_type = valid_request(RequestType.CHAT_COMPLETION)
    response = await client.post(
        "/v1/async/chat/completions", data=body, headers={"Content-Type": content_type}
    )
    job_id = (await response.json())["id"]
    assert store.specs[job_id].result_ttl_seconds == 1800


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"x-bf-vk": KEY_A}, id="x-bf-vk"),
        pytest.param({"Authorization": f"Bearer {KEY_A}"}, id="authorization-bearer"),
        pytest.param({"x-api-key": KEY_A}, id="x-api-key"),
        pytest.param({"x-goog-api-key": KEY_A}, id="x-goog-api-key"),
    ],
)
async def test_submit_with_a_virtual_key_records_its_id_never_the_key(
    client: Client, store: FakeJobStore, headers: dict[str, str]
) -> None:
    body, content_type = valid_request(RequestType.EMBEDDING)
    response = await client.post(
        "/v1/async/embeddings", data=body, headers={"Content-Type": content_type, **headers}
    )
    assert response.status == 202
    job_id = (await response.json())["id"]
    assert store.specs[job_id].virtual_key_id == KEY_A_ID
    assert KEY_A not in json.dumps(store.objects[job_id])


async def test_non_prefixed_authorization_is_not_a_virtual_key(
    client: Client, store: FakeJobStore
) -> None:
    body, content_type = valid_request(RequestType.EMBEDDING)
    response = await client.post(
        "/v1/async/embeddings",
        data=body,
        headers={"Content-Type": content_type, "Authorization": "Bearer sk-openai-123"},
    )
    assert response.status == 202
    assert store.specs[(await response.json())["id"]].virtual_key_id is None


def _json(body: dict[str, Any]) -> tuple[bytes, str]:
    return json.dumps(body).encode(), "application/json"


def _form(fields: list[tuple[str, str]], files: list[str]) -> tuple[bytes, str]:
    return multipart.encode(
        multipart.Form(
            fields=fields,
            files=[
                multipart.FilePart(name, "f.bin", "application/octet-stream", b"x")
                for name in files
            ],
        )
    )


CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}

# (path, body+content type, extra headers, status, exact message): spec §4, submit rows.
REFUSALS = [
    pytest.param(
        "/v1/async/chat/completions",
        (b"{oops", "application/json"),
        {},
        400,
        "invalid request format: Expecting property name enclosed in double quotes:"
        " line 1 column 2 (char 1)",
        id="malformed-json",
    ),
    pytest.param(
        "/v1/async/chat/completions",
        _json({"messages": CHAT["messages"]}),
        {},
        400,
        "model should be in provider/model format",
        id="model-missing",
    ),
    pytest.param(
        "/v1/async/chat/completions",
        _json({**CHAT, "model": "gpt-4o"}),
        {},
        400,
        "model should be in provider/model format",
        id="model-no-provider",
    ),
    pytest.param(
        "/v1/async/chat/completions",
        _json({**CHAT, "model": "acme/gpt"}),
        {},
        400,
        "model should be in provider/model format",
        id="model-unknown-provider",
    ),
    pytest.param(
        "/v1/async/chat/completions",
        _json({"model": MODEL}),
        {},
        400,
        "messages is required for chat completion",
        id="chat-messages",
    ),
    pytest.param(
        "/v1/async/completions",
        _json({"model": MODEL}),
        {},
        400,
        "prompt is required for text completion",
        id="text-prompt",
    ),
    pytest.param(
        "/v1/async/responses",
        _json({"model": MODEL}),
        {},
        400,
        "input is required for responses",
        id="responses-input",
    ),
    pytest.param(
        "/v1/async/embeddings",
        _json({"model": MODEL}),
        {},
        400,
        "input is required for embeddings",
        id="embeddings-input",
    ),
    pytest.param(
        "/v1/async/audio/speech",
        _json({"model": MODEL, "voice": "alloy"}),
        {},
        400,
        "input is required for speech completion",
        id="speech-input",
    ),
    pytest.param(
        "/v1/async/audio/speech",
        _json({"model": MODEL, "input": "x"}),
        {},
        400,
        "voice is required for speech completion",
        id="speech-voice",
    ),
    pytest.param(
        "/v1/async/images/generations",
        _json({"model": MODEL, "prompt": ""}),
        {},
        400,
        "prompt cannot be empty",
        id="imagegen-prompt",
    ),
    pytest.param(
        "/v1/async/rerank",
        _json({"model": MODEL, "documents": [{"text": "a"}]}),
        {},
        400,
        "query is required for rerank",
        id="rerank-query",
    ),
    pytest.param(
        "/v1/async/rerank",
        _json({"model": MODEL, "query": "q"}),
        {},
        400,
        "documents are required for rerank",
        id="rerank-documents",
    ),
    pytest.param(
        "/v1/async/rerank",
        _json({"model": MODEL, "query": "q", "documents": [{"text": "a"}], "top_n": 0}),
        {},
        400,
        "top_n must be at least 1",
        id="rerank-top-n",
    ),
    pytest.param(
        "/v1/async/audio/transcriptions",
        _form([("model", MODEL)], []),
        {},
        400,
        "file is required",
        id="transcription-file",
    ),
    pytest.param(
        "/v1/async/audio/transcriptions",
        _form([], ["file"]),
        {},
        400,
        "model is required",
        id="transcription-model",
    ),
    pytest.param(
        "/v1/async/images/edits",
        _form([("model", MODEL), ("prompt", "p")], []),
        {},
        400,
        "at least one image is required",
        id="edit-image",
    ),
    pytest.param(
        "/v1/async/images/edits",
        _form([("model", MODEL)], ["image[]"]),
        {},
        400,
        "prompt is required",
        id="edit-prompt",
    ),
    pytest.param(
        "/v1/async/images/variations",
        _form([("model", MODEL), ("n", "x")], ["image"]),
        {},
        400,
        'invalid n value: strconv.Atoi: parsing "x": invalid syntax',
        id="variation-n",
    ),
    pytest.param(
        "/v1/async/images/variations",
        (b"model=x", "text/plain"),
        {},
        400,
        "failed to parse multipart form: content type is not multipart/form-data",
        id="multipart-not-multipart",
    ),
    pytest.param(
        "/v1/async/completions",
        _json({"model": MODEL, "prompt": "p", "stream": True}),
        {},
        400,
        "stream is not supported for async text completions",
        id="stream-text",
    ),
    pytest.param(
        "/v1/async/chat/completions",
        _json({**CHAT, "stream": True}),
        {},
        400,
        "stream is not supported for async chat completions",
        id="stream-chat",
    ),
    pytest.param(
        "/v1/async/responses",
        _json({"model": MODEL, "input": "x", "stream": True}),
        {},
        400,
        "stream is not supported for async responses",
        id="stream-responses",
    ),
    pytest.param(
        "/v1/async/images/generations",
        _json({"model": MODEL, "prompt": "c", "stream": True}),
        {},
        400,
        "stream is not supported for async image generations",
        id="stream-imagegen",
    ),
    pytest.param(
        "/v1/async/images/edits",
        _form([("model", MODEL), ("prompt", "p"), ("stream", "true")], ["image"]),
        {},
        400,
        "stream is not supported for async image edits",
        id="stream-edit",
    ),
    pytest.param(
        "/v1/async/audio/transcriptions",
        _form([("model", MODEL), ("stream", "true")], ["file"]),
        {},
        400,
        "stream is not supported for async transcriptions",
        id="stream-transcription",
    ),
    pytest.param(
        "/v1/async/audio/speech",
        _json({"model": MODEL, "input": "x", "voice": "v", "stream_format": "sse"}),
        {},
        400,
        "stream is not supported for async speech",
        id="stream-speech",
    ),
    *[
        pytest.param(
            path,
            body,
            {"x-bf-vk": "sk-bf-unknown"},
            400,
            "virtual key not found",
            id=f"unknown-vk-{rt.value}",
        )
        for rt in RequestType
        for path in [REQUEST_TYPES[rt].submit_path]
        for body in [valid_request(rt)]
    ],
    pytest.param(
        "/v1/async/chat/completions",
        _json({**CHAT, "pad": "x" * 70_000}),
        {},
        413,
        "request body exceeds the maximum size of 65536 bytes",
        id="too-large",
    ),
]


# Bifrost checks the body first and looks the virtual key up only for a valid one.
REFUSALS += [
    pytest.param(
        "/v1/async/chat/completions",
        (b"{oops", "application/json"),
        {"x-bf-vk": "sk-bf-unknown"},
        400,
        "invalid request format: Expecting property name enclosed in double quotes:"
        " line 1 column 2 (char 1)",
        id="malformed-json-before-unknown-vk",
    ),
    pytest.param(
        "/v1/async/images/edits",
        _form([("model", MODEL), ("prompt", "p"), ("n", "x")], ["image"]),
        {"x-bf-vk": "sk-bf-unknown"},
        400,
        'invalid n value: strconv.Atoi: parsing "x": invalid syntax',
        id="bad-form-before-unknown-vk",
    ),
    pytest.param(
        "/v1/async/images/generations",
        _json({"model": MODEL, "prompt": "c", "n": 1.5}),
        {},
        400,
        "invalid request format: field n has the wrong type (number)",
        id="imagegen-n-float",
    ),
    pytest.param(
        "/v1/async/chat/completions",
        (b'["not", "an", "object"]', "application/json"),
        {},
        400,
        "invalid request format: expected a JSON object, got array",
        id="json-not-an-object",
    ),
]


@pytest.mark.parametrize(("path", "request_body", "headers", "status", "message"), REFUSALS)
async def test_refused_submit_answers_the_contract_error_and_creates_nothing(
    client: Client,
    store: FakeJobStore,
    path: str,
    request_body: tuple[bytes, str],
    headers: dict[str, str],
    status: int,
    message: str,
) -> None:
    body, content_type = request_body
    response = await client.post(path, data=body, headers={"Content-Type": content_type, **headers})
    assert response.status == status
    assert response.content_type == "application/json"
    assert await response.json() == gateway_error(status, message)
    assert store.objects == {}


async def test_oversized_body_without_content_length_answers_413(
    client: Client, store: FakeJobStore
) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b"x" * 10_000

    response = await client.post(
        "/v1/async/chat/completions", data=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status == 413
    assert (await response.json())["status_code"] == 413
    assert store.objects == {}


@pytest.mark.parametrize(
    ("failure", "status"),
    [
        pytest.param(
            ApiError(503, "could not create the job: the job store is unavailable, retry later"),
            503,
            id="unavailable",
        ),
        pytest.param(
            ApiError(500, "could not store the request: the job store refused the request"),
            500,
            id="refused",
        ),
    ],
)
async def test_store_failure_answers_a_clean_5xx(
    client: Client, store: FakeJobStore, failure: ApiError, status: int
) -> None:
    store.fail_create = failure
    body, content_type = valid_request(RequestType.CHAT_COMPLETION)
    response = await client.post(
        "/v1/async/chat/completions", data=body, headers={"Content-Type": content_type}
    )
    assert response.status == status
    assert await response.json() == gateway_error(status, failure.message)


async def test_unusable_fallbacks_are_dropped_not_refused(
    client: Client, store: FakeJobStore
) -> None:
    body = {**CHAT, "fallbacks": ["gpt-4o", "acme/x", "local/echo", "openai/"]}
    response = await client.post("/v1/async/chat/completions", json=body)
    assert response.status == 202
    assert store.specs[(await response.json())["id"]].fallbacks == ("local/echo",)


@pytest.mark.parametrize(
    ("ttl", "stored"),
    [
        pytest.param("9223372036854775807", 9_223_372_036, id="int64-max"),
        pytest.param("99999999999999999999999", 1800, id="beyond-int64-is-default"),
    ],
)
async def test_huge_ttl_header_is_never_an_error(
    client: Client, store: FakeJobStore, ttl: str, stored: int
) -> None:
    response = await client.post(
        "/v1/async/chat/completions", json=CHAT, headers={"x-bf-async-job-result-ttl": ttl}
    )
    assert response.status == 202
    assert store.specs[(await response.json())["id"]].result_ttl_seconds == stored


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        pytest.param("GET", "/v1/async/chat/completions", 405, id="get-on-submit"),
        pytest.param("PUT", "/v1/async/ocr", 405, id="put-on-submit"),
        pytest.param("OPTIONS", "/v1/async/embeddings", 405, id="options-on-submit"),
        pytest.param("DELETE", f"/v1/async/rerank/{uuid.uuid4()}", 405, id="delete-on-poll"),
        pytest.param("GET", "/v1/async/chat", 404, id="unknown-async-path"),
        pytest.param("GET", "/v1/async/chat/completions/a/b", 404, id="poll-path-too-deep"),
        pytest.param("POST", "/v1/async/videos", 404, id="unknown-async-submit"),
    ],
)
async def test_wrong_method_or_path_answers_a_bifrost_error(
    client: Client, store: FakeJobStore, method: str, path: str, status: int
) -> None:
    response = await client.request(method, path)
    assert response.status == status
    document = await response.json()
    assert list(document) == ["is_bifrost_error", "status_code", "error", "extra_fields"]
    assert document["status_code"] == status
    assert document["extra_fields"] == {}
    assert store.objects == {}
    if status == 405:
        allowed = "POST" if method != "DELETE" else "GET, HEAD"
        assert response.headers["Allow"] == allowed


@pytest.mark.parametrize(
    ("path", "status"),
    [
        pytest.param("/v1/async/chat/completions", 405, id="submit-path"),
        pytest.param(f"/v1/async/chat/completions/{uuid.uuid4()}", 404, id="poll-path"),
    ],
)
async def test_head_answers_without_a_body_and_without_crashing(
    client: Client, path: str, status: int
) -> None:
    response = await client.head(path)
    assert response.status == status
    assert await response.read() == b""


@pytest.mark.parametrize(
    ("error", "status"),
    [
        pytest.param(
            KubeError(403, "Forbidden", "status unknown for quota: aj-asyncjobs-payloads"),
            503,
            id="quota-not-synced-yet",
        ),
        pytest.param(
            KubeError(403, "Forbidden", "exceeded quota: aj-asyncjobs-payloads"),
            500,
            id="quota-exceeded",
        ),
        pytest.param(KubeError(504, "Timeout", "took too long"), 503, id="timeout"),
    ],
)
def test_an_apiserver_refusal_is_a_503_only_when_retrying_can_help(
    error: KubeError, status: int
) -> None:
    assert store_module._unavailable("could not create the job", error).status == status
