"""The API's result cache against the real plane: the second poll of a completed job is
answered from memory (its /metrics count a hit), and a job deleted after its result was
cached answers 404 all the same.

The API runs as a real process (test_api.py's fixtures); the operator's part, completing
the job with a result Secret and a status patch, is played as test_api.py plays it.
"""

from __future__ import annotations

import asyncio
import json
import re
import time

from asyncjobs.core import resources
from asyncjobs.core.kube import KubeClient
from asyncjobs.core.request_types import RequestType
from tests.integration.test_api import Api, ApiFactory, finish, start_api

__all__ = ["start_api"]  # the fixture, used by name

CHAT_POLL = "/v1/async/chat/completions/{}"
RESULT = json.dumps(
    {"object": "chat.completion", "choices": [{"index": 0}]}, separators=(",", ":")
).encode()


async def scrape(api: Api) -> dict[str, float]:
    async with api.session.get(f"{api.base}/metrics") as response:
        text = await response.text()
    found = re.findall(r"^(asyncjobs_api_result_cache_\w+) (\S+)$", text, re.MULTILINE)
    return {name: float(value) for name, value in found}


async def completed_job(api: Api, kube: KubeClient, namespace: str) -> str:
    job_id = str((await api.submit(RequestType.CHAT_COMPLETION))["id"])
    await finish(kube, namespace, job_id, result=RESULT)
    return job_id


async def test_second_poll_of_a_completed_job_is_a_cache_hit(
    start_api: ApiFactory, kube: KubeClient, namespace: str
) -> None:
    api = await start_api()
    job_id = await completed_job(api, kube, namespace)
    first = await api.poll_until(CHAT_POLL.format(job_id), 200)  # the watch may lag
    assert first["status"] == "completed"
    assert json.dumps(first["result"], separators=(",", ":")).encode() == RESULT
    assert await scrape(api) == {
        "asyncjobs_api_result_cache_hits_total": 0.0,
        "asyncjobs_api_result_cache_misses_total": 1.0,
        "asyncjobs_api_result_cache_bytes": len(RESULT) + 400.0,
        "asyncjobs_api_result_cache_entries": 1.0,
    }
    second = await api.get(CHAT_POLL.format(job_id))
    assert second == (200, first)
    metrics = await scrape(api)
    assert metrics["asyncjobs_api_result_cache_hits_total"] == 1.0
    assert metrics["asyncjobs_api_result_cache_misses_total"] == 1.0


async def test_a_deleted_job_answers_404_though_its_result_is_cached(
    start_api: ApiFactory, kube: KubeClient, namespace: str
) -> None:
    api = await start_api()
    job_id = await completed_job(api, kube, namespace)
    await api.poll_until(CHAT_POLL.format(job_id), 200)
    await kube.delete(resources.asyncjobs_path(namespace, job_id))
    deadline = time.monotonic() + 10
    while (status := (await api.get(CHAT_POLL.format(job_id)))[0]) == 200:
        assert time.monotonic() < deadline, "the deleted job still answered 200"
        await asyncio.sleep(0.05)
    assert status == 404
    assert (await scrape(api))["asyncjobs_api_result_cache_entries"] == 1.0


async def test_with_the_cache_disabled_every_poll_reads_the_store(
    start_api: ApiFactory, kube: KubeClient, namespace: str
) -> None:
    api = await start_api("--result-cache-bytes", "0")
    job_id = await completed_job(api, kube, namespace)
    await api.poll_until(CHAT_POLL.format(job_id), 200)
    assert (await api.get(CHAT_POLL.format(job_id)))[0] == 200
    assert await scrape(api) == {
        "asyncjobs_api_result_cache_hits_total": 0.0,
        "asyncjobs_api_result_cache_misses_total": 0.0,
        "asyncjobs_api_result_cache_bytes": 0.0,
        "asyncjobs_api_result_cache_entries": 0.0,
    }
