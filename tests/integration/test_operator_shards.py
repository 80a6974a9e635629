"""Several operators on one namespace, each a real process with its own member Lease: the
jobs spread over them by shard, each job runs once, a SIGKILLed replica's jobs finish on
the others within the lease duration, a clean stop hands its shards over at once, a job
created without a shard label still runs, and a replica that finds its Lease taken
stops with a non-zero exit code."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import Any

import pytest

from asyncjobs.controller.main import EXIT_LEASE_LOST
from asyncjobs.controller.member_lease import MEMBER_LABEL, leases_path
from asyncjobs.core import resources, shards
from asyncjobs.core.kube import KubeClient
from tests.integration.operator_support import (
    FakeOpenAI,
    Operator,
    local_providers,
    running_operator,
    submit,
    wait_for_job,
    wait_terminal,
)

PREFIX = "asyncjobs-operator"


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {what}")


async def gauge(operator: Operator, name: str) -> float:
    for line in (await operator.ametrics()).splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in the metrics")


async def members_seen(operators: list[Operator], count: int, timeout: float = 30) -> None:
    async def check() -> bool:
        seen = [await gauge(o, "asyncjobs_operator_members") for o in operators]
        return all(s == count for s in seen)

    await eventually(check, f"every operator sees {count} members", timeout)


def replica(
    kubeconfig: str, namespace: str, providers: Path, log_dir: Path, identity: str, *flags: str
) -> AbstractContextManager[Operator]:
    """An operator with its own member name and its own log folder."""
    return running_operator(
        kubeconfig, namespace, providers, log_dir / identity, "--lease-identity", identity, *flags
    )


def owner_of(name: str, identities: list[str]) -> str:
    lease_names = {f"{PREFIX}-{i}": i for i in identities}
    owner = shards.owner(shards.shard_of(name), lease_names)
    assert owner is not None
    return lease_names[owner]


def chat(marker: str) -> dict[str, object]:
    return {"model": "gpt-slow", "messages": [{"role": "user", "content": marker}]}


async def key_secret(kube: KubeClient, namespace: str, name: str, key: str) -> None:
    await kube.create(
        f"/api/v1/namespaces/{namespace}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "stringData": {"k": key},
        },
    )


def calls_by_job(stats: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The fake's requests by the marker each job's request carries."""
    calls: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for request in stats["requests"]:
        marker = request["json"]["messages"][0]["content"]
        calls[marker].append(request)
    return calls


def overlapping(calls: list[dict[str, Any]]) -> bool:
    """Whether two of a job's calls were in flight at once (one never answered counts as
    in flight until the end)."""
    spans = sorted((c["started"], c.get("answered", float("inf"))) for c in calls)
    return any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))


