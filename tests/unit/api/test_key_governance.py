"""Virtual-key governance without a cluster: the pure decision (providers, models, the
token budget and its period), the rules read from a key's Secret, and a submit refused
with Bifrost's governance answers before anything is written."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from asyncjobs.api.app import create_app
from asyncjobs.api.key_governance import Governance, TokenBudget, governance_decision
from asyncjobs.api.settings import Settings
from asyncjobs.api.virtual_keys import KeyEntry, KeyRing, digest, entry_from_secret
from asyncjobs.core.budget_periods import Period, next_start, period_key, period_start
from tests.unit.api.conftest import KEY_A, KEY_B
from tests.unit.api.fakes import FakeClock, FakeJobStore

NOW = datetime(2026, 2, 19, 8, 20, tzinfo=UTC)
CHAT = "/v1/async/chat/completions"


@pytest.mark.parametrize(
    ("period", "start", "end"),
    [
        (Period.HOUR, datetime(2026, 2, 19, 8, tzinfo=UTC), datetime(2026, 2, 19, 9, tzinfo=UTC)),
        (Period.DAY, datetime(2026, 2, 19, tzinfo=UTC), datetime(2026, 2, 20, tzinfo=UTC)),
        # 2026-02-19 is a Thursday: its ISO week began on Monday the 16th.
        (Period.WEEK, datetime(2026, 2, 16, tzinfo=UTC), datetime(2026, 2, 23, tzinfo=UTC)),
        (Period.MONTH, datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)),
    ],
)
def test_a_budget_period_is_a_calendar_window_in_utc(
    period: Period, start: datetime, end: datetime
) -> None:
    assert period_start(period, NOW) == start
    assert next_start(period, NOW) == end
    assert period_start(period, end - timedelta(microseconds=1)) == start
    assert period_key(period, NOW) == f"{period.value}:{start:%Y-%m-%dT%H:%M:%SZ}"


def test_december_rolls_over_into_the_next_year() -> None:
    assert next_start(Period.MONTH, datetime(2026, 12, 31, 23, tzinfo=UTC)) == datetime(
        2027, 1, 1, tzinfo=UTC
    )


RULES = Governance(
    allowed_providers=("openai", "local"),
    allowed_models=("gpt-4o*", "local/echo"),
    token_budget=TokenBudget(1000, Period.DAY),
)


# (models of the submit, tokens spent) -> (status, type, message) or None
@pytest.mark.parametrize(
    ("models", "used", "expected"),
    [
        (("openai/gpt-4o-mini",), 0, None),
        (("openai/GPT-4o",), 999, None),  # case is ignored, as Bifrost's WhiteList does
        (("local/echo",), 0, None),
        (
            ("anthropic/claude-3",),
            0,
            (403, "provider_blocked", "Provider 'anthropic' is not allowed for this virtual key"),
        ),
        (
            ("openai/gpt-3.5-turbo",),
            0,
            (403, "model_blocked", "Model 'gpt-3.5-turbo' is not allowed for this virtual key"),
        ),
        # A pattern with a provider binds to that provider only.
        (
            ("local/embed",),
            0,
            (403, "model_blocked", "Model 'embed' is not allowed for this virtual key"),
        ),
        # Fallbacks are checked like the model: a job must not reach a model by falling back.
        (
            ("openai/gpt-4o", "anthropic/claude-3"),
            0,
            (403, "provider_blocked", "Provider 'anthropic' is not allowed for this virtual key"),
        ),
        (
            ("openai/gpt-4o",),
            1000,
            (
                429,
                "token_limited",
                "Rate limit check failed: rate limit violated for VK: token limit exceeded "
                "(1000/1000, resets every 1d)",
            ),
        ),
        # Blocked models are refused before the budget is looked at (Bifrost's order).
        (
            ("openai/o1",),
            5000,
            (403, "model_blocked", "Model 'o1' is not allowed for this virtual key"),
        ),
    ],
)
def test_governance_decision(
    models: tuple[str, ...], used: int, expected: tuple[int, str, str] | None
) -> None:
    refused = governance_decision(RULES, models, used, NOW)
    if expected is None:
        assert refused is None
        return
    assert refused is not None
    assert (refused.status, refused.error.outer_type, refused.message) == expected


def test_a_key_without_rules_is_not_restricted() -> None:
    assert governance_decision(Governance(), ("any/thing",), 10**9, NOW) is None


def test_the_budget_refusal_says_when_it_resets() -> None:
    rules = Governance(token_budget=TokenBudget(10, Period.HOUR))
    refused = governance_decision(rules, ("local/echo",), 10, NOW)
    assert refused is not None
    assert refused.headers["Retry-After"] == str(40 * 60)  # 08:20 -> 09:00
    assert refused.message.endswith("(10/10, resets every 1h)")


def secret(**data: str) -> dict[str, Any]:
    encoded = {name: base64.b64encode(value.encode()).decode() for name, value in data.items()}
    return {"metadata": {"name": "vk-a"}, "data": {**encoded}}


def test_the_rules_come_from_the_keys_secret() -> None:
    entry = entry_from_secret(
        secret(
            sha256=digest(KEY_A),
            allowedProviders="openai, Local",
            allowedModels="gpt-4o*,local/echo",
            maxPendingJobs="3",
            tokenBudget="50000",
            tokenBudgetPeriod="month",
        )
    )
    assert entry is not None
    assert entry.governance == Governance(
        allowed_providers=("openai", "local"),
        allowed_models=("gpt-4o*", "local/echo"),
        max_pending_jobs=3,
        token_budget=TokenBudget(50000, Period.MONTH),
    )
    assert KeyRing([entry]).governance("vk-a") == entry.governance


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({}, Governance()),
        ({"tokenBudget": "0"}, Governance()),  # 0: no budget
        # Unreadable values fail closed: nothing allowed, a budget of 0.
        ({"allowedModels": ""}, Governance(allowed_models=())),
        ({"tokenBudget": "lots"}, Governance(token_budget=TokenBudget(0))),
        (
            {"tokenBudget": "5", "tokenBudgetPeriod": "fortnight"},  # a day is used
            Governance(token_budget=TokenBudget(5, Period.DAY)),
        ),
        ({"maxPendingJobs": "many"}, Governance()),  # the API's default applies
    ],
)
def test_unreadable_rules_never_open_a_key(data: dict[str, str], expected: Governance) -> None:
    entry = entry_from_secret(secret(sha256=digest(KEY_A), **data))
    assert entry is not None
    assert entry.governance == expected


def chat(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


async def test_a_submit_outside_the_keys_rules_is_refused_and_writes_nothing(
    settings: Settings,
) -> None:
    store, clock = FakeJobStore(), FakeClock(NOW)
    keys = KeyRing(
        [
            KeyEntry("vk-a", "team-a", digest(KEY_A), governance=RULES),
            KeyEntry("vk-b", "team-b", digest(KEY_B)),
        ]
    )
    app = create_app(settings, store=store, keys=keys, clock=clock)
    async with TestClient(TestServer(app)) as client:

        async def submit(key: str, model: str) -> tuple[int, dict[str, Any]]:
            answer = await client.post(CHAT, json=chat(model), headers={"x-bf-vk": key})
            return answer.status, await answer.json()

        status, refused = await submit(KEY_A, "anthropic/claude-3")
        assert status == 403
        assert refused == {
            "type": "provider_blocked",
            "is_bifrost_error": False,
            "status_code": 403,
            "error": {"message": "Provider 'anthropic' is not allowed for this virtual key"},
            "extra_fields": {},
        }
        status, refused = await submit(KEY_A, "openai/gpt-3.5-turbo")
        assert (status, refused["type"]) == (403, "model_blocked")
        assert store.objects == {}
        # Another key without rules submits anything.
        assert (await submit(KEY_B, "anthropic/claude-3"))[0] == 202
        status, accepted = await submit(KEY_A, "openai/gpt-4o-mini")
        assert status == 202

        # The job's answer reports 1,200 tokens: over the budget, it still completed...
        job_id = accepted["id"]
        store.complete(job_id, b"{}", completed=NOW, ttl=timedelta(hours=1))
        store.objects[job_id]["status"]["usage"] = {"promptTokens": 700, "completionTokens": 500}
        # ...and the key's next submit is refused until the day ends.
        status, refused = await submit(KEY_A, "openai/gpt-4o-mini")
        assert status == 429
        assert refused["type"] == "token_limited"
        assert refused["error"]["message"] == (
            "Rate limit check failed: rate limit violated for VK: token limit exceeded "
            "(1200/1000, resets every 1d)"
        )
        assert len(store.objects) == 2

        usage = await client.get("/v1/async/usage", headers={"x-bf-vk": KEY_A})
        assert usage.status == 200
        document = await usage.json()
        assert document["virtual_key_id"] == "team-a"
        assert (document["requests"], document["input_tokens"], document["output_tokens"]) == (
            1,
            700,
            500,
        )
        assert document["limits"]["token_budget"] == 1000
        assert document["by_model"] == [
            {
                "provider": "openai",
                "model": "openai/gpt-4o-mini",
                "requests": 1,
                "input_tokens": 700,
                "output_tokens": 500,
                "total_tokens": 1200,
            }
        ]

        # The next day the budget starts again.
        clock.advance(timedelta(days=1))
        assert (await submit(KEY_A, "openai/gpt-4o-mini"))[0] == 202

        metrics = await (await client.get("/metrics")).text()
        assert 'asyncjobs_api_key_refusals_total{key="team-a",reason="provider_blocked"} 1.0' in (
            metrics
        )
        assert 'asyncjobs_api_key_refusals_total{key="team-a",reason="token_limited"} 1.0' in (
            metrics
        )
        assert json.dumps(document)  # the usage answer is plain JSON


async def test_a_keys_own_pending_cap_replaces_the_default(settings: Settings) -> None:
    store, clock = FakeJobStore(), FakeClock(NOW)
    keys = KeyRing(
        [KeyEntry("vk-a", "team-a", digest(KEY_A), governance=Governance(max_pending_jobs=1))]
    )
    app = create_app(settings, store=store, keys=keys, clock=clock)
    async with TestClient(TestServer(app)) as client:
        statuses = []
        for _ in range(2):
            answer = await client.post(CHAT, json=chat("local/echo"), headers={"x-bf-vk": KEY_A})
            statuses.append(answer.status)
        assert statuses == [202, 429]
        assert (await answer.json())["error"]["message"].startswith(
            "backlog full for this virtual key: 1 of its jobs"
        )


def test_the_readmes_key_manifest_sets_the_rules_it_describes() -> None:
    """api/README.md shows a governed key's Secret; read as the API reads it, it holds
    the rules the text says."""
    readme = (Path(__file__).resolve().parents[3] / "api" / "README.md").read_text()
    section = readme[readme.index("## Virtual-key governance") :]
    manifest = section[
        section.index("```yaml") + len("```yaml") : section.index("```\n", section.index("```yaml"))
    ]
    document = yaml.safe_load(manifest)
    data = {
        k: base64.b64encode(str(v).encode()).decode() for k, v in document["stringData"].items()
    }
    entry = entry_from_secret({"metadata": document["metadata"], "data": data})
    assert entry is not None
    assert entry.key_id == "team-a"
    assert entry.governance == Governance(
        allowed_providers=("openai", "anthropic"),
        allowed_models=("gpt-4o*", "anthropic/claude-3-5-*"),
        max_pending_jobs=500,
        token_budget=TokenBudget(5_000_000, Period.MONTH),
    )
    assert document["metadata"]["labels"] == {"asyncjobs.dev/virtual-key": "true"}


async def test_the_provider_routes_refuse_in_their_providers_shape(settings: Settings) -> None:
    """The Anthropic route submits a chat job too: a key that may not use anthropic gets
    the 403 there, in Anthropic's error shape, and nothing is written."""
    store, clock = FakeJobStore(), FakeClock(NOW)
    rules = Governance(allowed_providers=("openai",))
    keys = KeyRing([KeyEntry("vk-a", "team-a", digest(KEY_A), governance=rules)])
    app = create_app(settings, store=store, keys=keys, clock=clock)
    body = {
        "model": "claude-3-5-haiku",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "hi"}],
    }
    async with TestClient(TestServer(app)) as client:
        answer = await client.post(
            "/anthropic/v1/messages", json=body, headers={"x-bf-vk": KEY_A, "x-bf-async": "1"}
        )
        assert answer.status == 403
        document = await answer.json()
        assert document["type"] == "error"
        assert document["error"]["message"] == (
            "Provider 'anthropic' is not allowed for this virtual key"
        )
    assert store.objects == {}
