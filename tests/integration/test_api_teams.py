"""Request ids, idempotent submits and the job list through real API processes, the
real operator (with the offline `local` provider) and the apiserver, with the payload
backend the run selects (ASYNCJOBS_PAYLOADS): two API replicas take the same
Idempotency-Key at once and make one job, which the operator runs; the key reused for
another body is 409 on either replica; the job lists for its key with its request id,
and the CRD refuses a request id the API would never write."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asyncjobs.core import resources
from asyncjobs.core.kube import KubeClient, KubeError
from asyncjobs.core.payloads import PayloadRef
from tests.integration.operator_support import local_providers, running_operator
from tests.integration.test_api import (  # noqa: F401 - start_api is a fixture
    KEY_A,
    KEY_A_ID,
    Api,
    ApiFactory,
    create_virtual_key,
    start_api,
)
from tests.integration.test_api_half_way import restricted_identity
from tests.support import bodies

CHAT = "/v1/async/chat/completions"


def chat(text: str) -> bytes:
    return json.dumps(
        {"model": "local/echo", "messages": [{"role": "user", "content": text}]}
    ).encode()


@pytest.fixture
def operator(kubeconfig_path: str, namespace: str, log_dir: Path, tmp_path: Path) -> Iterator[None]:
    with running_operator(
        kubeconfig_path, namespace, local_providers(tmp_path), log_dir
    ) as running:
        running.start()
        yield


async def submit(api: Api, body: bytes, **headers: str) -> tuple[int, Any]:
    return await api.post(CHAT, body, "application/json", headers)


async def test_one_key_at_two_replicas_makes_one_job_that_runs_and_lists(
    start_api: ApiFactory,  # noqa: F811 - the imported fixture
    operator: None,
    kube: KubeClient,
    namespace: str,
) -> None:
    await create_virtual_key(kube, namespace, "vk-alpha", KEY_A, KEY_A_ID)
    first, second = await start_api(), await start_api()
    key = {"x-bf-vk": KEY_A, "Idempotency-Key": "order-1234"}
    answers = await asyncio.gather(
        submit(first, chat("count to three"), **key, **{"x-request-id": "trace-one"}),
        submit(second, chat("count to three"), **key, **{"x-request-id": "trace-two"}),
    )
    assert [status for status, _ in answers] == [202, 202], answers
    (_, one), (_, two) = answers
    assert one["id"] == two["id"]
    # Whichever replica created the job, its request id is the one both answer.
    assert one["request_id"] == two["request_id"] in {"trace-one", "trace-two"}
    jobs = (await kube.list(resources.asyncjobs_path(namespace)))["items"]
    assert [job["metadata"]["name"] for job in jobs] == [one["id"]]
    assert jobs[0]["spec"]["requestId"] == one["request_id"]

    # The operator runs it from the stored request: the replay's body was the same.
    done = await second.poll_until(f"{CHAT}/{one['id']}", 200, {"x-bf-vk": KEY_A}, timeout=60)
    assert done["status"] == "completed", done
    assert list(done)[:2] == ["id", "request_id"]
    assert done["request_id"] == one["request_id"]

    for api in (first, second):
        status, refused = await submit(api, chat("count to four"), **key)
        assert status == 409, refused
        assert refused["error"]["message"].startswith("Idempotency-Key was already used")
        status, replay = await submit(api, chat("count to three"), **key)
        assert (status, replay["id"], replay["status"]) == (202, one["id"], "completed")
    assert len((await kube.list(resources.asyncjobs_path(namespace)))["items"]) == 1

    # The list, from each replica's cache: the key's job with its request id, no result.
    for api in (first, second):
        status, listed = await api.get("/v1/async/jobs", {"x-bf-vk": KEY_A})
        assert status == 200, listed
        (item,) = listed["data"]
        assert (item["id"], item["request_id"], item["status"]) == (
            one["id"],
            one["request_id"],
            "completed",
        )
        assert (item["request_type"], item["model"]) == ("chat_completion", "local/echo")
        assert "result" not in item
        status, anonymous = await api.get("/v1/async/jobs")
        assert (status, anonymous["data"]) == (200, [])

    # The access log carries each request's id (and never the body).
    assert "trace-one" in first.process.log_tail(1_000_000) + second.process.log_tail(1_000_000)


async def test_without_a_key_two_submits_make_two_jobs(
    start_api: ApiFactory,  # noqa: F811 - the imported fixture
    kube: KubeClient,
    namespace: str,
) -> None:
    api = await start_api()
    ids = {(await submit(api, chat("hello")))[1]["id"] for _ in range(2)}
    assert len(ids) == 2
    assert len((await kube.list(resources.asyncjobs_path(namespace)))["items"]) == 2


@pytest.mark.parametrize("request_id", ["has space", "x" * 129, "a/b", ""])
async def test_the_crd_refuses_a_request_id_the_api_never_writes(
    kube: KubeClient, namespace: str, request_id: str
) -> None:
    job = {
        "apiVersion": resources.API_VERSION,
        "kind": resources.KIND,
        "metadata": {"name": "bad-request-id"},
        "spec": {
            "requestType": "chat_completion",
            "model": "local/echo",
            "requestId": request_id,
            "requestRef": {
                "secretName": "bad-request-id-request",
                "chunks": 1,
                "size": 2,
                "sha256": "0" * 64,
                "contentType": "application/json",
            },
        },
    }
    with pytest.raises(KubeError) as refused:
        await kube.create(resources.asyncjobs_path(namespace), job)
    assert refused.value.status == 422
    assert "requestId" in str(refused.value)


async def retry_after_a_half_failed_submit(
    start_api: ApiFactory,  # noqa: F811 - the imported fixture
    kube: KubeClient,
    namespace: str,
    identity: str,
    status: int,
) -> None:
    """An idempotent submit that fails half-way leaves nothing, and the client's retry
    through a healthy replica creates the key's job with its request intact."""
    key = {"Idempotency-Key": "half-way-1"}
    restricted = await start_api("--kubeconfig", identity)
    failed, document = await submit(restricted, chat("half way"), **key)
    assert failed == status, document
    assert (await kube.list(resources.asyncjobs_path(namespace)))["items"] == []
    assert await bodies.stored_bodies(kube, namespace) == 0
    healthy = await start_api()
    created, document = await submit(healthy, chat("half way"), **key)
    assert created == 202, document
    job = await kube.get(resources.asyncjobs_path(namespace, document["id"]))
    ref = PayloadRef.from_dict(job["spec"]["requestRef"])
    async with bodies.open_bodies(kube, namespace) as store:
        assert await store.get(ref) == chat("half way")
    assert "Traceback" not in restricted.process.log_tail()


@bodies.needs_backend("secrets")
async def test_secrets_a_refused_request_secret_then_a_retry_makes_the_job(
    start_api: ApiFactory,  # noqa: F811 - the imported fixture
    kube: KubeClient,
    kubeconfig_path: str,
    namespace: str,
    tmp_path: Path,
) -> None:
    identity = await restricted_identity(
        kube, kubeconfig_path, namespace, tmp_path / "r.kubeconfig"
    )
    await retry_after_a_half_failed_submit(start_api, kube, namespace, identity, 500)


@bodies.needs_backend("s3")
async def test_s3_a_refused_asyncjob_then_a_retry_makes_the_job(
    start_api: ApiFactory,  # noqa: F811 - the imported fixture
    kube: KubeClient,
    kubeconfig_path: str,
    namespace: str,
    tmp_path: Path,
) -> None:
    identity = await restricted_identity(
        kube, kubeconfig_path, namespace, tmp_path / "r.kubeconfig", may_create=False
    )
    await retry_after_a_half_failed_submit(start_api, kube, namespace, identity, 500)
