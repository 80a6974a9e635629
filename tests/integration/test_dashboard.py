"""The Grafana dashboard and the alerts query metrics that exist: a real Prometheus
(Debian's package) scrapes a running API and operator while jobs flow, and every panel
query and every alert expression must parse and return data."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from asyncjobs.core import resources
from asyncjobs.core.kube import KubeClient
from tests.fakes.openai_server import FakeOpenAIServer
from tests.integration.operator_support import KEY_SECRET, create_key_secret
from tests.support.procs import ManagedProcess, free_port, python_module

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "asyncjobs"
SCRAPE_SECONDS = 1


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads((CHART / "dashboards" / "asyncjobs.json").read_text())
    return [
        (panel["title"], target["expr"].replace("$__rate_interval", "1m"))
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]


def alert_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = yaml.safe_load((CHART / "alerts.yaml").read_text())
    return rules


def alert_signal(expr: str) -> str:
    """The alert's expression without its threshold: that part must return data."""
    return re.split(r"\s[<>]=?\s", expr.strip())[0]


def prometheus_query(base: str, query: str) -> dict[str, Any]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    with urllib.request.urlopen(url, timeout=10) as answer:
        parsed: dict[str, Any] = json.load(answer)
    return parsed


@pytest.fixture
def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    assert found, "scripts/test installs Debian's prometheus package"
    return found


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAIServer]:
    async with FakeOpenAIServer() as fake:
        yield fake


@pytest.fixture
async def key_secret(kube: KubeClient, namespace: str) -> str:
    await create_key_secret(kube, namespace)
    return KEY_SECRET


@pytest.fixture
def system(
    key_secret: str,
    kubeconfig_path: str,
    namespace: str,
    log_dir: Path,
    tmp_path: Path,
    fake_openai: FakeOpenAIServer,
    prometheus_binary: str,
) -> Iterator[tuple[str, str]]:
    """The API, the operator and Prometheus scraping both; yields (api, prometheus) URLs."""
    providers = tmp_path / "providers.yaml"
    providers.write_text(
        yaml.safe_dump(
            {
                "providers": {
                    "local": {"type": "local"},
                    "openai": {
                        "type": "openai",
                        "baseURL": fake_openai.base_url,
                        "keys": [{"secretRef": {"name": key_secret, "key": "api-key"}}],
                    },
                }
            }
        )
    )
    api_port, metrics_port, prometheus_port = free_port(), free_port(), free_port()
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "asyncjobs", "rules": alert_rules()}]}))
    config = tmp_path / "prometheus.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {
                    "scrape_interval": f"{SCRAPE_SECONDS}s",
                    "evaluation_interval": f"{SCRAPE_SECONDS}s",
                },
                "rule_files": [str(rules)],
                "scrape_configs": [
                    {
                        "job_name": "asyncjobs-api",
                        "static_configs": [{"targets": [f"127.0.0.1:{api_port}"]}],
                    },
                    {
                        "job_name": "asyncjobs-operator",
                        "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
                    },
                ],
            }
        )
    )
    common = [
        "--kubeconfig",
        kubeconfig_path,
        "--namespace",
        namespace,
        "--providers-config",
        str(providers),
    ]
    operator = ManagedProcess(
        "operator",
        python_module(
            "asyncjobs.controller.main",
            *common,
            "--metrics-port",
            str(metrics_port),
            "--backoff-base-seconds",
            "0.1",
            "--webhook-first-retry-seconds",
            "0.2",
        ),
        log_dir=log_dir,
    )
    api = ManagedProcess(
        "api",
        python_module(
            "asyncjobs.api.main", *common, "--host", "127.0.0.1", "--port", str(api_port)
        ),
        log_dir=log_dir,
    )
    prometheus = ManagedProcess(
        "prometheus",
        [
            prometheus_binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
        ],
        log_dir=log_dir,
    )
    with operator, api, prometheus:
        operator.wait_http_ok(f"http://127.0.0.1:{metrics_port}/healthz")
        api.wait_http_ok(f"http://127.0.0.1:{api_port}/readyz")
        prometheus.wait_http_ok(f"http://127.0.0.1:{prometheus_port}/-/ready")
        yield f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{prometheus_port}"


