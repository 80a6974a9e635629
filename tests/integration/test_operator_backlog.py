"""A backlog larger than the operator starts at once, through the real API, apiserver and
operator: jobs submitted while no operator runs, then an operator that lists them in
small pages and starts only a few per provider, the rest parked (controller/backlog.py).

Every job completes; within a key the jobs start in submit order (the parked order is
the fair-share order, oldest first); a key that submitted after the other's whole
backlog is not served after it (its weight counts among the parked jobs too); the
operator reports the parked jobs as waiting. This is the short version of
bench/capacity_bench.py (100,000 jobs). Assertions are about order, never timings.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from asyncjobs.core.jobs import parse_time
from asyncjobs.core.kube import KubeClient
from tests.integration.operator_support import Operator, local_providers, running_operator
from tests.integration.test_api import (  # noqa: F401 - start_api is a fixture
    KEY_A,
    KEY_B,
    Api,
    ApiFactory,
    start_api,
)
from tests.integration.test_fair_share import all_terminal, create_key, submit, wait_until

FIRST_KEY_JOBS = 40
SECOND_KEY_JOBS = 6
PAGE = 7
STARTED = 4


@pytest.fixture
async def api(start_api: ApiFactory, kube: KubeClient, namespace: str) -> Api:  # noqa: F811
    await create_key(kube, namespace, "team-first", KEY_A)
    await create_key(kube, namespace, "team-second", KEY_B, weight="2")
    return await start_api()


@pytest.fixture
def operator_args(tmp_path: Path) -> tuple[Path, list[str]]:
    # One call at a time: STARTED is then the lane's room (at least twice maxInFlight).
    providers = local_providers(tmp_path, latency_ms=20, max_in_flight=1, max_concurrency=1)
    return providers, ["--list-page-size", str(PAGE), "--max-started-per-provider", str(STARTED)]


async def test_a_backlog_listed_in_pages_is_run_from_parked_jobs_in_fair_share_order(
    api: Api,
    kube: KubeClient,
    namespace: str,
    kubeconfig_path: str,
    log_dir: Path,
    operator_args: tuple[Path, list[str]],
) -> None:
    first = [await submit(api, KEY_A) for _ in range(FIRST_KEY_JOBS)]
    second = [await submit(api, KEY_B) for _ in range(SECOND_KEY_JOBS)]
    providers, extra = operator_args
    with running_operator(kubeconfig_path, namespace, providers, log_dir, *extra) as operator:
        await operator.astart()
        seen = Highest()
        scraping = asyncio.create_task(highest_waiting(operator, seen))
        try:
            final = await wait_until(kube, namespace, all_terminal, timeout=180)
        finally:
            scraping.cancel()
    assert all(job["status"]["phase"] == "Completed" for job in final.values())
    starts = {name: parse_time(final[name]["status"]["startTime"]) for name in final}
    # Within a key, the parked jobs started in submit order.
    first_starts = [starts[name] for name in first]
    assert first_starts == sorted(first_starts)
    second_starts = [starts[name] for name in second]
    assert second_starts == sorted(second_starts)
    # The second key, weight 2, submitted after all of the first key's jobs: without its
    # share among the parked jobs it would start after all of them; with it, its jobs
    # are through before the first key's backlog is half done.
    started_after_second = sum(1 for at in first_starts if at > max(second_starts))
    assert started_after_second >= FIRST_KEY_JOBS // 2, started_after_second
    # While most were parked, the operator counted them as waiting.
    assert seen.value >= FIRST_KEY_JOBS + SECOND_KEY_JOBS - STARTED - 10, seen.value


class Highest:
    value = 0


async def highest_waiting(operator: Operator, seen: Highest) -> None:
    """Keeps the highest `provider_calls_waiting` scraped until cancelled."""
    while True:
        text = await operator.ametrics()
        found = re.search(r"^asyncjobs_operator_provider_calls_waiting (\S+)$", text, re.M)
        if found:
            seen.value = max(seen.value, int(float(found.group(1))))
        await asyncio.sleep(0.02)
