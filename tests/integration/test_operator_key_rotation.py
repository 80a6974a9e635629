"""A rotated provider-key Secret is used without restarting the operator: the next call
carries the new key (the fake provider checks the Authorization header), and a call
already running on the old key is not dropped."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from asyncjobs.core import resources
from asyncjobs.core.kube import KubeClient
from tests.integration.operator_support import (
    FAKE_KEY,
    KEY_SECRET,
    FakeOpenAI,
    Operator,
    phase,
    submit,
    wait_terminal,
)
from tests.integration.test_operator_reload import wait_for_reload

ROTATED_KEY = "sk-fake-rotated-key"
CHAT = {"messages": [{"role": "user", "content": "hello"}]}


async def call_started(fake: FakeOpenAI, model: str, timeout: float = 30) -> None:
    for _ in range(int(timeout / 0.05)):
        if any(r.get("model") == model for r in (await fake.astats())["requests"]):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no call for {model} within {timeout}s")


@pytest.mark.timeout(90)
async def test_a_rotated_key_secret_is_used_by_the_next_call_without_a_restart(
    kube: KubeClient,
    namespace: str,
    kubeconfig_path: str,
    log_dir: Path,
    tmp_path: Path,
    fake: FakeOpenAI,
) -> None:
    # The provider accepts both keys while the Secret is rotated, as a provider does.
    await fake.aconfig(api_keys=[FAKE_KEY, ROTATED_KEY])
    await fake.ascript("gpt-slow", {"latency_ms": 3000})
    providers = fake.providers_config(tmp_path / "p.yaml")
    operator = Operator(
        kubeconfig_path, namespace, providers, log_dir, "--providers-reload-seconds", "0.2"
    )
    try:
        await operator.astart()
        running = await submit(
            kube, namespace, CHAT | {"model": "gpt-slow"}, model="openai/gpt-slow"
        )
        await call_started(fake, "gpt-slow")
        await kube.merge_patch(
            resources.secrets_path(namespace, KEY_SECRET),
            {"stringData": {"api-key": ROTATED_KEY}},
        )
        await wait_for_reload(operator)
        # The old key is now refused, so only the new one can complete the next job.
        await fake.aconfig(api_keys=[ROTATED_KEY])
        after = await submit(
            kube, namespace, CHAT | {"model": "gpt-after"}, model="openai/gpt-after"
        )
        assert phase(await wait_terminal(kube, namespace, after)) == "Completed"
        # The call that was running when the key changed finished on its own key.
        assert phase(await wait_terminal(kube, namespace, running)) == "Completed"
        assert operator.starts == 1
    finally:
        operator.stop()
    requests = (await fake.astats())["requests"]
    keys = {r.get("model"): r["key"] for r in requests if r.get("model")}
    assert keys == {"gpt-slow": FAKE_KEY, "gpt-after": ROTATED_KEY}
    assert ROTATED_KEY not in operator.logs()