VIRTUAL_KEY = "sk-bf-dashboard-team"


async def create_governed_key(kube: KubeClient, namespace: str) -> None:
    """A virtual key that may use only openai/gpt-*: its jobs and one refusal feed the
    per-key panels."""
    data = {"key": VIRTUAL_KEY, "id": "team-dash", "allowedModels": "openai/gpt-*"}
    await kube.create(
        resources.secrets_path(namespace),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "vk-dash", "labels": {resources.LABEL_VIRTUAL_KEY: "true"}},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        },
    )


async def run_keyed_jobs(api: str) -> None:
    """A job of the virtual key and a refused submit, once the API knows the key."""
    headers = {"x-bf-vk": VIRTUAL_KEY}
    body = {"model": "openai/gpt-keyed", "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            async with session.post(
                f"{api}/v1/async/chat/completions", json=body, headers=headers
            ) as answer:
                if answer.status == 202:
                    url = f"{api}/v1/async/chat/completions/{(await answer.json())['id']}"
                    break
                assert answer.status == 400, await answer.text()  # the key not seen yet
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the virtual key was never accepted")
        blocked = {**body, "model": "local/echo"}
        async with session.post(
            f"{api}/v1/async/chat/completions", json=blocked, headers=headers
        ) as answer:
            assert answer.status == 403, await answer.text()
        for _ in range(300):
            async with session.get(url, headers=headers) as answer:
                if answer.status == 200:
                    return
            await asyncio.sleep(0.1)
        pytest.fail(f"{url} did not finish")


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[list[int], str]]:
    """A webhook receiver that answers its first delivery 503 (so one retry is counted),
    then 200; yields the statuses it answered and its URL."""
    answered: list[int] = []

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        answered.append(503 if not answered else 200)
        return web.Response(status=answered[-1])

    app = web.Application()
    app.router.add_post("/hook", handle)
    async with TestServer(app, host="127.0.0.1") as server:
        yield answered, str(server.make_url("/hook"))


async def notify_once(api: str, receiver_url: str, answered: list[int]) -> None:
    """A job whose completion webhook fails once (503), then is delivered."""
    async with aiohttp.ClientSession() as session:
        endpoint = {"name": "dashboard", "url": receiver_url, "allow_private_network": True}
        async with session.post(f"{api}/api/webhooks", json=endpoint) as answer:
            assert answer.status == 201, await answer.text()
        body = {"model": "local/echo", "messages": [{"role": "user", "content": "hook"}]}
        headers = {"x-bf-async-webhook": "dashboard"}
        async with session.post(
            f"{api}/v1/async/chat/completions", json=body, headers=headers
        ) as answer:
            assert answer.status == 202, await answer.text()
    for _ in range(300):
        if answered == [503, 200]:
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"the webhook was not delivered: {answered}")


async def run_jobs(api: str, fake: FakeOpenAIServer) -> None:
    """Completed, retried and failed jobs, so every series the panels use exists."""
    fake.script("gpt-retry", {"status": 429, "retry_after": 0})
    fake.script("gpt-bad", {"status": 400, "message": "bad parameter", "param": "messages"})
    bodies = [
        (
            "chat/completions",
            {"model": "local/echo", "messages": [{"role": "user", "content": "hi"}]},
        ),
        ("embeddings", {"model": "local/embed", "input": "hello"}),
        (
            "chat/completions",
            {"model": "openai/gpt-retry", "messages": [{"role": "user", "content": "again"}]},
        ),
        (
            "chat/completions",
            {"model": "openai/gpt-bad", "messages": [{"role": "user", "content": "no"}]},
        ),
    ]
    async with aiohttp.ClientSession() as session:
        pending: list[str] = []
        for path, body in bodies:
            async with session.post(f"{api}/v1/async/{path}", json=body) as answer:
                assert answer.status == 202, await answer.text()
                pending.append(f"{api}/v1/async/{path}/{(await answer.json())['id']}")
        for url in pending:
            for _ in range(300):
                async with session.get(url) as answer:
                    if answer.status == 200:
                        break
                await asyncio.sleep(0.1)
            else:
                pytest.fail(f"{url} did not finish")


