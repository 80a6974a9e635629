"""The s3 payload backend against a real S3 server (SeaweedFS, tools/s3server.py): round
trips, checksums, ownership, finding an interrupted call's result, deletion, and the
errors a caller sees when the store is down or refuses the credentials."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import uuid
from collections.abc import AsyncIterator

import pytest

from asyncjobs.core import payloads
from asyncjobs.core.payloads import (
    PayloadCorrupt,
    PayloadMissing,
    PayloadNotOwned,
    PayloadStoreError,
)
from asyncjobs.core.s3_payloads import S3Payloads, S3Settings, open_s3_payloads
from tests.support import bodies
from tests.support.procs import free_port

pytestmark = bodies.needs_backend("s3")


def settings() -> S3Settings:
    return S3Settings(
        bucket=os.environ["ASYNCJOBS_S3_BUCKET"],
        endpoint=os.environ["ASYNCJOBS_S3_ENDPOINT"],
        region=os.environ.get("ASYNCJOBS_S3_REGION", "us-east-1"),
        prefix=f"test-{uuid.uuid4().hex[:8]}/",
        path_style=True,
        timeout=3.0,
    )


@pytest.fixture
async def store() -> AsyncIterator[S3Payloads]:
    async with open_s3_payloads(settings()) as opened:
        yield opened


def job(name: str | None = None, uid: str = "uid-1") -> dict[str, dict[str, str]]:
    return {"metadata": {"name": name or str(uuid.uuid4()), "uid": uid}}


async def test_a_body_round_trips_with_its_checksum(store: S3Payloads) -> None:
    owner = job()
    body = os.urandom(3 * 1024 * 1024)  # larger than a Secret chunk: still one object
    ref = await store.put(owner, "request", body, "application/octet-stream")
    assert ref.backend == payloads.S3
    assert ref.name == f"{owner['metadata']['name']}/request"
    assert (ref.chunks, ref.size, ref.sha256) == (1, len(body), hashlib.sha256(body).hexdigest())
    assert payloads.PayloadRef.from_dict(ref.to_dict()) == ref
    assert "objectKey" in ref.to_dict()
    assert await store.get(ref, owner=owner) == body
    # Writing the same bytes again (an answer lost on the way) is harmless.
    assert await store.put(owner, "request", body, "application/octet-stream") == ref


async def test_changed_missing_and_foreign_bodies_are_refused(store: S3Payloads) -> None:
    owner = job()
    ref = await store.put(owner, "request", b'{"prompt": "mine"}', "application/json")
    await bodies.corrupt(store, ref)
    with pytest.raises(PayloadCorrupt):
        await store.get(ref)
    await bodies.remove(store, ref)
    with pytest.raises(PayloadMissing):
        await store.get(ref)
    # A job pointed at another job's object never reads it.
    other = await store.put(job(), "request", b'{"prompt": "theirs"}', "application/json")
    with pytest.raises(PayloadNotOwned):
        await store.get(other, owner=owner)


async def test_find_result_wants_this_jobs_intact_object(store: S3Payloads) -> None:
    owner = job()
    name = owner["metadata"]["name"]
    assert await store.find_result(owner, 1) is None
    ref = await store.put(owner, "result", b'{"ok": true}', "application/json", call=1)
    assert await store.find_result(owner, 1) == (ref, b'{"ok": true}')
    # The same name, another uid: an earlier job of that name left it.
    assert await store.find_result(job(name, uid="uid-2"), 1) is None
    await bodies.corrupt(store, ref)
    assert await store.find_result(owner, 1) is None


async def test_delete_job_removes_only_that_jobs_objects(store: S3Payloads) -> None:
    owner, neighbour = job(), job()
    await store.put(owner, "request", b"{}", "application/json")
    await store.put(owner, "result", b"{}", "application/json", call=1)
    await store.put(owner, "result", b"{}", "application/json", call=2)
    kept = await store.put(neighbour, "request", b"{}", "application/json")
    assert await store.delete_job(owner["metadata"]["name"]) == 3
    assert await bodies.object_keys(store, owner["metadata"]["name"]) == []
    assert await store.get(kept) == b"{}"
    assert await store.delete_job(owner["metadata"]["name"]) == 0


async def test_a_store_that_is_down_is_a_transient_error() -> None:
    down = dataclasses.replace(settings(), endpoint=f"http://127.0.0.1:{free_port()}")
    async with open_s3_payloads(down) as store:
        with pytest.raises(PayloadStoreError) as raised:
            await store.put(job(), "request", b"{}", "application/json")
    assert raised.value.transient


async def test_refused_credentials_are_a_lasting_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    async with open_s3_payloads(settings()) as store:
        with pytest.raises(PayloadStoreError) as raised:
            await store.put(job(), "request", b"{}", "application/json")
    assert not raised.value.transient
