"""Two operators on one namespace: only the holder of the Lease runs jobs; a standby takes
over when the holder is killed (after the lease runs out) or stops cleanly (at once), and
a holder that finds the Lease taken stops with a non-zero exit code."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from asyncjobs.controller.leadership import leases_path
from asyncjobs.controller.main import EXIT_LEADERSHIP_LOST
from asyncjobs.core.kube import KubeClient, KubeError
from tests.integration.operator_support import (
    FakeOpenAI,
    Operator,
    local_providers,
    running_operator,
    submit,
    wait_terminal,
)

LEASE = "asyncjobs-operator"


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {what}")


async def holder(kube: KubeClient, namespace: str) -> str:
    try:
        lease = await kube.get(leases_path(namespace, LEASE))
    except KubeError as error:
        if error.status == 404:
            return ""
        raise
    return str(lease["spec"].get("holderIdentity") or "")


async def held_by(kube: KubeClient, namespace: str, identity: str, timeout: float = 30) -> None:
    async def check() -> bool:
        return await holder(kube, namespace) == identity

    await eventually(check, f"the lease is held by {identity}", timeout)


async def gauge(operator: Operator, name: str) -> float:
    for line in (await operator.ametrics()).splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in the metrics")


async def leader(operator: Operator) -> float:
    return await gauge(operator, "asyncjobs_operator_leader")


async def logged(operator: Operator, text: str, timeout: float = 30) -> None:
    async def check() -> bool:
        return text in operator.logs()

    await eventually(check, f"{text!r} in the log", timeout)


def candidate(
    kubeconfig: str, namespace: str, providers: Path, log_dir: Path, identity: str, *flags: str
) -> AbstractContextManager[Operator]:
    """An operator with its own identity on the Lease and its own log folder."""
    return running_operator(
        kubeconfig, namespace, providers, log_dir / identity, "--lease-identity", identity, *flags
    )


def chat(model: str) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hello"}]}


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


@pytest.mark.timeout(150)
async def test_only_the_holder_runs_jobs_and_a_standby_finishes_them_after_a_kill(
    kube: KubeClient, namespace: str, kubeconfig_path: str, log_dir: Path, tmp_path: Path
) -> None:
    duration = 10  # renew deadline 6.7 s, retries every 1.3 s
    await key_secret(kube, namespace, "key-a", "sk-a")
    await key_secret(kube, namespace, "key-b", "sk-b")
    with FakeOpenAI(log_dir) as fake:
        # Each operator calls with its own key, so the fake tells their calls apart.
        await fake.aconfig(latency_ms=1500, api_keys=["sk-a", "sk-b"])
        providers = {
            name: fake.providers_config(
                tmp_path / f"{name}.yaml",
                max_concurrency=2,
                keys=[{"secretRef": {"name": f"key-{name}", "key": "k"}}],
            )
            for name in "ab"
        }
        flags = ("--lease-duration-seconds", str(duration))
        with (
            candidate(kubeconfig_path, namespace, providers["a"], log_dir, "a", *flags) as a,
            candidate(kubeconfig_path, namespace, providers["b"], log_dir, "b", *flags) as b,
        ):
            await a.astart()
            await held_by(kube, namespace, "a")
            await b.astart()  # a standby answers /healthz too
            await logged(b, "waiting for the operator lease held by a")
            names = [
                await submit(kube, namespace, chat("openai/gpt-slow"), model="openai/gpt-slow")
                for _ in range(8)
            ]
            # Two calls at a time: a finishes the first two while the rest wait or run.
            for name in names[:2]:
                first = await wait_terminal(kube, namespace, name, timeout=30)
                assert first["status"]["phase"] == "Completed"
            assert (await leader(a), await leader(b)) == (1, 0)
            assert await gauge(b, "asyncjobs_operator_jobs_running") == 0
            at_kill = [r["key"] for r in (await fake.astats())["requests"]]
            assert at_kill
            assert set(at_kill) == {"sk-a"}, "the standby called nothing"

            a.kill()
            killed = time.monotonic()
            await held_by(kube, namespace, "b", timeout=3 * duration)
            took = time.monotonic() - killed
            # Not before the lease ran out as b last saw it renewed, and soon after.
            retry = duration * 2 / 15
            assert duration - 2 * retry - 0.5 <= took <= duration + 2 * retry + 5, took
            done = await asyncio.gather(*(wait_terminal(kube, namespace, n, 60) for n in names))
            assert [d["status"]["phase"] for d in done] == ["Completed"] * len(names)
            assert await leader(b) == 1
        stats = await fake.astats()
    calls = [r["key"] for r in stats["requests"]]
    assert calls[: len(at_kill)] == at_kill
    assert set(calls[len(at_kill) :]) == {"sk-b"}, "a called nothing after it died"
    # Each operator runs at most two calls at once: more would mean both ran together.
    assert stats["max_in_flight"] <= 2


async def test_a_clean_stop_releases_the_lease_so_the_standby_takes_over_at_once(
    kube: KubeClient, namespace: str, kubeconfig_path: str, log_dir: Path, tmp_path: Path
) -> None:
    providers = local_providers(tmp_path)
    with (
        candidate(kubeconfig_path, namespace, providers, log_dir, "a") as a,
        candidate(kubeconfig_path, namespace, providers, log_dir, "b") as b,
    ):
        await a.astart()
        await held_by(kube, namespace, "a")
        await b.astart()
        await logged(b, "waiting for the operator lease held by a")
        stopped = time.monotonic()
        a.stop()  # SIGTERM, as the kubelet stops a pod
        assert a.process is not None
        assert a.process.process is not None
        assert a.process.process.returncode == 0, a.logs()
        assert "released the operator lease" in a.logs()
        await held_by(kube, namespace, "b", timeout=15)
        # The lease lasts 15 s; a released one is taken at the standby's next try (2 s).
        assert time.monotonic() - stopped < 8
        name = await submit(kube, namespace, chat("local/echo"))
        assert (await wait_terminal(kube, namespace, name))["status"]["phase"] == "Completed"
        assert await leader(b) == 1


async def test_a_holder_that_finds_the_lease_taken_stops_with_an_error(
    kube: KubeClient, namespace: str, kubeconfig_path: str, log_dir: Path, tmp_path: Path
) -> None:
    providers = local_providers(tmp_path)
    with running_operator(
        kubeconfig_path, namespace, providers, log_dir, "--lease-identity", "a"
    ) as a:
        await a.astart()
        await held_by(kube, namespace, "a")
        lease = await kube.get(leases_path(namespace, LEASE))
        lease["spec"]["holderIdentity"] = "intruder"
        await kube.request("PUT", leases_path(namespace, LEASE), body=lease)
        process = a.process
        assert process is not None

        async def exited() -> bool:
            return not process.running()

        await eventually(exited, "the operator exited", timeout=20)
        assert process.process is not None
        assert process.process.returncode == EXIT_LEADERSHIP_LOST, a.logs()
        assert "lost the operator lease asyncjobs-operator: it now names intruder" in a.logs()
        assert await holder(kube, namespace) == "intruder"


async def test_a_restarted_operator_with_the_same_identity_takes_its_lease_at_once(
    kube: KubeClient, namespace: str, kubeconfig_path: str, log_dir: Path, tmp_path: Path
) -> None:
    providers = local_providers(tmp_path)
    with running_operator(
        kubeconfig_path, namespace, providers, log_dir, "--lease-identity", "pod-1"
    ) as operator:
        await operator.astart()
        await held_by(kube, namespace, "pod-1")
        operator.kill()  # the container dies; the kubelet restarts it in the same pod
        restarted = time.monotonic()
        await operator.astart()

        async def leading() -> bool:
            return await leader(operator) == 1

        await eventually(leading, "the restarted operator leads", timeout=15)
        assert time.monotonic() - restarted < 10, "it did not wait for the 15 s lease"
        name = await submit(kube, namespace, chat("local/echo"))
        assert (await wait_terminal(kube, namespace, name))["status"]["phase"] == "Completed"
    lease = await kube.get(leases_path(namespace, LEASE))
    assert lease["spec"]["leaseTransitions"] == 0
