"""Fair share through the real API and operator: one provider slot, calls of 500 ms, and
a flood of jobs from one virtual key. Another key's job submitted behind the flood
starts at the next free slot, not after the flood; a high-priority job of the flooding
key goes ahead of that key's own backlog; with --no-fair-share the other key's job
waits for every job submitted before it (the comparison the benchmark measures).

The assertions are about order (which jobs started between a job's submit and its own
start, how many of the flood were still waiting), read from the jobs' own status, never
about how long anything took.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asyncjobs.core import resources
from asyncjobs.core.jobs import parse_time
from asyncjobs.core.kube import KubeClient
from tests.integration.operator_support import local_providers, running_operator
from tests.integration.test_api import (  # noqa: F401 - start_api is a fixture
    KEY_A,
    KEY_B,
    Api,
    ApiFactory,
    start_api,
)

CHAT = "/v1/async/chat/completions"
FLOOD = 20
BODY = json.dumps({"model": "local/echo", "messages": [{"role": "user", "content": "hi"}]})


async def create_key(kube: KubeClient, namespace: str, name: str, key: str, **extra: str) -> None:
    data = {"key": key, "id": name, **extra}
    await kube.create(
        resources.secrets_path(namespace),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "labels": {resources.LABEL_VIRTUAL_KEY: "true"}},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        },
    )


def one_slot_operator(
    kubeconfig_path: str, namespace: str, log_dir: Path, tmp_path: Path, *extra: str
) -> Iterator[None]:
    providers = local_providers(tmp_path, latency_ms=500, max_in_flight=1, max_concurrency=1)
    with running_operator(kubeconfig_path, namespace, providers, log_dir, *extra) as operator:
        operator.start()
        yield


@pytest.fixture
def operator(kubeconfig_path: str, namespace: str, log_dir: Path, tmp_path: Path) -> Iterator[None]:
    yield from one_slot_operator(kubeconfig_path, namespace, log_dir, tmp_path)


@pytest.fixture
def operator_without_fair_share(
    kubeconfig_path: str, namespace: str, log_dir: Path, tmp_path: Path
) -> Iterator[None]:
    yield from one_slot_operator(kubeconfig_path, namespace, log_dir, tmp_path, "--no-fair-share")


@pytest.fixture
async def api(start_api: ApiFactory, kube: KubeClient, namespace: str) -> Api:  # noqa: F811
    await create_key(kube, namespace, "team-flood", KEY_A)
    await create_key(kube, namespace, "team-trickle", KEY_B, weight="2")
    return await start_api()


async def submit(api: Api, key: str, **headers: str) -> str:
    status, answer = await api.post(
        CHAT, BODY.encode(), "application/json", {"x-bf-vk": key, **headers}
    )
    assert status == 202, answer
    return str(answer["id"])


async def jobs(kube: KubeClient, namespace: str) -> dict[str, dict[str, Any]]:
    listed = await kube.list(resources.asyncjobs_path(namespace))
    return {item["metadata"]["name"]: item for item in listed["items"]}


async def wait_until(
    kube: KubeClient, namespace: str, done: Any, timeout: float = 90
) -> dict[str, dict[str, Any]]:
    async with asyncio.timeout(timeout):
        while True:
            current = await jobs(kube, namespace)
            if done(current):
                return current
            await asyncio.sleep(0.1)


def started(job: dict[str, Any]) -> bool:
    return "startTime" in (job.get("status") or {})


def all_terminal(current: dict[str, dict[str, Any]]) -> bool:
    phases = [(job.get("status") or {}).get("phase") for job in current.values()]
    return all(phase in ("Completed", "Failed") for phase in phases)


async def flood_then_one(
    api: Api, kube: KubeClient, namespace: str, flood: list[dict[str, str]], late: dict[str, str]
) -> tuple[list[str], str, dict[str, dict[str, Any]]]:
    """Submits the flood, waits until its first job runs (the rest queue behind the one
    slot), submits the late job and waits for all to finish."""
    flooded = [await submit(api, **headers) for headers in flood]
    await wait_until(kube, namespace, lambda current: any(started(j) for j in current.values()))
    one = await submit(api, **late)
    final = await wait_until(kube, namespace, all_terminal)
    assert all(final[name]["status"]["phase"] == "Completed" for name in final)
    return flooded, one, final


def started_between(
    final: dict[str, dict[str, Any]], names: list[str], late: str
) -> tuple[int, int]:
    """Of `names`: how many started after `late` was submitted and before it started,
    and how many had not started when it did."""
    submitted = parse_time(final[late]["spec"]["submittedAt"])
    start = parse_time(final[late]["status"]["startTime"])
    starts = [parse_time(final[name]["status"]["startTime"]) for name in names]
    ahead = sum(1 for at in starts if submitted < at < start)
    behind = sum(1 for at in starts if at > start)
    return ahead, behind


async def test_a_flood_from_one_key_does_not_starve_another_keys_job(
    operator: None, api: Api, kube: KubeClient, namespace: str
) -> None:
    flooded, late, final = await flood_then_one(
        api, kube, namespace, [{"key": KEY_A}] * FLOOD, {"key": KEY_B}
    )
    ahead, behind = started_between(final, flooded, late)
    # One flood job may hold the slot when the late job arrives, and one or two more may
    # be granted before the watch delivers the late job to a busy operator (calls are
    # long against that lag, so a few at most); never the backlog.
    assert ahead <= 3, (ahead, behind)
    assert behind >= FLOOD // 2, (ahead, behind)
    spec = final[late]["spec"]
    assert (spec["virtualKeyId"], spec["keyWeight"]) == ("team-trickle", 2)
    assert "keyWeight" not in final[flooded[0]]["spec"]


async def test_priority_orders_jobs_within_a_key(
    operator: None, api: Api, kube: KubeClient, namespace: str
) -> None:
    low = {"key": KEY_A, "x-asyncjobs-priority": "-5"}
    high = {"key": KEY_A, "x-asyncjobs-priority": "7"}
    flooded, urgent, final = await flood_then_one(api, kube, namespace, [low] * FLOOD, high)
    ahead, behind = started_between(final, flooded, urgent)
    assert ahead <= 3, (ahead, behind)
    assert behind >= FLOOD // 2, (ahead, behind)
    assert final[urgent]["spec"]["priority"] == 7
    assert final[flooded[0]]["spec"]["priority"] == -5


async def test_without_fair_share_another_keys_job_waits_for_the_flood(
    operator_without_fair_share: None, api: Api, kube: KubeClient, namespace: str
) -> None:
    flooded, late, final = await flood_then_one(
        api, kube, namespace, [{"key": KEY_A}] * FLOOD, {"key": KEY_B}
    )
    _, behind = started_between(final, flooded, late)
    assert behind == 0  # every job submitted before it went first: oldest first
