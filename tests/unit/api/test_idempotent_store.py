"""The Kubernetes store under an idempotent submit whose job name is taken: the
apiserver's 409 AlreadyExists becomes JobExists with that job, and the only body removed
is this attempt's own request object, never the existing job's (its whole prefix)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from asyncjobs.api.store import JobCache, JobExists, KubeJobStore
from asyncjobs.core import payloads, resources
from asyncjobs.core.jobs import JobSpec, build_asyncjob
from asyncjobs.core.kube import KubeClient, KubeConfig
from asyncjobs.core.payloads import S3, PayloadRef
from asyncjobs.core.request_types import RequestType

NS = "jobs"
NOW = datetime(2026, 11, 30, tzinfo=UTC)
NAME = "6f1c2b1e-0c1d-4e5f-8a9b-0c1d2e3f4a5b"
BODY = b'{"model":"local/echo","messages":[{"role":"user","content":"hi"}]}'


class RecordingObjects:
    """An object store (request before job, as s3) that records what it is asked."""

    backend = S3
    stores_before_job = True
    deleted_with_job = False

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def put(
        self, job: Mapping[str, Any], kind: str, body: bytes, content_type: str, **kw: Any
    ) -> PayloadRef:
        ref: PayloadRef = kw["ref"]
        self.calls.append(("put", ref.name))
        return ref

    async def delete_body(self, ref: PayloadRef) -> None:
        self.calls.append(("delete_body", ref.name))

    async def delete_job(self, job_id: str) -> int:
        self.calls.append(("delete_job", job_id))
        return 0


def spec(attempt: int, body: bytes = BODY) -> JobSpec:
    return JobSpec(
        job_id=NAME,
        request_type=RequestType.CHAT_COMPLETION,
        model="local/echo",
        fallbacks=(),
        result_ttl_seconds=60,
        request_ref=payloads.describe(
            NAME, "request", body, "application/json", call=attempt, backend=S3
        ),
        submitted_at=NOW,
        request_id="first",
        idempotent=True,
    )


@pytest.fixture
async def taken() -> AsyncIterator[tuple[KubeJobStore, RecordingObjects, list[str]]]:
    """An apiserver where the job of NAME exists (another attempt's)."""
    existing = build_asyncjob(spec(1))
    existing["metadata"]["uid"] = "uid-first"
    deletes: list[str] = []

    async def create(_request: web.Request) -> web.Response:
        return web.json_response({"code": 409, "reason": "AlreadyExists"}, status=409)

    async def get(_request: web.Request) -> web.Response:
        return web.json_response(existing)

    async def delete(request: web.Request) -> web.Response:
        deletes.append(request.match_info["name"])
        return web.json_response({})

    app = web.Application()
    app.router.add_post(resources.asyncjobs_path(NS), create)
    app.router.add_get(resources.asyncjobs_path(NS, "{name}"), get)
    app.router.add_delete(resources.asyncjobs_path(NS, "{name}"), delete)
    objects = RecordingObjects()
    async with TestServer(app) as server:
        config = KubeConfig(server=str(server.make_url("")).rstrip("/"))
        async with KubeClient(config) as client:
            store = KubeJobStore(client, NS, JobCache(), clock=lambda: NOW, payloads=objects)  # type: ignore[arg-type]
            yield store, objects, deletes


async def test_a_taken_name_is_job_exists_and_only_this_attempts_request_is_removed(
    taken: tuple[KubeJobStore, RecordingObjects, list[str]],
) -> None:
    store, objects, deletes = taken
    second = spec(2)
    with pytest.raises(JobExists) as exists:
        await store.create(second, BODY)
    assert exists.value.view.job_id == NAME
    assert exists.value.view.request_id == "first"
    assert exists.value.view.request_sha256 == second.request_ref.sha256
    own = second.request_ref.name
    assert own == f"{NAME}/request-2"
    assert objects.calls == [("put", own), ("delete_body", own)]
    assert deletes == []  # the existing job is never deleted
