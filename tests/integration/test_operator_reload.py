"""The operator follows its providers file without a restart: a changed base URL, a new
provider and raised call limits all apply to the jobs submitted after the change."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest

from asyncjobs.core.kube import KubeClient
from tests.integration.operator_support import (
    FAKE_KEY,
    KEY_SECRET,
    FakeOpenAI,
    Operator,
    create_key_secret,
    phase,
    read_result,
    submit,
    wait_terminal,
    write_providers,
)

CHAT = {"messages": [{"role": "user", "content": "hello"}]}


def providers(path: Path, base_url: str, *, concurrency: int, extra: bool = False) -> Path:
    entry = {
        "baseURL": base_url,
        "timeoutSeconds": 10,
        "maxConcurrency": concurrency,
        "keys": [{"secretRef": {"name": KEY_SECRET}}],
    }
    configured = {"openai": {"type": "openai", **entry}}
    if extra:
        configured["groq"] = {"type": "groq", **entry}
    return write_providers(path, {"providers": configured, "limits": {"maxInFlight": concurrency}})


async def reloads(operator: Operator) -> float:
    found = re.search(
        r"^asyncjobs_operator_provider_config_reloads_total (\S+)$",
        await operator.ametrics(),
        re.M,
    )
    return float(found[1]) if found else 0.0


async def wait_for_reload(operator: Operator, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while await reloads(operator) < 1:
        assert time.monotonic() < deadline, f"no reload within {timeout}s:\n{operator.logs()}"
        await asyncio.sleep(0.1)


@pytest.mark.timeout(90)
async def test_a_changed_providers_file_applies_to_later_jobs_without_a_restart(
    kube: KubeClient, namespace: str, kubeconfig_path: str, log_dir: Path, tmp_path: Path
) -> None:
    await create_key_secret(kube, namespace)
    with FakeOpenAI(log_dir / "first") as first, FakeOpenAI(log_dir / "second") as second:
        for fake in (first, second):
            await fake.aconfig(api_keys=[FAKE_KEY], latency_ms=600)
        path = providers(tmp_path / "providers.yaml", first.base_url, concurrency=1)
        operator = Operator(
            kubeconfig_path, namespace, path, log_dir, "--providers-reload-seconds", "0.2"
        )
        try:
            await operator.astart()
            before = await submit(kube, namespace, CHAT, model="openai/gpt-before")
            assert phase(await wait_terminal(kube, namespace, before)) == "Completed"

            # Another server, a provider more, and three calls at once instead of one.
            providers(path, second.base_url, concurrency=3, extra=True)
            await wait_for_reload(operator)
            starts = operator.starts
            after = [
                await submit(kube, namespace, CHAT, model=f"openai/gpt-after-{i}") for i in range(3)
            ]
            added = await submit(kube, namespace, CHAT, model="groq/llama-added")
            done = [await wait_terminal(kube, namespace, name) for name in [*after, added]]
        finally:
            operator.stop()
        assert operator.starts == starts == 1  # never restarted
        assert [phase(job) for job in done] == ["Completed"] * 4
        assert [job["status"]["provider"] for job in done] == ["openai"] * 3 + ["groq"]
        result = await read_result(kube, namespace, done[-1])
        assert result["extra_fields"]["provider"] == "groq"

        first_models = {r.get("model") for r in (await first.astats())["requests"]}
        second_stats = await second.astats()
        second_models = {r.get("model") for r in second_stats["requests"]}
        assert first_models == {"gpt-before"}
        assert second_models == {"gpt-after-0", "gpt-after-1", "gpt-after-2", "llama-added"}
        assert (await first.astats())["max_in_flight"] == 1
        # The raised limits hold: more than the old single call, never more than three.
        assert 1 < second_stats["max_in_flight"] <= 3
        assert second_stats["violations"] == []
