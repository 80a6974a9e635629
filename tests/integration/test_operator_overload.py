"""A provider's 429 storm against the real operator and a fake OpenAI server over HTTP:
queued jobs wait out the storm without spending their attempts and complete after it,
and a job the provider will not serve before its deadline fails at once with a 429
that says so, not with a 504 at its deadline."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from asyncjobs.core.kube import KubeClient
from tests.integration.operator_support import (
    FakeOpenAI,
    running_operator,
    submit,
    wait_terminal,
)


def chat(model: str) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hello"}]}


def metric(text: str, name: str, label: str = "") -> float:
    """The sum of a metric's samples (those with `label`, e.g. 'cause="throttled"') in a
    Prometheus text page."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name)] in " {" and label in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_queued_jobs_wait_out_a_429_storm_without_spending_attempts(
    kube: KubeClient,
    namespace: str,
    kubeconfig_path: str,
    log_dir: Path,
    tmp_path: Path,
    fake: FakeOpenAI,
) -> None:
    jobs = 20
    # Three attempts each. Retrying every Retry-After (1 s), as each job did on its own,
    # spends all three inside a 5 s storm and fails the backlog.
    providers = fake.providers_config(tmp_path / "p.yaml", max_concurrency=2)
    with running_operator(kubeconfig_path, namespace, providers, log_dir) as operator:
        await operator.astart()
        await fake.aconfig(storm_seconds=5, storm_retry_after="1")
        storm_ends = time.monotonic() + 5
        names = await asyncio.gather(
            *(
                submit(
                    kube,
                    namespace,
                    chat("openai/gpt-storm"),
                    model="openai/gpt-storm",
                    spec={"backoffLimit": 2, "activeDeadlineSeconds": 120},
                )
                for _ in range(jobs)
            )
        )
        # During the storm the operator holds the backlog.
        held = active = 0.0
        while time.monotonic() < storm_ends + 2 and not held:
            page = await operator.ametrics()
            held = metric(page, "asyncjobs_operator_jobs_held")
            active = metric(page, "asyncjobs_operator_provider_cooldowns_active")
            await asyncio.sleep(0.2)
        done = [await wait_terminal(kube, namespace, name, timeout=90) for name in names]
        page = await operator.ametrics()
    statuses = [job["status"] for job in done]
    assert [s["phase"] for s in statuses] == ["Completed"] * jobs, statuses
    assert held > 0
    assert active == 1
    answered = [r for r in (await fake.astats())["requests"] if r.get("model") == "gpt-storm"]
    throttled = [r for r in answered if r["status"] == 429]
    # Only the calls in flight when the storm began and one probe per cooldown met it;
    # every other job waited, and made exactly one call.
    assert 1 <= len(throttled) <= 6, len(throttled)
    assert sum(s["attempts"] for s in statuses) == jobs + len(throttled)
    assert max(s["attempts"] for s in statuses) <= 3
    assert sum(1 for s in statuses if s["attempts"] == 1) >= jobs - len(throttled)
    cooldowns = metric(page, "asyncjobs_operator_provider_cooldowns_total", 'cause="throttled"')
    assert cooldowns >= 1  # the first 429, then each probe that met the storm
    assert metric(page, "asyncjobs_operator_jobs_held") == 0


async def test_a_provider_throttling_past_the_deadline_fails_jobs_at_once_with_429(
    kube: KubeClient,
    namespace: str,
    kubeconfig_path: str,
    log_dir: Path,
    tmp_path: Path,
    fake: FakeOpenAI,
) -> None:
    providers = fake.providers_config(tmp_path / "p.yaml")
    with running_operator(kubeconfig_path, namespace, providers, log_dir) as operator:
        await operator.astart()
        await fake.aconfig(storm_seconds=60, storm_retry_after="120")
        began = time.monotonic()
        spec = {"activeDeadlineSeconds": 30}
        first = await submit(
            kube, namespace, chat("openai/gpt-later"), model="openai/gpt-later", spec=spec
        )
        answered = await wait_terminal(kube, namespace, first, timeout=20)
        # Submitted while the provider cools down: turned away without a call.
        second = await submit(
            kube, namespace, chat("openai/gpt-later"), model="openai/gpt-later", spec=spec
        )
        held = await wait_terminal(kube, namespace, second, timeout=20)
        took = time.monotonic() - began
    await fake.aconfig(storm_seconds=0)
    assert took < 20  # long before the 30 s deadline
    for job in (answered, held):
        status = job["status"]
        assert status["phase"] == "Failed", status
        assert status["statusCode"] == 429
        assert status["conditions"][-1]["reason"] == "ProviderOverloaded"
        error = status["error"]
        assert error["status_code"] == 429
        message = error["error"]["message"]
        assert message.startswith("provider openai is rate limited until "), message
        assert "beyond the job's deadline" in message
    assert answered["status"]["attempts"] == 1
    assert "attempts" not in held["status"]
    calls = [r for r in (await fake.astats())["requests"] if r.get("model") == "gpt-later"]
    assert len(calls) == 1
