"""A poll of a large result: written as stored, in slices, and the body read once from
its chunk Secrets, so the API holds about two copies of it, not four or five."""

from __future__ import annotations

import base64
import json
import tracemalloc
from datetime import timedelta

from aiohttp.test_utils import TestClient, TestServer

from asyncjobs.api import submit_and_poll
from asyncjobs.api.app import create_app
from asyncjobs.api.settings import Settings
from asyncjobs.api.virtual_keys import KeyRing
from asyncjobs.core.jobs import JobView
from asyncjobs.core.secret_payloads import SecretPayloads
from tests.support.json_secrets import SecretBackedStore, SecretsAsJson
from tests.unit.api.fakes import NOW, FakeClock

MIB = 1024 * 1024
JOB = "0b8f6a52-4a43-4d2b-9d59-3f7c2f1f4a11"
PATH = f"/v1/async/images/generations/{JOB}"


def image_result(size: int) -> bytes:
    raw = bytes(range(256)) * (size * 3 // 4 // 256)
    image = {"b64_json": base64.b64encode(raw).decode()}
    return json.dumps({"created": 1, "data": [image]}).encode()


async def completed_store(result: bytes) -> tuple[SecretBackedStore, FakeClock]:
    clock = FakeClock()
    store = SecretBackedStore(SecretPayloads(SecretsAsJson(), "unit"), clock)
    store.put_job(JOB, "image_generation")
    await store.complete_large(JOB, result)
    clock.now = NOW + timedelta(seconds=5)
    return store, clock


def settings() -> Settings:
    return Settings(namespace="unit", providers=frozenset({"local"}))


async def test_a_large_result_answers_the_same_document_as_a_small_one() -> None:
    result = image_result(3 * MIB)
    store, clock = await completed_store(result)
    app = create_app(settings(), store=store, keys=KeyRing(), clock=clock)
    async with TestClient(TestServer(app)) as client, client.get(PATH) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"] == "application/json; charset=utf-8"
        body = await answer.read()
        assert int(answer.headers["Content-Length"]) == len(body)
    view = JobView.from_object(store.objects[JOB])
    assert body == submit_and_poll.job_document(view, result)
    document = json.loads(body)
    assert document["status"] == "completed"
    assert document["result"] == json.loads(result)


async def test_a_poll_holds_about_two_copies_of_a_large_result() -> None:
    size = 8 * MIB
    store, clock = await completed_store(image_result(size))
    app = create_app(settings(), store=store, keys=KeyRing(), clock=clock)
    async with TestClient(TestServer(app)) as client:
        tracemalloc.start()
        try:
            before, _ = tracemalloc.get_traced_memory()
            async with client.get(PATH) as answer:
                assert answer.status == 200
                async for _ in answer.content.iter_chunked(64 * 1024):
                    pass
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    # The chunks and the joined body (2x); assembling the document and reading every
    # chunk Secret before decoding one made it more than 4x.
    assert (peak - before) / size < 2.5
