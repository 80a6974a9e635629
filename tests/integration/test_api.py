"""The API as a real process against the real control plane.

Each test starts `python -m asyncjobs.api.main` with the plane's kubeconfig in a fresh
namespace, talks to it over HTTP, and checks what landed in the apiserver. The
operator's part (claiming, completing, failing a job) is played by patching the job's
status subresource and creating result Secrets, exactly as the operator writes them.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from asyncjobs.core import multipart, payloads, resources
from asyncjobs.core.jobs import format_time
from asyncjobs.core.kube import KubeClient
from asyncjobs.core.request_types import REQUEST_TYPES, BodyKind, RequestType
from tests.support import bodies
from tests.support.procs import ManagedProcess, free_port, python_module

MODEL = "local/echo"
KEY_A, KEY_A_ID = "sk-bf-integration-alpha", "team-alpha"
KEY_B = "sk-bf-integration-bravo"
MAX_BYTES = 2 * 1024 * 1024

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
FILE_FIELDS = {
    RequestType.TRANSCRIPTION: ("file", []),
    RequestType.IMAGE_EDIT: ("image[]", [("prompt", "add a hat")]),
    RequestType.IMAGE_VARIATION: ("image", [("n", "2")]),
}


def request_for(request_type: RequestType, payload: bytes = b"\x89PNG-bytes") -> tuple[bytes, str]:
    if REQUEST_TYPES[request_type].body is BodyKind.MULTIPART:
        file_field, fields = FILE_FIELDS[request_type]
        form = multipart.Form(
            fields=[("model", MODEL), *fields],
            files=[multipart.FilePart(file_field, "in.bin", "application/octet-stream", payload)],
        )
        return multipart.encode(form)
    return json.dumps({"model": MODEL, **JSON_BODIES[request_type]}).encode(), "application/json"


class Api:
    """One running API process and an HTTP session to it."""

    def __init__(self, process: ManagedProcess, base: str, session: aiohttp.ClientSession) -> None:
        self.process = process
        self.base = base
        self.session = session

    async def post(
        self, path: str, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        # A BytesIO keeps aiohttp from warning about (and blocking on) multi-MiB bodies.
        async with self.session.post(
            self.base + path,
            data=io.BytesIO(body),
            headers={"Content-Type": content_type, **(headers or {})},
        ) as response:
            return response.status, await response.json()

    async def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        async with self.session.get(self.base + path, headers=headers or {}) as response:
            return response.status, await response.json(content_type=None)

    async def submit(
        self, request_type: RequestType, headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        body, content_type = request_for(request_type)
        status, document = await self.post(
            REQUEST_TYPES[request_type].submit_path, body, content_type, headers
        )
        assert status == 202, document
        return dict(document)

    async def poll_until(
        self, path: str, status: int, headers: dict[str, str] | None = None, timeout: float = 10
    ) -> Any:
        """Polls until the answer has the wanted status (the watch may lag a moment)."""
        deadline = time.monotonic() + timeout
        while True:
            got, document = await self.get(path, headers)
            if got == status or time.monotonic() > deadline:
                assert got == status, document
                return document
            await asyncio.sleep(0.05)


ApiFactory = Callable[..., Awaitable[Api]]


@pytest.fixture
async def start_api(
    kubeconfig_path: str, namespace: str, log_dir: Path
) -> AsyncIterator[ApiFactory]:
    processes: list[ManagedProcess] = []
    async with aiohttp.ClientSession() as session:

        async def start(*extra: str, name: str = "api") -> Api:
            port = free_port()
            process = ManagedProcess(
                f"{name}-{len(processes)}",
                python_module(
                    "asyncjobs.api.main",
                    "--kubeconfig",
                    kubeconfig_path,
                    "--namespace",
                    namespace,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--max-request-bytes",
                    str(MAX_BYTES),
                    "--default-result-ttl",
                    "600",
                    *extra,
                ),
                log_dir=log_dir,
            ).start()
            processes.append(process)
            base = f"http://127.0.0.1:{port}"
            await asyncio.to_thread(process.wait_http_ok, f"{base}/readyz", 60)
            return Api(process, base, session)

        try:
            yield start
        finally:
            for process in processes:
                process.stop()
                log_text = process.log_tail(1_000_000)
                # Content never reaches the logs, whatever happened in the test.
                assert "once upon" not in log_text
                assert KEY_A not in log_text


async def create_virtual_key(
    kube: KubeClient, namespace: str, name: str, key: str, key_id: str | None
) -> None:
    data = {"key": base64.b64encode(key.encode()).decode()}
    if key_id:
        data["id"] = base64.b64encode(key_id.encode()).decode()
    await kube.create(
        resources.secrets_path(namespace),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "labels": {resources.LABEL_VIRTUAL_KEY: "true"}},
            "data": data,
        },
    )


@pytest.fixture
async def api(start_api: ApiFactory, kube: KubeClient, namespace: str) -> Api:
    await create_virtual_key(kube, namespace, "vk-alpha", KEY_A, KEY_A_ID)
    await create_virtual_key(kube, namespace, "vk-bravo", KEY_B, None)
    return await start_api()


async def get_job(kube: KubeClient, namespace: str, job_id: str) -> dict[str, Any]:
    return await kube.get(resources.asyncjobs_path(namespace, job_id))


async def finish(
    kube: KubeClient,
    namespace: str,
    job_id: str,
    *,
    result: bytes | None = None,
    error: dict[str, Any] | None = None,
    status_code: int | None = 200,
    completed: datetime | None = None,
    ttl: timedelta = timedelta(minutes=10),
) -> datetime:
    """Completes (with a result Secret) or fails the job, as the operator will."""
    job = await get_job(kube, namespace, job_id)
    completed = completed or datetime.now(UTC)
    status: dict[str, Any] = {
        "phase": "Completed" if error is None else "Failed",
        "completionTime": completed.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "expiresAt": (completed + ttl).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if status_code is not None:
        status["statusCode"] = status_code
    if result is not None:
        async with bodies.open_bodies(kube, namespace) as store:
            ref = await store.put(job, "result", result, "application/json", call=1)
        status["resultRef"] = ref.to_dict()
    if error is not None:
        status["error"] = error
    await kube.merge_patch(
        resources.asyncjobs_path(namespace, job_id, status=True), {"status": status}
    )
    return completed.replace(microsecond=0)


def poll_path(request_type: RequestType, job_id: str) -> str:
    return f"{REQUEST_TYPES[request_type].submit_path}/{job_id}"


@pytest.mark.parametrize("request_type", list(RequestType), ids=lambda t: t.value)
async def test_submit_stores_the_job_and_its_body_in_the_apiserver(
    api: Api, kube: KubeClient, namespace: str, request_type: RequestType
) -> None:
    body, content_type = request_for(request_type)
    status, document = await api.post(
        REQUEST_TYPES[request_type].submit_path,
        body,
        content_type,
        {"x-bf-async-job-result-ttl": "90", "x-bf-vk": KEY_A},
    )
    assert status == 202
    job = await get_job(kube, namespace, document["id"])
    spec = job["spec"]
    assert spec["requestType"] == request_type.value
    assert spec["model"] == MODEL
    assert spec["resultTTLSeconds"] == 90
    assert spec["submittedAt"] == document["created_at"]
    assert spec["requestId"] == document["request_id"]
    assert spec["virtualKeyId"] == KEY_A_ID
    stored_type = content_type if content_type.startswith("multipart/") else "application/json"
    described = payloads.describe(
        document["id"], "request", body, stored_type, backend=bodies.backend()
    )
    assert spec["requestRef"] == described.to_dict()
    async with bodies.open_bodies(kube, namespace) as store:
        assert await store.get(described, owner=job) == body
    if bodies.backend() == payloads.SECRETS:
        secret = await kube.get(resources.secrets_path(namespace, f"{document['id']}-request-0"))
        assert secret["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
        assert secret["metadata"]["labels"][resources.LABEL_JOB_ID] == document["id"]
    assert KEY_A not in json.dumps(job)
    # The job polls as pending at once, on its own family.
    polled = await api.poll_until(poll_path(request_type, document["id"]), 202, {"x-bf-vk": KEY_A})
    assert polled == document


async def test_large_body_is_stored_whole_and_reads_back(
    api: Api, kube: KubeClient, namespace: str
) -> None:
    body, content_type = request_for(RequestType.IMAGE_EDIT, payload=b"\x01" * 1_500_000)
    status, document = await api.post("/v1/async/images/edits", body, content_type)
    assert status == 202
    job = await get_job(kube, namespace, document["id"])
    ref = payloads.PayloadRef.from_dict(job["spec"]["requestRef"])
    # Secrets hold 768 KiB each; an object holds the whole body.
    assert ref.chunks == (2 if bodies.backend() == payloads.SECRETS else 1)
    async with bodies.open_bodies(kube, namespace) as store:
        assert await store.get(ref) == body


async def test_completed_job_polls_field_by_field(
    api: Api, kube: KubeClient, namespace: str
) -> None:
    document = await api.submit(RequestType.CHAT_COMPLETION)
    result = b'{"id":"chatcmpl-1","choices":[{"message":{"role":"assistant","content":"hey"}}]}'
    completed = await finish(kube, namespace, document["id"], result=result)
    polled = await api.poll_until(poll_path(RequestType.CHAT_COMPLETION, document["id"]), 200)
    assert list(polled)[:2] == ["id", "request_id"]
    assert polled == {
        "id": document["id"],
        "request_id": document["request_id"],
        "status": "completed",
        "created_at": document["created_at"],
        "completed_at": format_time(completed),
        "expires_at": format_time(completed + timedelta(minutes=10)),
        "status_code": 200,
        "result": json.loads(result),
    }


async def test_failed_job_polls_with_error_and_status_code(
    api: Api, kube: KubeClient, namespace: str
) -> None:
    document = await api.submit(RequestType.EMBEDDING)
    error = {
        "is_bifrost_error": False,
        "status_code": 429,
        "error": {"type": "rate_limit_error", "message": "Too many requests"},
        "extra_fields": {"provider": "local", "model_requested": "echo"},
    }
    completed = await finish(kube, namespace, document["id"], error=error, status_code=429)
    polled = await api.poll_until(poll_path(RequestType.EMBEDDING, document["id"]), 200)
    assert list(polled)[:2] == ["id", "request_id"]
    assert polled == {
        "id": document["id"],
        "request_id": document["request_id"],
        "status": "failed",
        "created_at": document["created_at"],
        "completed_at": format_time(completed),
        "expires_at": format_time(completed + timedelta(minutes=10)),
        "status_code": 429,
        "error": error,
    }


async def test_failed_job_without_status_code_reports_500(
    api: Api, kube: KubeClient, namespace: str
) -> None:
    document = await api.submit(RequestType.RERANK)
    error = {"is_bifrost_error": True, "error": {"message": "boom"}, "extra_fields": {}}
    await finish(kube, namespace, document["id"], error=error, status_code=None)
    polled = await api.poll_until(poll_path(RequestType.RERANK, document["id"]), 200)
    assert polled["status_code"] == 500
    assert polled["error"] == error


async def test_expired_job_answers_404_even_before_deletion(
    api: Api, kube: KubeClient, namespace: str
) -> None:
    document = await api.submit(RequestType.OCR)
    await finish(
        kube,
        namespace,
        document["id"],
        result=b"{}",
        completed=datetime.now(UTC) - timedelta(minutes=5),
        ttl=timedelta(minutes=1),
    )
    path = poll_path(RequestType.OCR, document["id"])
    polled = await api.poll_until(path, 404)
    assert polled["error"] == {"message": "job not found or expired"}
    # The object is still there: expiry is checked on read, not by deletion.
    assert (await get_job(kube, namespace, document["id"]))["metadata"]["name"] == document["id"]


@pytest.mark.parametrize(
    ("headers", "status", "message"),
    [
        pytest.param({}, 404, "virtual key is required", id="none"),
        pytest.param({"x-bf-vk": KEY_A}, 202, None, id="x-bf-vk"),
        pytest.param({"Authorization": f"Bearer {KEY_A}"}, 202, None, id="bearer"),
        pytest.param({"x-api-key": KEY_A}, 202, None, id="x-api-key"),
        pytest.param({"x-goog-api-key": KEY_A}, 202, None, id="x-goog-api-key"),
        pytest.param({"x-bf-vk": KEY_B}, 404, "virtual key mismatch", id="other-key"),
        pytest.param({"x-api-key": "sk-bf-nobody"}, 404, "virtual key not found", id="unknown-key"),
    ],
)
async def test_virtual_key_scoping_in_every_header_form(
    api: Api, headers: dict[str, str], status: int, message: str | None
) -> None:
    document = await api.submit(RequestType.CHAT_COMPLETION, {"Authorization": f"Bearer {KEY_A}"})
    got, polled = await api.get(poll_path(RequestType.CHAT_COMPLETION, document["id"]), headers)
    assert got == status
    if message is None:
        assert polled == document
    else:
        assert polled["error"] == {"message": message}


async def test_key_without_id_records_its_secret_name_and_unknown_key_creates_nothing(
    api: Api, kube: KubeClient, namespace: str
) -> None:
    document = await api.submit(RequestType.RESPONSES, {"x-goog-api-key": KEY_B})
    assert (await get_job(kube, namespace, document["id"]))["spec"]["virtualKeyId"] == "vk-bravo"
    body, content_type = request_for(RequestType.RESPONSES)
    status, refused = await api.post(
        "/v1/async/responses", body, content_type, {"x-bf-vk": "sk-bf-nobody"}
    )
    assert (status, refused["error"]) == (400, {"message": "virtual key not found"})
    jobs = await kube.list(resources.asyncjobs_path(namespace))
    assert [job["metadata"]["name"] for job in jobs["items"]] == [document["id"]]


async def test_a_key_created_while_running_is_accepted(
    api: Api, kube: KubeClient, namespace: str
) -> None:
    await create_virtual_key(kube, namespace, "vk-late", "sk-bf-late-key", "late")
    body, content_type = request_for(RequestType.SPEECH)
    deadline = time.monotonic() + 10
    while True:
        status, document = await api.post(
            "/v1/async/audio/speech", body, content_type, {"x-bf-vk": "sk-bf-late-key"}
        )
        if status == 202 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert status == 202
    assert (await get_job(kube, namespace, document["id"]))["spec"]["virtualKeyId"] == "late"


async def test_second_replica_answers_polls_for_jobs_the_first_created(
    api: Api, start_api: ApiFactory, kube: KubeClient, namespace: str
) -> None:
    second = await start_api(name="replica")
    document = await api.submit(RequestType.IMAGE_GENERATION)
    # At once: the second replica may not have watched it yet, so it reads it directly.
    status, polled = await second.get(poll_path(RequestType.IMAGE_GENERATION, document["id"]))
    assert (status, polled) == (202, document)
    completed = await finish(kube, namespace, document["id"], result=b'{"data":[{"url":"u"}]}')
    polled = await second.poll_until(poll_path(RequestType.IMAGE_GENERATION, document["id"]), 200)
    assert polled["completed_at"] == format_time(completed)
    assert polled["result"] == {"data": [{"url": "u"}]}


async def test_oversized_submit_answers_413_and_leaves_nothing(
    api: Api, kube: KubeClient, namespace: str
) -> None:
    body, content_type = request_for(RequestType.TRANSCRIPTION, payload=b"\x00" * (MAX_BYTES + 1))
    status, document = await api.post("/v1/async/audio/transcriptions", body, content_type)
    assert status == 413
    assert document == {
        "is_bifrost_error": False,
        "status_code": 413,
        "error": {"message": f"request body exceeds the maximum size of {MAX_BYTES} bytes"},
        "extra_fields": {},
    }
    assert (await kube.list(resources.asyncjobs_path(namespace)))["items"] == []
    assert await bodies.stored_bodies(kube, namespace) == 0


async def test_a_full_backlog_answers_429_and_creates_nothing(
    start_api: ApiFactory, kube: KubeClient, namespace: str
) -> None:
    # No operator runs: the first two jobs stay pending and fill a backlog of two.
    api = await start_api("--max-pending-jobs", "2")
    first = await api.submit(RequestType.CHAT_COMPLETION)
    await api.submit(RequestType.EMBEDDING)
    # The cap counts what the watch has delivered; wait until both are in the cache.
    await api.poll_until(poll_path(RequestType.CHAT_COMPLETION, first["id"]), 202)
    deadline = time.monotonic() + 10
    while True:
        async with api.session.post(
            api.base + "/v1/async/chat/completions",
            data=request_for(RequestType.CHAT_COMPLETION)[0],
            headers={"Content-Type": "application/json"},
        ) as response:
            status, retry_after = response.status, response.headers.get("Retry-After")
            document = await response.json()
        if status == 429 or time.monotonic() > deadline:
            break
    assert (status, retry_after) == (429, "5"), document
    assert document["error"]["message"].startswith("backlog full: ")
    jobs = (await kube.list(resources.asyncjobs_path(namespace)))["items"]
    assert len(jobs) <= 3, "at most one submit raced the watch; the refused one wrote nothing"


async def test_invalid_submit_leaves_nothing(api: Api, kube: KubeClient, namespace: str) -> None:
    status, document = await api.post(
        "/v1/async/chat/completions", b'{"model":"local/echo"}', "application/json"
    )
    assert (status, document["error"]) == (
        400,
        {"message": "messages is required for chat completion"},
    )
    assert (await kube.list(resources.asyncjobs_path(namespace)))["items"] == []


async def test_the_crd_limits_are_accepted_by_the_apiserver_and_one_past_them_refused(
    api: Api, kube: KubeClient, namespace: str
) -> None:
    """The API checks exactly what the CRD refuses: at the limits the apiserver stores the
    job; one past them is a 400 BifrostError (a 500 and a traceback before)."""
    longest = "local/" + "m" * 250
    at_limits = {
        "model": longest,
        "fallbacks": [longest] * 16,
        **JSON_BODIES[RequestType.CHAT_COMPLETION],
    }
    status, document = await api.post(
        "/v1/async/chat/completions", json.dumps(at_limits).encode(), "application/json"
    )
    assert status == 202, document
    spec = (await get_job(kube, namespace, document["id"]))["spec"]
    assert (len(spec["model"]), len(spec["fallbacks"])) == (256, 16)
    body, content_type = request_for(RequestType.TRANSCRIPTION)
    padded = f"{content_type}; x-padding={'p' * (256 - len(content_type) - 12)}"
    assert len(padded) == 256
    status, document = await api.post("/v1/async/audio/transcriptions", body, padded)
    assert status == 202, document
    assert (await get_job(kube, namespace, document["id"]))["spec"]["requestRef"][
        "contentType"
    ] == padded

    refusals = [
        ({**at_limits, "model": longest + "m"}, "model must be at most 256 characters"),
        ({**at_limits, "fallbacks": [MODEL] * 17}, "at most 16 fallbacks are allowed"),
        ({**at_limits, "model": "local/a\nb"}, "model must not contain a line break"),
    ]
    for refused, message in refusals:
        status, document = await api.post(
            "/v1/async/chat/completions", json.dumps(refused).encode(), "application/json"
        )
        assert (status, document["error"]) == (400, {"message": message})
    deep = b'{"model":"local/echo","messages":' + b"[" * 3000 + b"]" * 3000 + b"}"
    status, document = await api.post("/v1/async/chat/completions", deep, "application/json")
    assert (status, document["error"]["message"]) == (
        400,
        "invalid request format: JSON nested deeper than 64 levels",
    )
    assert len((await kube.list(resources.asyncjobs_path(namespace)))["items"]) == 2
    assert "Traceback" not in api.process.log_tail(1_000_000)


async def test_a_key_header_that_is_not_utf8_answers_400_without_a_traceback(
    api: Api, kube: KubeClient, namespace: str
) -> None:
    port = int(api.base.rsplit(":", 1)[1])
    body, _ = request_for(RequestType.CHAT_COMPLETION)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /v1/async/chat/completions HTTP/1.1\r\nHost: api\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nx-bf-vk: sk-bf-\xff\xfe\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert int(head.split()[1]) == 400
    assert json.loads(payload)["error"] == {"message": "invalid x-bf-vk header: not valid UTF-8"}
    assert (await kube.list(resources.asyncjobs_path(namespace)))["items"] == []
    assert "Traceback" not in api.process.log_tail(1_000_000)


async def test_post_on_a_poll_path_answers_405_and_unknown_job_404(api: Api) -> None:
    document = await api.submit(RequestType.CHAT_COMPLETION)
    path = poll_path(RequestType.CHAT_COMPLETION, document["id"])
    status, answer = await api.post(path, b"{}", "application/json")
    assert (status, answer["status_code"]) == (405, 405)
    status, answer = await api.get(
        poll_path(RequestType.CHAT_COMPLETION, "0" * 8 + "-0000-4000-8000-" + "0" * 12)
    )
    assert (status, answer["error"]) == (404, {"message": "job not found or expired"})
    status, answer = await api.get(poll_path(RequestType.TEXT_COMPLETION, document["id"]))
    assert (status, answer["error"]) == (404, {"message": "operation type mismatch"})


async def test_deleted_job_disappears_from_polls(
    api: Api, kube: KubeClient, namespace: str
) -> None:
    document = await api.submit(RequestType.OCR)
    path = poll_path(RequestType.OCR, document["id"])
    await api.poll_until(path, 202)
    await kube.delete(resources.asyncjobs_path(namespace, document["id"]))
    polled = await api.poll_until(path, 404)
    assert polled["error"] == {"message": "job not found or expired"}


async def test_metrics_count_submits_and_cache_size(api: Api) -> None:
    document = await api.submit(RequestType.CHAT_COMPLETION)
    await api.poll_until(poll_path(RequestType.CHAT_COMPLETION, document["id"]), 202)
    async with api.session.get(api.base + "/metrics") as response:
        text = await response.text()
    assert 'asyncjobs_api_jobs_submitted_total{request_type="chat_completion"} 1.0' in text
    assert "asyncjobs_api_cache_jobs 1.0" in text
    assert document["id"] not in text


@pytest.mark.parametrize(
    ("path", "body", "request_type"),
    [
        pytest.param(
            "/openai/v1/responses",
            {"model": "local/echo", "input": "hello"},
            RequestType.RESPONSES,
            id="openai-responses",
        ),
        pytest.param(
            "/anthropic/v1/messages",
            {
                "model": "local/echo",
                "max_tokens": 8,
                "messages": [{"role": "user", "content": "x"}],
            },
            RequestType.CHAT_COMPLETION,
            id="anthropic-messages",
        ),
    ],
)
async def test_provider_route_submits_with_x_bf_async_and_retrieves_with_x_bf_async_id(
    api: Api,
    kube: KubeClient,
    namespace: str,
    path: str,
    body: dict[str, Any],
    request_type: RequestType,
) -> None:
    raw = json.dumps(body).encode()
    status, submitted = await api.post(path, raw, "application/json", {"x-bf-async": "1"})
    assert status == 200
    job = await get_job(kube, namespace, submitted["id"])
    assert job["spec"]["requestType"] == request_type.value
    status, pending = await api.post(
        path, b"", "application/json", {"x-bf-async-id": submitted["id"]}
    )
    assert (status, pending["id"]) == (200, submitted["id"])
    error = {"is_bifrost_error": False, "error": {"message": "upstream down"}, "extra_fields": {}}
    await finish(kube, namespace, submitted["id"], error=error, status_code=503)
    deadline = time.monotonic() + 10
    while True:
        status, failed = await api.post(
            path, b"", "application/json", {"x-bf-async-id": submitted["id"]}
        )
        if status == 503 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert status == 503
    assert "upstream down" in json.dumps(failed)
