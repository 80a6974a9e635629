"""Virtual-key governance through the real API and operator processes, the apiserver and
a fake OpenAI server on a real socket (whose answers report token usage), with the
payload backend the run selects (ASYNCJOBS_PAYLOADS):

- a submit outside the key's providers or models is refused with Bifrost's governance
  answer and writes nothing;
- a job whose answer takes the key over its token budget still completes, and the next
  submit is refused (429 token_limited) on every replica;
- once the job's result expires, the operator folds its usage into the key's usage
  record before deleting it, so the budget still holds after the job is gone and after
  the API restarts; usage reads per key from GET /v1/async/usage and Prometheus.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from asyncjobs.controller.metrics import Metrics
from asyncjobs.controller.usage_folder import UsageFolder
from asyncjobs.core import resources, usage_records
from asyncjobs.core.budget_periods import Period
from asyncjobs.core.kube import KubeClient, KubeError, load_config
from asyncjobs.core.usage_records import JobSpend
from tests.integration.operator_support import (
    KEY_SECRET,
    FakeOpenAI,
    Operator,
    create_key_secret,
    running_operator,
    write_providers,
)
from tests.integration.test_api import (  # noqa: F401 - start_api is a fixture
    Api,
    ApiFactory,
    start_api,
)

CHAT = "/v1/async/chat/completions"
KEY = "sk-bf-governed-team"
OTHER = "sk-bf-free-team"


def chat(model: str, text: str = "hello") -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": text}]}).encode()


async def create_key(kube: KubeClient, namespace: str, name: str, **fields: str) -> None:
    data = {field: base64.b64encode(value.encode()).decode() for field, value in fields.items()}
    await kube.create(
        resources.secrets_path(namespace),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "labels": {resources.LABEL_VIRTUAL_KEY: "true"}},
            "data": data,
        },
    )


@pytest.fixture
def fake_openai(log_dir: Path) -> Iterator[FakeOpenAI]:
    with FakeOpenAI(log_dir) as fake:
        yield fake


@pytest.fixture
def providers(tmp_path: Path, fake_openai: FakeOpenAI) -> Path:
    return write_providers(
        tmp_path / "providers.yaml",
        {
            "providers": {
                "local": {"type": "local"},
                "anthropic": {"type": "local"},
                "openai": {
                    "type": "openai",
                    "baseURL": fake_openai.base_url,
                    "keys": [{"secretRef": {"name": KEY_SECRET, "key": "api-key"}}],
                },
            }
        },
    )


@pytest.fixture
async def operator(
    kubeconfig_path: str, namespace: str, log_dir: Path, providers: Path, kube: KubeClient
) -> Iterator[Operator]:
    await create_key_secret(kube, namespace)
    with running_operator(kubeconfig_path, namespace, providers, log_dir) as running:
        await running.astart()
        yield running


async def submit(api: Api, key: str, model: str, **headers: str) -> tuple[int, Any]:
    return await api.post(CHAT, chat(model), "application/json", {"x-bf-vk": key, **headers})


async def jobs_of(kube: KubeClient, namespace: str) -> list[dict[str, Any]]:
    return list((await kube.list(resources.asyncjobs_path(namespace)))["items"])


@pytest.mark.timeout(180)
async def test_governed_key_is_refused_outside_its_rules_and_over_its_budget(
    start_api: ApiFactory,  # noqa: F811 - the imported fixture
    operator: Operator,
    kube: KubeClient,
    namespace: str,
    providers: Path,
) -> None:
    await create_key(
        kube,
        namespace,
        "vk-governed",
        key=KEY,
        id="team-governed",
        allowedProviders="openai,local",
        allowedModels="gpt-4o*,local/echo",
        # The fake answers a one-message chat with 5 prompt and 3 completion tokens.
        tokenBudget="8",
        tokenBudgetPeriod="month",
    )
    await create_key(kube, namespace, "vk-free", key=OTHER, id="team-free")
    flags = ("--providers-config", str(providers))
    first, second = await start_api(*flags), await start_api(*flags)

    status, refused = await submit(first, KEY, "anthropic/claude-3-haiku")
    assert status == 403, refused
    assert refused["type"] == "provider_blocked"
    assert refused["error"]["message"] == (
        "Provider 'anthropic' is not allowed for this virtual key"
    )
    status, refused = await submit(second, KEY, "openai/o1-mini")
    assert (status, refused["type"]) == (403, "model_blocked"), refused
    assert refused["error"]["message"] == "Model 'o1-mini' is not allowed for this virtual key"
    assert await jobs_of(kube, namespace) == []  # refused submits write nothing
    # A key without rules may use anything the install serves.
    assert (await submit(first, OTHER, "anthropic/claude-3-haiku"))[0] == 202

    # One result second, so the job expires (and is deleted) soon after it completes.
    status, accepted = await submit(
        first, KEY, "openai/gpt-4o-mini", **{"x-bf-async-job-result-ttl": "2"}
    )
    assert status == 202, accepted
    done = await first.poll_until(f"{CHAT}/{accepted['id']}", 200, {"x-bf-vk": KEY}, timeout=60)
    # Over the budget by its own answer, the job still completed...
    assert done["status"] == "completed", done
    assert done["result"]["usage"]["total_tokens"] == 8
    # ...and the next submit is refused, on both replicas (each sums the jobs it watches).
    for api in (first, second):
        status, refused = await submit(api, KEY, "openai/gpt-4o-mini")
        assert status == 429, refused
        assert refused["type"] == "token_limited"
        assert refused["error"]["message"] == (
            "Rate limit check failed: rate limit violated for VK: token limit exceeded "
            "(8/8, resets every 1M)"
        )
    assert len(await jobs_of(kube, namespace)) == 2

    # The result expires: the operator folds the job's usage into the key's record,
    # then deletes the job.
    record_path = resources.configmaps_path(namespace, usage_records.record_name("team-governed"))
    for _ in range(200):
        names = [job["metadata"]["name"] for job in await jobs_of(kube, namespace)]
        if accepted["id"] not in names:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the expired job was not deleted")
    record = usage_records.read((await kube.get(record_path))["data"])
    assert record is not None
    assert record.key_id == "team-governed"
    assert record.folded == (accepted["id"],)
    assert "sk-bf" not in json.dumps(await kube.get(record_path))  # only the key's id

    # The job is gone; its usage still counts, on a replica started after it went too.
    third = await start_api(*flags)
    for api in (first, third):
        status, refused = await api.post(
            CHAT, chat("openai/gpt-4o"), "application/json", {"x-bf-vk": KEY}
        )
        assert (status, refused.get("type")) == (429, "token_limited"), refused
        status, usage = await api.get("/v1/async/usage", {"x-bf-vk": KEY})
        assert status == 200, usage
        assert usage["virtual_key_id"] == "team-governed"
        assert (usage["period"], usage["requests"]) == ("month", 1)
        assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (5, 3, 8)
        assert usage["limits"]["token_budget"] == 8
        assert usage["limits"]["allowed_models"] == ["gpt-4o*", "local/echo"]

    # Prometheus: tokens per key, provider and model from the operator; refusals by
    # reason and pending jobs per key from the API.
    operator_metrics = await operator.ametrics()
    labels = {"key": "team-governed", "provider": "openai", "model": "openai/gpt-4o-mini"}
    assert (
        sample(operator_metrics, "asyncjobs_operator_key_tokens_total", direction="input", **labels)
        == 5
    )
    assert (
        sample(
            operator_metrics, "asyncjobs_operator_key_tokens_total", direction="output", **labels
        )
        == 3
    )
    assert (
        sample(
            operator_metrics, "asyncjobs_operator_key_requests_total", outcome="completed", **labels
        )
        == 1
    )
    async with first.session.get(first.base + "/metrics") as answer:
        api_metrics = await answer.text()
    refusals = "asyncjobs_api_key_refusals_total"
    assert sample(api_metrics, refusals, key="team-governed", reason="provider_blocked") == 1
    assert sample(api_metrics, refusals, key="team-governed", reason="model_blocked") is None
    async with second.session.get(second.base + "/metrics") as answer:
        second_metrics = await answer.text()
    # Each replica counts its own refusals: the model was refused by the second.
    assert sample(second_metrics, refusals, key="team-governed", reason="model_blocked") == 1
    assert sample(api_metrics, refusals, key="team-governed", reason="token_limited") == 2


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample `name` with exactly `labels`, None when there is none."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return float(found.value)
    return None


async def test_shards_folding_jobs_of_one_key_at_once_lose_no_usage(
    kube: KubeClient, kubeconfig_path: str, namespace: str
) -> None:
    """Two operator shards (two folders, two clients) fold 20 jobs of one key at once
    against the real apiserver: the resourceVersion-checked update makes every one
    count exactly once, and folding them again changes nothing."""
    now = datetime.now(UTC)
    spends = [
        JobSpend(f"job-{index}", "team-race", now, input_tokens=3, output_tokens=2, total_tokens=5)
        for index in range(20)
    ]
    async with KubeClient(load_config(kubeconfig_path)) as other:
        folders = [
            UsageFolder(client, namespace, Metrics(), lambda: now) for client in (kube, other)
        ]
        await asyncio.gather(
            *(folders[index % 2].fold(spend) for index, spend in enumerate(spends))
        )
        await asyncio.gather(
            *(folders[1 - index % 2].fold(spend) for index, spend in enumerate(spends))
        )
    path = resources.configmaps_path(namespace, usage_records.record_name("team-race"))
    record = usage_records.read((await kube.get(path))["data"])
    assert record is not None
    for period in Period:
        assert record.totals(period, now) == {
            "requests": 20,
            "inputTokens": 60,
            "outputTokens": 40,
            "totalTokens": 100,
        }
    assert sorted(record.folded) == sorted(spend.name for spend in spends)


async def test_the_operator_may_not_read_the_keys_namespace_and_the_api_may_read_records(
    kube: KubeClient, namespace: str
) -> None:
    """The usage record lives in the jobs' namespace, so the operator's RBAC needs nothing
    in the keys' namespace (chart: operator-rbac.yaml has no rule there)."""
    chart = Path(__file__).resolve().parents[2] / "charts" / "asyncjobs" / "templates"
    operator_rbac = (chart / "operator-rbac.yaml").read_text()
    assert "keysNamespace" not in operator_rbac
    with pytest.raises(KubeError) as missing:
        await kube.get(resources.configmaps_path(namespace, usage_records.record_name("none")))
    assert missing.value.status == 404
