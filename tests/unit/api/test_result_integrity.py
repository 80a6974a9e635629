"""A completed job whose stored result is missing or corrupt: the pure judgment by table,
then the Kubernetes store carrying it out against a fake apiserver on a real socket
(the status patch with its precondition, a conflict, refused writes, the Event)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from asyncjobs.api import integrity
from asyncjobs.api.errors import ApiError
from asyncjobs.api.integrity import Cause, Changed, Fail, Gone
from asyncjobs.api.store import Finished, JobCache, KubeJobStore
from asyncjobs.core import payloads, resources, secret_payloads
from asyncjobs.core.jobs import JobView, Phase, format_time
from asyncjobs.core.kube import KubeClient, KubeConfig

NS = "ns"
JOB = "0b7f7f5e-3c1a-4d4e-9a51-6f1f2d0c9e11"
NOW = datetime(2026, 2, 19, 9, 0, 0, tzinfo=UTC)
RESULT = b'{"object":"chat.completion"}'
REF = payloads.describe(JOB, "result", RESULT, "application/json")


def completed_job(**metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": resources.API_VERSION,
        "kind": resources.KIND,
        "metadata": {
            "name": JOB,
            "namespace": NS,
            "uid": "uid-1",
            "generation": 1,
            "resourceVersion": "10",
            **metadata,
        },
        "spec": {
            "requestType": "chat_completion",
            "model": "openai/gpt-4o-mini",
            "submittedAt": "2026-02-19T08:59:00.000Z",
            "resultTTLSeconds": 600,
        },
        "status": {
            "phase": "Completed",
            "statusCode": 200,
            "completionTime": "2026-02-19T08:59:30.000Z",
            "expiresAt": "2026-02-19T09:09:30.000Z",
            "modelUsed": "openai/gpt-4o-mini",
            "resultRef": REF.to_dict(),
            "usage": {"total_tokens": 3},
            "conditions": [
                {
                    "type": "Complete",
                    "status": "True",
                    "reason": "Succeeded",
                    "message": "completed by openai/gpt-4o-mini",
                    "lastTransitionTime": "2026-02-19T08:59:30.000Z",
                }
            ],
        },
    }


READ = JobView.from_object(completed_job())


def with_status(**status: Any) -> dict[str, Any]:
    obj = completed_job()
    obj["status"].update(status)
    return obj


# --- the judgment ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param(completed_job(deletionTimestamp="2026-02-19T08:59:59Z"), id="deleting"),
        pytest.param(completed_job(uid="uid-2"), id="another-job-of-that-name"),
        pytest.param(with_status(expiresAt="2026-02-19T09:00:00.000Z"), id="expired"),
        pytest.param(with_status(phase="Done"), id="mangled"),
    ],
)
def test_a_job_deleted_or_expired_is_gone(obj: dict[str, Any]) -> None:
    assert integrity.judge(obj, READ, Cause.MISSING, NOW) == Gone()


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param(with_status(phase="Failed", resultRef=None), id="failed-meanwhile"),
        pytest.param(
            with_status(resultRef={**REF.to_dict(), "secretName": f"{JOB}-result-2"}),
            id="another-result",
        ),
    ],
)
def test_a_job_that_changed_since_it_was_read_is_answered_as_it_is_now(
    obj: dict[str, Any],
) -> None:
    assert integrity.judge(obj, READ, Cause.CORRUPT, NOW) == Changed(JobView.from_object(obj))


@pytest.mark.parametrize("cause", list(Cause))
def test_a_completed_job_with_an_unreadable_result_fails_on_the_version_judged(
    cause: Cause,
) -> None:
    judgment = integrity.judge(completed_job(), READ, cause, NOW)
    assert isinstance(judgment, Fail)
    assert judgment.message == integrity.MESSAGES[cause]
    assert judgment.patch["metadata"] == {"resourceVersion": "10"}
    status = judgment.patch["status"]
    assert (status["phase"], status["statusCode"]) == ("Failed", 500)
    assert (status["resultRef"], status["usage"]) == (None, None)  # merge patch: removed
    view = judgment.view
    assert (view.phase, view.status_code, view.result_ref) == (Phase.FAILED, 500, None)
    assert view.completed_at == format_time(NOW)
    assert view.expires_at == NOW + timedelta(seconds=600)
    assert view.error == {
        "is_bifrost_error": True,
        "status_code": 500,
        "error": {"message": integrity.MESSAGES[cause]},
        "extra_fields": {
            "provider": "openai",
            "model_requested": "gpt-4o-mini",
            "request_type": "chat_completion",
        },
    }


def test_merge_patched_follows_rfc_7386() -> None:
    target = {"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2]}
    patch = {"a": None, "b": {"c": None, "e": 4}, "l": [3], "n": {"x": None}}
    assert integrity.merge_patched(target, patch) == {"b": {"d": 3, "e": 4}, "l": [3], "n": {}}


# --- the Kubernetes store ---------------------------------------------------------------


class FakeApiserver:
    """One AsyncJob, its result Secrets and Events, with scripted refusals."""

    def __init__(self) -> None:
        self.job: dict[str, Any] | None = completed_job()
        self.secrets: dict[str, bytes] = {f"{REF.name}-0": RESULT}
        self.patches: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.refuse_patch = 0  # status to answer every status patch with (0: accept)
        self.refuse_events = 0
        self.secret_status = 0
        self.changed_before_next_patch = False  # another writer moves the job first

    async def get_job(self, request: web.Request) -> web.Response:
        if self.job is None or request.match_info["name"] != JOB:
            return web.json_response({"code": 404}, status=404)
        return web.json_response(self.job)

    async def patch_status(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/merge-patch+json"
        patch = await request.json()
        self.patches.append(patch)
        if self.job is None:
            return web.json_response({"code": 404}, status=404)
        if self.refuse_patch:
            return web.json_response({"code": self.refuse_patch}, status=self.refuse_patch)
        if self.changed_before_next_patch:
            self.changed_before_next_patch = False
            self._bump()
        wanted = patch.get("metadata", {}).get("resourceVersion")
        if wanted and wanted != self.job["metadata"]["resourceVersion"]:
            return web.json_response({"code": 409, "reason": "Conflict"}, status=409)
        self.job["status"] = integrity.merge_patched(self.job["status"], patch["status"])
        self._bump()
        return web.json_response(self.job)

    def _bump(self) -> None:
        assert self.job is not None
        metadata = self.job["metadata"]
        metadata["resourceVersion"] = str(int(metadata["resourceVersion"]) + 1)

    async def get_secret(self, request: web.Request) -> web.Response:
        if self.secret_status:
            return web.json_response({"code": self.secret_status}, status=self.secret_status)
        body = self.secrets.get(request.match_info["name"])
        if body is None:
            return web.json_response({"code": 404}, status=404)
        return web.json_response(
            {"data": {secret_payloads.DATA_KEY: base64.b64encode(body).decode()}}
        )

    async def post_event(self, request: web.Request) -> web.Response:
        if self.refuse_events:
            return web.json_response({"code": self.refuse_events}, status=self.refuse_events)
        event = await request.json()
        self.events.append(event)
        return web.json_response(event, status=201)


@pytest.fixture
async def apiserver() -> AsyncIterator[tuple[FakeApiserver, KubeJobStore]]:
    fake = FakeApiserver()
    app = web.Application()
    job_path = resources.asyncjobs_path(NS, "{name}")
    app.router.add_get(job_path, fake.get_job)
    app.router.add_patch(f"{job_path}/status", fake.patch_status)
    app.router.add_get(resources.secrets_path(NS, "{name}"), fake.get_secret)
    app.router.add_post(f"/api/v1/namespaces/{NS}/events", fake.post_event)
    async with TestServer(app) as server:
        config = KubeConfig(server=str(server.make_url("")).rstrip("/"))
        async with KubeClient(config) as client:
            yield fake, KubeJobStore(client, NS, JobCache(), clock=lambda: NOW)


async def test_stored_result_is_answered_as_is(
    apiserver: tuple[FakeApiserver, KubeJobStore],
) -> None:
    fake, store = apiserver
    assert await store.result(READ) == Finished(READ, RESULT)
    assert fake.patches == []


async def test_corrupt_result_fails_the_job_with_a_status_patch_an_event_and_the_cache(
    apiserver: tuple[FakeApiserver, KubeJobStore],
) -> None:
    fake, store = apiserver
    fake.secrets[f"{REF.name}-0"] = b'{"object":"chat.completion "}'
    finished = await store.result(READ)
    assert finished is not None
    assert finished.unreadable is Cause.CORRUPT
    assert finished.result is None
    assert finished.view.phase is Phase.FAILED
    assert finished.view.resource_version == "11"  # from the patch's answer
    assert [patch["metadata"] for patch in fake.patches] == [{"resourceVersion": "10"}]
    assert fake.job is not None
    assert fake.job["status"]["phase"] == "Failed"
    assert "resultRef" not in fake.job["status"]
    assert store.cache.get(JOB) == finished.view  # later polls answer failed at once
    [event] = fake.events
    assert event["type"] == "Warning"
    assert event["reason"] == "ResultUnreadable"
    assert event["message"] == integrity.MESSAGES[Cause.CORRUPT]
    assert event["involvedObject"] == {
        "apiVersion": resources.API_VERSION,
        "kind": resources.KIND,
        "name": JOB,
        "namespace": NS,
        "uid": "uid-1",
    }
    assert event["source"] == {"component": "asyncjobs-api"}
    assert event["firstTimestamp"] == "2026-02-19T09:00:00Z"


async def test_missing_result_of_a_job_that_changed_is_judged_again_on_the_new_version(
    apiserver: tuple[FakeApiserver, KubeJobStore],
) -> None:
    fake, store = apiserver
    fake.secrets.clear()
    fake.changed_before_next_patch = True
    finished = await store.result(READ)
    assert finished is not None
    assert (finished.view.phase, finished.unreadable) == (Phase.FAILED, Cause.MISSING)
    assert [patch["metadata"] for patch in fake.patches] == [
        {"resourceVersion": "10"},  # 409: another writer made it 11
        {"resourceVersion": "11"},
    ]
    assert len(fake.events) == 1


async def test_a_job_another_replica_failed_already_is_answered_without_a_write(
    apiserver: tuple[FakeApiserver, KubeJobStore],
) -> None:
    fake, store = apiserver
    fake.secrets.clear()
    assert fake.job is not None
    fake.job["status"] = integrity.merge_patched(
        fake.job["status"], {"phase": "Failed", "resultRef": None, "statusCode": 500}
    )
    finished = await store.result(READ)
    assert finished is not None
    assert (finished.view.phase, finished.unreadable) == (Phase.FAILED, None)
    assert (fake.patches, fake.events) == ([], [])


async def test_refused_status_write_and_event_still_answer_the_failed_job(
    apiserver: tuple[FakeApiserver, KubeJobStore],
) -> None:
    fake, store = apiserver
    fake.secrets.clear()
    fake.refuse_patch = fake.refuse_events = 403
    finished = await store.result(READ)
    assert finished is not None
    assert (finished.view.phase, finished.unreadable) == (Phase.FAILED, Cause.MISSING)
    assert finished.view.error is not None
    assert finished.view.error["error"]["message"] == integrity.MESSAGES[Cause.MISSING]
    assert store.cache.get(JOB) == finished.view
    assert fake.job is not None
    assert fake.job["status"]["phase"] == "Completed"


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"job": None}, id="deleted"),
        pytest.param({"deletionTimestamp": "2026-02-19T08:59:59Z"}, id="being-deleted"),
    ],
)
async def test_missing_result_of_a_job_being_deleted_is_gone(
    apiserver: tuple[FakeApiserver, KubeJobStore], change: dict[str, Any]
) -> None:
    fake, store = apiserver
    fake.secrets.clear()
    if "job" in change:
        fake.job = None
    else:
        assert fake.job is not None
        fake.job["metadata"].update(change)
    assert await store.result(READ) is None
    assert (fake.patches, fake.events) == ([], [])


async def test_apiserver_unavailable_while_reading_the_result_is_a_503(
    apiserver: tuple[FakeApiserver, KubeJobStore],
) -> None:
    fake, store = apiserver
    fake.secret_status = 503
    with pytest.raises(ApiError) as raised:
        await store.result(READ)
    assert raised.value.status == 503
    assert fake.patches == []
