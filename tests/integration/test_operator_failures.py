"""The failure policy against a fake OpenAI server over real HTTP: retries that honour
Retry-After, 4xx that fail at once, fallbacks, deadlines, and the concurrency limit."""

from __future__ import annotations

import asyncio
from pathlib import Path

from asyncjobs.core.kube import KubeClient
from tests.integration.operator_support import (
    FakeOpenAI,
    read_result,
    running_operator,
    submit,
    wait_terminal,
)


def chat(model: str) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hello"}]}


async def test_429_with_retry_after_is_retried_then_succeeds(
    kube: KubeClient,
    namespace: str,
    kubeconfig_path: str,
    log_dir: Path,
    tmp_path: Path,
    fake: FakeOpenAI,
) -> None:
    await fake.ascript("gpt-retry", {"status": 429, "retry_after": "1"})
    providers = fake.providers_config(tmp_path / "p.yaml")
    with running_operator(kubeconfig_path, namespace, providers, log_dir) as operator:
        await operator.astart()
        name = await submit(kube, namespace, chat("openai/gpt-retry"), model="openai/gpt-retry")
        done = await wait_terminal(kube, namespace, name)
        assert 'reason="Retrying"' in await operator.ametrics()
    status = done["status"]
    assert status["phase"] == "Completed", status
    assert status["attempts"] == 2
    assert status["statusCode"] == 200
    calls = [r for r in (await fake.astats())["requests"] if "gpt-retry" in str(r)]
    assert len(calls) == 2
    result = await read_result(kube, namespace, done)
    assert result["choices"][0]["message"]["role"] == "assistant"
    assert result["extra_fields"]["model_requested"] == "gpt-retry"


async def test_400_fails_at_once_with_the_provider_error(
    kube: KubeClient,
    namespace: str,
    kubeconfig_path: str,
    log_dir: Path,
    tmp_path: Path,
    fake: FakeOpenAI,
) -> None:
    # Providers quote the request in their messages; this one quotes the prompt.
    quoted = "bad temperature for 'my card number is 4111 1111 1111 1111'"
    await fake.ascript("gpt-bad", {"status": 400, "message": quoted, "param": "temperature"})
    providers = fake.providers_config(tmp_path / "p.yaml")
    with running_operator(kubeconfig_path, namespace, providers, log_dir) as operator:
        await operator.astart()
        name = await submit(kube, namespace, chat("openai/gpt-bad"), model="openai/gpt-bad")
        done = await wait_terminal(kube, namespace, name)
    status = done["status"]
    assert status["phase"] == "Failed"
    assert status["attempts"] == 1
    assert status["statusCode"] == 400
    assert status["conditions"][-1]["reason"] == "ProviderError"
    # The status, which the `view` role reads, keeps a summary: no word of the prompt.
    error = status["error"]
    assert "4111" not in str(status)
    assert error["is_bifrost_error"] is False
    assert error["status_code"] == 400
    assert error["error"]["message"] == (
        "openai answered 400 (invalid_request_error); the provider's message is returned "
        "only to the client that submitted the job"
    )
    assert error["error"]["param"] == "temperature"
    assert error["extra_fields"] == {
        "provider": "openai",
        "model_requested": "gpt-bad",
        "request_type": "chat_completion",
    }
    # The whole error is stored with the job's bodies, for the API to return.
    assert status["resultRef"]["contentType"] == "application/json"
    stored = await read_result(kube, namespace, done)
    assert stored == {**error, "error": {**error["error"], "message": quoted}}
    events = await kube.list(f"/api/v1/namespaces/{namespace}/events")
    reasons = [e["reason"] for e in events["items"] if e["involvedObject"]["name"] == name]
    assert reasons == ["ProviderError"]


async def test_a_failing_model_falls_back_to_the_next(
    kube: KubeClient,
    namespace: str,
    kubeconfig_path: str,
    log_dir: Path,
    tmp_path: Path,
    fake: FakeOpenAI,
) -> None:
    await fake.ascript("gpt-down", {"status": 404})
    providers = fake.providers_config(tmp_path / "p.yaml")
    with running_operator(kubeconfig_path, namespace, providers, log_dir) as operator:
        await operator.astart()
        name = await submit(
            kube,
            namespace,
            chat("openai/gpt-down"),
            model="openai/gpt-down",
            fallbacks=("openai/gpt-up",),
        )
        done = await wait_terminal(kube, namespace, name)
    status = done["status"]
    assert status["phase"] == "Completed", status
    assert status["attempts"] == 2
    assert status["modelUsed"] == "openai/gpt-up"
    result = await read_result(kube, namespace, done)
    assert result["extra_fields"]["model_requested"] == "gpt-up"


async def test_a_job_past_its_deadline_fails_with_deadline_exceeded(
    kube: KubeClient,
    namespace: str,
    kubeconfig_path: str,
    log_dir: Path,
    tmp_path: Path,
    fake: FakeOpenAI,
) -> None:
    await fake.ascript("gpt-slow", {"latency_ms": 8000})
    providers = fake.providers_config(tmp_path / "p.yaml")
    with running_operator(kubeconfig_path, namespace, providers, log_dir) as operator:
        await operator.astart()
        name = await submit(
            kube,
            namespace,
            chat("openai/gpt-slow"),
            model="openai/gpt-slow",
            spec={"activeDeadlineSeconds": 2},
        )
        done = await wait_terminal(kube, namespace, name, timeout=20)
    status = done["status"]
    assert status["phase"] == "Failed"
    assert status["conditions"][-1]["reason"] == "DeadlineExceeded"
    assert status["statusCode"] == 504
    assert status["error"]["extra_fields"]["model_requested"] == "gpt-slow"


async def test_the_provider_never_sees_more_calls_than_its_limit(
    kube: KubeClient,
    namespace: str,
    kubeconfig_path: str,
    log_dir: Path,
    tmp_path: Path,
    fake: FakeOpenAI,
) -> None:
    await fake.aconfig(latency_ms=300)
    providers = fake.providers_config(tmp_path / "p.yaml", max_concurrency=4, max_in_flight=50)
    names = []
    for index in range(24):
        body = chat("openai/gpt-many")
        body["messages"] = [{"role": "user", "content": f"job {index}"}]
        names.append(await submit(kube, namespace, body, model="openai/gpt-many"))
    with running_operator(kubeconfig_path, namespace, providers, log_dir) as operator:
        await operator.astart()
        done = await asyncio.gather(*(wait_terminal(kube, namespace, n, 60) for n in names))
    assert {d["status"]["phase"] for d in done} == {"Completed"}
    stats = await fake.astats()
    assert stats["count"] == 24
    # The limit was reached (the test would prove nothing otherwise) and never exceeded.
    assert stats["max_in_flight"] == 4
    # Oldest first: calls reached the provider in submission order, give or take the
    # calls started together (up to the limit), whatever order the operator listed them in.
    order = [int(r["json"]["messages"][0]["content"].split()[1]) for r in stats["requests"]]
    assert sorted(order) == list(range(24))
    assert all(abs(position - index) < 4 for position, index in enumerate(order)), order
