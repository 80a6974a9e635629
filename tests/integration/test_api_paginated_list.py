"""The API's job cache fills from a paginated list: with many AsyncJobs already in the
namespace, a real API process with a small page size becomes ready, holds every job in
its cache and answers a poll for each. Prints the process's resident memory after sync
(the figures in api/README.md; ASYNCJOBS_PAGINATION_JOBS and
ASYNCJOBS_PAGINATION_PAGE_SIZE change the run)."""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from asyncjobs.core import payloads, resources
from asyncjobs.core.jobs import JobSpec, build_asyncjob
from asyncjobs.core.kube import KubeClient
from asyncjobs.core.request_types import RequestType
from tests.integration.test_api import ApiFactory, start_api  # noqa: F401 - fixture

JOBS = int(os.environ.get("ASYNCJOBS_PAGINATION_JOBS", "1200"))
PAGE_SIZE = int(os.environ.get("ASYNCJOBS_PAGINATION_PAGE_SIZE", "100"))
CREATES_IN_FLIGHT = 32


async def create_jobs(kube: KubeClient, namespace: str, count: int) -> list[str]:
    """AsyncJobs straight through the apiserver (no request Secret: nothing runs them)."""
    path = resources.asyncjobs_path(namespace)
    ids = [str(uuid.uuid4()) for _ in range(count)]
    slots = asyncio.Semaphore(CREATES_IN_FLIGHT)

    async def create(job_id: str) -> None:
        spec = JobSpec(
            job_id=job_id,
            request_type=RequestType.CHAT_COMPLETION,
            model="local/echo",
            fallbacks=(),
            result_ttl_seconds=600,
            request_ref=payloads.describe(job_id, "request", b"{}", "application/json"),
            submitted_at=datetime.now(UTC),
        )
        async with slots:
            await kube.create(path, build_asyncjob(spec))

    await asyncio.gather(*(create(job_id) for job_id in ids))
    return ids


def resident_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert match is not None
    return int(match.group(1)) / 1024


@pytest.mark.timeout(600)
async def test_api_with_a_small_page_size_syncs_every_job_and_polls_each(
    start_api: ApiFactory,  # noqa: F811 - the imported fixture
    kube: KubeClient,
    namespace: str,
) -> None:
    ids = await create_jobs(kube, namespace, JOBS)
    started = asyncio.get_running_loop().time()
    # start_api returns once /readyz answers 200: the whole paginated list was applied.
    api = await start_api("--list-page-size", str(PAGE_SIZE))
    ready_after = asyncio.get_running_loop().time() - started
    status, body = await api.get("/readyz")
    assert status == 200, body
    async with api.session.get(f"{api.base}/metrics") as response:
        metrics = await response.text()
    cached = re.search(r"^asyncjobs_api_cache_jobs (\S+)$", metrics, re.MULTILINE)
    assert cached is not None
    assert float(cached.group(1)) == JOBS
    rss = resident_mib(api.process.pid)
    print(f"\n{JOBS} jobs, page size {PAGE_SIZE}: ready in {ready_after:.1f}s, RSS {rss:.1f} MiB")

    polls = asyncio.Semaphore(32)

    async def poll(job_id: str) -> int:
        async with polls:
            got, document = await api.get(f"/v1/async/chat/completions/{job_id}")
            assert document.get("id") == job_id or got != 202
            return got

    answers = await asyncio.gather(*(poll(job_id) for job_id in ids))
    assert answers.count(202) == JOBS