@pytest.mark.timeout(180)
async def test_three_replicas_share_the_jobs_and_a_killed_ones_finish_on_the_others(
    kube: KubeClient, namespace: str, kubeconfig_path: str, log_dir: Path, tmp_path: Path
) -> None:
    duration = 6  # renew deadline 4 s, renewals and member lists every 0.8 s
    identities = ["a", "b", "c"]
    for identity in identities:
        await key_secret(kube, namespace, f"key-{identity}", f"sk-{identity}")
    with FakeOpenAI(log_dir) as fake, ExitStack() as stack:
        # Each operator calls with its own key, so the fake tells their calls apart.
        await fake.aconfig(latency_ms=1500, api_keys=[f"sk-{i}" for i in identities])
        operators = {
            i: stack.enter_context(
                replica(
                    kubeconfig_path,
                    namespace,
                    fake.providers_config(
                        tmp_path / f"{i}.yaml",
                        max_concurrency=3,
                        keys=[{"secretRef": {"name": f"key-{i}", "key": "k"}}],
                    ),
                    log_dir,
                    i,
                    "--lease-duration-seconds",
                    str(duration),
                )
            )
            for i in identities
        }
        for operator in operators.values():
            await operator.astart()
        await members_seen(list(operators.values()), 3)
        names = {
            f"job-{n}": await submit(kube, namespace, chat(f"job-{n}"), model="openai/gpt-slow")
            for n in range(36)
        }
        owners = {marker: owner_of(name, identities) for marker, name in names.items()}
        assert set(owners.values()) == set(identities), "36 jobs land in every replica's shards"
        # Each replica runs 3 calls at a time: kill b while it has calls in flight.
        first = next(m for m, o in owners.items() if o == "b")
        await wait_for_job(
            kube, namespace, names[first], lambda o: o.get("status", {}).get("attempts") == 1
        )
        await asyncio.sleep(0.5)
        operators["b"].kill()
        killed = time.monotonic()
        done = await asyncio.gather(
            *(wait_terminal(kube, namespace, n, 90) for n in names.values())
        )
        assert [d["status"]["phase"] for d in done] == ["Completed"] * len(names)
        await members_seen([operators["a"], operators["c"]], 2)
        stats = await fake.astats()

    calls = calls_by_job(stats)
    assert set(calls) == set(names), "every job was called"
    statuses = {marker: job["status"] for marker, job in zip(names, done, strict=True)}
    for marker, job_calls in calls.items():
        assert not overlapping(job_calls), f"{marker} ran twice at once: {job_calls}"
        keys = [c["key"] for c in job_calls]
        if owners[marker] != "b":
            # a's and c's jobs ran on their owner only: they never moved, and every
            # call was an attempt it recorded (a retry of a timed-out call on a busy
            # host is one), none a resume.
            assert set(keys) == {f"sk-{owners[marker]}"}, (marker, keys)
            assert len(keys) == statuses[marker]["attempts"], (marker, statuses[marker])
            assert not statuses[marker].get("interruptions"), (marker, statuses[marker])
        else:
            # b's jobs ran on b until it died, then on a or c; a call b had in flight
            # when it died is the only call ever repeated.
            assert "sk-b" not in keys[1:], (marker, keys)
            assert len(keys) <= 2, (marker, keys)
    taken_over = [
        c["started"]
        for marker, job_calls in calls.items()
        if owners[marker] == "b"
        for c in job_calls
        if c["key"] != "sk-b"
    ]
    assert taken_over, "some of b's jobs were left when it died"
    # Not before b's lease ran out as the others last saw it renewed, and soon after.
    takeover = min(taken_over) - killed
    retry = duration * 2 / 15
    assert duration - 2 * retry - 0.5 <= takeover <= duration + 2 * retry + 5, takeover
    for job in done:
        holder = job["status"]["operator"]
        assert holder.split("/")[0] in identities


async def test_a_clean_stop_hands_the_shards_over_at_once(
    kube: KubeClient, namespace: str, kubeconfig_path: str, log_dir: Path, tmp_path: Path
) -> None:
    providers = local_providers(tmp_path)
    with (
        replica(kubeconfig_path, namespace, providers, log_dir, "a") as a,
        replica(kubeconfig_path, namespace, providers, log_dir, "b") as b,
    ):
        await a.astart()
        await b.astart()
        await members_seen([a, b], 2)
        assert 0 < await gauge(a, "asyncjobs_operator_shards_owned") < shards.SHARDS
        stopped = time.monotonic()
        a.stop()  # SIGTERM, as the kubelet stops a pod
        assert a.process is not None
        assert a.process.process is not None
        assert a.process.process.returncode == 0, a.logs()
        assert "left: deleted the member lease asyncjobs-operator-a" in a.logs()

        async def all_shards() -> bool:
            return await gauge(b, "asyncjobs_operator_shards_owned") == shards.SHARDS

        await eventually(all_shards, "b runs every shard", timeout=15)
        # The lease lasts 15 s; a deleted one is gone at b's next look (2 s).
        assert time.monotonic() - stopped < 6
        # Jobs of a's former shards among them (ids are random: submit until there are).
        names: list[str] = []
        while len(names) < 6 or {owner_of(n, ["a", "b"]) for n in names} != {"a", "b"}:
            assert len(names) < 40, "no job hashed to a's former shards"
            names.append(await submit(kube, namespace, chat(f"j{len(names)}"), model="local/echo"))
        for name in names:
            job = await wait_terminal(kube, namespace, name)
            assert job["status"]["phase"] == "Completed"
            assert job["status"]["operator"].startswith("b/")
    members = await kube.list(leases_path(namespace), labelSelector=MEMBER_LABEL)
    assert members["items"] == [], "both left"