async def wait_for_data(prometheus: str, query: str, timeout: float = 30) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    answer: dict[str, Any] = {}
    while loop.time() < deadline:
        answer = await asyncio.to_thread(prometheus_query, prometheus, query)
        if answer["status"] == "success" and answer["data"]["result"]:
            return answer
        await asyncio.sleep(SCRAPE_SECONDS)
    return answer


@pytest.mark.timeout(240)
async def test_every_panel_and_alert_query_returns_data(
    system: tuple[str, str],
    fake_openai: FakeOpenAIServer,
    kube: KubeClient,
    namespace: str,
    receiver: tuple[list[int], str],
) -> None:
    api, prometheus = system
    await create_governed_key(kube, namespace)
    await run_jobs(api, fake_openai)
    await run_keyed_jobs(api)
    await notify_once(api, receiver[1], receiver[0])
    # Rates need two samples after the jobs ran; later queries then find data at once.
    await asyncio.sleep(3 * SCRAPE_SECONDS)
    empty = []
    for title, query in dashboard_queries():
        answer = await wait_for_data(prometheus, query)
        assert answer["status"] == "success", f"{title}: {answer}"
        if not answer["data"]["result"]:
            empty.append(title)
    for rule in alert_rules():
        answer = await wait_for_data(prometheus, alert_signal(rule["expr"]))
        assert answer["status"] == "success", f"{rule['alert']}: {answer}"
        if not answer["data"]["result"]:
            empty.append(rule["alert"])
    assert empty == [], f"queries with no data: {empty}"
    # The failures panel splits by reason: the 400 is a ProviderError, the rest succeeded.
    reasons = await wait_for_data(
        prometheus,
        'sum by (outcome, reason) (asyncjobs_operator_jobs_finished_total{provider="openai"})',
    )
    by_reason = {
        (row["metric"].get("outcome"), row["metric"].get("reason")): float(row["value"][1])
        for row in reasons["data"]["result"]
    }
    # (The virtual key's job is the second openai job that succeeded.)
    assert by_reason == {("failed", "ProviderError"): 1.0, ("completed", "Succeeded"): 2.0}
    # The per-key panels show the key's own numbers, by its id.
    refusals = await wait_for_data(
        prometheus, "sum by (key, reason) (asyncjobs_api_key_refusals_total)"
    )
    assert [
        (row["metric"]["key"], row["metric"]["reason"], float(row["value"][1]))
        for row in refusals["data"]["result"]
    ] == [("team-dash", "model_blocked", 1.0)]
    tokens = await wait_for_data(
        prometheus, "sum by (key, direction) (asyncjobs_operator_key_tokens_total)"
    )
    by_direction = {
        (row["metric"]["key"], row["metric"]["direction"]): float(row["value"][1])
        for row in tokens["data"]["result"]
    }
    # The fake answers a one-message chat with 5 prompt and 3 completion tokens.
    assert by_direction == {("team-dash", "input"): 5.0, ("team-dash", "output"): 3.0}
    # The webhook panels count the one delivery, its one retry and both attempts.
    webhooks = {
        "sum(asyncjobs_operator_webhook_deliveries_total)": 1.0,
        'sum(asyncjobs_operator_webhook_deliveries_total{outcome="delivered"})': 1.0,
        "sum(asyncjobs_operator_webhook_retries_total)": 1.0,
        "sum(asyncjobs_operator_webhook_attempt_seconds_count)": 2.0,
        "sum(asyncjobs_operator_webhook_pending)": 0.0,
    }
    for query, expected in webhooks.items():
        answer = await wait_for_data(prometheus, f"{query} == {expected}")
        assert answer["data"]["result"], f"{query} is not {expected}: {answer}"
    loaded = await asyncio.to_thread(prometheus_query_rules, prometheus)
    assert {rule["name"] for rule in loaded} == {rule["alert"] for rule in alert_rules()}
    assert all(rule["health"] == "ok" for rule in loaded), loaded


def prometheus_query_rules(base: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{base}/api/v1/rules", timeout=10) as answer:
        groups = json.load(answer)["data"]["groups"]
    return [rule for group in groups for rule in group["rules"]]