async def test_a_job_created_without_a_shard_label_is_labelled_and_run(
    kube: KubeClient, namespace: str, kubeconfig_path: str, log_dir: Path, tmp_path: Path
) -> None:
    providers = local_providers(tmp_path)
    with (
        replica(kubeconfig_path, namespace, providers, log_dir, "a") as a,
        replica(kubeconfig_path, namespace, providers, log_dir, "b") as b,
    ):
        await a.astart()
        await b.astart()
        await members_seen([a, b], 2)
        names = []
        for n in range(4):
            name = await submit(kube, namespace, chat(f"j{n}"), model="local/echo")
            # As kubectl would leave it: no shard label (a JSON merge patch removes it).
            await kube.merge_patch(
                resources.asyncjobs_path(namespace, name),
                {"metadata": {"labels": {shards.LABEL: None}}},
            )
            names.append(name)
        for name in names:
            job = await wait_terminal(kube, namespace, name, timeout=30)
            assert job["status"]["phase"] == "Completed"
            assert job["metadata"]["labels"][shards.LABEL] == str(shards.shard_of(name))
            owner = owner_of(name, ["a", "b"])
            assert job["status"]["operator"].startswith(f"{owner}/"), "its shard's owner ran it"


async def test_a_replica_that_finds_its_lease_taken_stops_with_an_error(
    kube: KubeClient, namespace: str, kubeconfig_path: str, log_dir: Path, tmp_path: Path
) -> None:
    providers = local_providers(tmp_path)
    with replica(kubeconfig_path, namespace, providers, log_dir, "a") as a:
        await a.astart()
        await members_seen([a], 1)
        path = leases_path(namespace, f"{PREFIX}-a")
        lease = await kube.get(path)
        lease["spec"]["holderIdentity"] = "intruder"
        await kube.request("PUT", path, body=lease)
        process = a.process
        assert process is not None

        async def exited() -> bool:
            return not process.running()

        await eventually(exited, "the operator exited", timeout=20)
        assert process.process is not None
        assert process.process.returncode == EXIT_LEASE_LOST, a.logs()
        assert f"lost the member lease {PREFIX}-a: it now names intruder" in a.logs()
        assert (await kube.get(path))["spec"]["holderIdentity"] == "intruder"


async def test_a_restarted_replica_takes_its_lease_back_at_once(
    kube: KubeClient, namespace: str, kubeconfig_path: str, log_dir: Path, tmp_path: Path
) -> None:
    providers = local_providers(tmp_path)
    # A long lease: a restart that waited for it would take a minute, not seconds.
    flags = ("--lease-duration-seconds", "60")
    with replica(kubeconfig_path, namespace, providers, log_dir, "pod-1", *flags) as operator:
        await operator.astart()
        await members_seen([operator], 1)
        before = (await kube.get(leases_path(namespace, f"{PREFIX}-pod-1")))["spec"]
        operator.kill()  # the container dies; the kubelet restarts it in the same pod
        restarted = time.monotonic()
        await operator.astart()

        async def member() -> bool:
            return await gauge(operator, "asyncjobs_operator_member") == 1

        await eventually(member, "the restarted operator holds its lease", timeout=30)
        assert time.monotonic() - restarted < 30, "it did not wait for the 60 s lease"
        name = await submit(kube, namespace, chat("j"), model="local/echo")
        assert (await wait_terminal(kube, namespace, name))["status"]["phase"] == "Completed"
        after = (await kube.get(leases_path(namespace, f"{PREFIX}-pod-1")))["spec"]
    assert after["holderIdentity"] != before["holderIdentity"], "a new process, a new holder"
    assert after["leaseTransitions"] == before["leaseTransitions"] + 1
