"""The submit rate per virtual key: a token bucket per key, a default and a key's own
rate from its Secret, 429 with Retry-After before anything is written (no cluster)."""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import timedelta

import pytest
from aiohttp.test_utils import TestClient, TestServer

from asyncjobs.api.app import create_app
from asyncjobs.api.quota import Limits, SubmitRate, SubmitRates, key_rate
from asyncjobs.api.settings import Settings
from asyncjobs.api.virtual_keys import KeyEntry, KeyRing, digest, entry_from_secret
from tests.unit.api.conftest import KEY_A, KEY_B
from tests.unit.api.fakes import FakeClock, FakeJobStore

CHAT = {"model": "local/echo", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("default", "override", "expected"),
    [
        (None, None, None),
        (SubmitRate(60), None, SubmitRate(60)),
        (SubmitRate(60, burst=5), 120, SubmitRate(120, burst=5)),
        (None, 30, SubmitRate(30)),
        (SubmitRate(60), 0, None),  # the key's Secret lifts the limit for it
    ],
)
def test_which_rate_applies_to_a_key(
    default: SubmitRate | None, override: int | None, expected: SubmitRate | None
) -> None:
    assert key_rate(default, override) == expected


# (seconds since start, key) -> refused? and the Retry-After told.
@pytest.mark.parametrize(
    ("case", "rate", "submits", "expected"),
    [
        (
            "60/min without a burst: one a second",
            SubmitRate(60),
            [(0.0, "a"), (0.2, "a"), (1.0, "a")],
            [None, "1", None],
        ),
        (
            "a burst of three, then the rate",
            SubmitRate(60, burst=3),
            [(0.0, "a"), (0.0, "a"), (0.0, "a"), (0.0, "a"), (1.0, "a")],
            [None, None, None, "1", None],
        ),
        (
            "6/min: the wait is told in whole seconds",
            SubmitRate(6),
            [(0.0, "a"), (2.5, "a"), (10.0, "a")],
            [None, "8", None],
        ),
        (
            "each key has its own bucket",
            SubmitRate(60),
            [(0.0, "a"), (0.0, "b"), (0.1, "a"), (0.1, "b")],
            [None, None, "1", "1"],
        ),
        (
            "a refused submit spends nothing",
            SubmitRate(60),
            [(0.0, "a"), (0.5, "a"), (0.9, "a"), (1.0, "a")],
            [None, "1", "1", None],
        ),
    ],
)
def test_the_bucket_refuses_with_the_wait(
    case: str, rate: SubmitRate, submits: list[tuple[float, str]], expected: list[str | None]
) -> None:
    rates = SubmitRates()
    told = []
    for now, key in submits:
        refused = rates.take(key, rate, 1000.0 + now)
        if refused is None:
            told.append(None)
            continue
        assert refused.status == 429, case
        assert "request limit exceeded (at most" in refused.message
        told.append(refused.headers["Retry-After"])
    assert told == expected, case


def test_a_changed_rate_keeps_what_was_spent() -> None:
    rates = SubmitRates()
    assert rates.take("a", SubmitRate(60, burst=2), 0.0) is None
    assert rates.take("a", SubmitRate(60, burst=2), 0.0) is None
    # Raising the rate does not hand out a fresh burst.
    assert rates.take("a", SubmitRate(600, burst=10), 0.0) is not None
    assert rates.take("a", SubmitRate(600, burst=10), 0.1) is None
    # Lifting the limit forgets the bucket.
    assert rates.take("a", None, 0.1) is None


def secret(**data: str) -> dict[str, object]:
    encoded = {name: base64.b64encode(value.encode()).decode() for name, value in data.items()}
    return {"metadata": {"name": "vk"}, "data": encoded}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({}, None),
        ({"submitsPerMinute": "120"}, 120),
        ({"submitsPerMinute": " 0 "}, 0),
        ({"submitsPerMinute": "-5"}, None),  # ignored: the default applies
        ({"submitsPerMinute": "fast"}, None),
    ],
)
def test_a_keys_secret_may_set_its_own_rate(data: dict[str, str], expected: int | None) -> None:
    entry = entry_from_secret(secret(key=KEY_A, **data))
    assert entry is not None
    assert entry.submits_per_minute == expected
    assert KeyRing([entry]).submits_per_minute(entry.key_id) == expected


async def test_a_key_over_its_rate_gets_429_and_nothing_is_written(settings: Settings) -> None:
    store = FakeJobStore()
    clock = FakeClock()
    keys = KeyRing(
        [
            KeyEntry("vk-a", "team-a", digest(KEY_A)),
            KeyEntry("vk-b", "team-b", digest(KEY_B), submits_per_minute=0),
        ]
    )
    limited = replace(settings, quota=Limits(submit_rate_per_key=SubmitRate(30, burst=2)))
    app = create_app(limited, store=store, keys=keys, clock=clock)
    async with TestClient(TestServer(app)) as client:

        async def submit(key: str) -> tuple[int, str | None, dict[str, object]]:
            answer = await client.post(
                "/v1/async/chat/completions", json=CHAT, headers={"x-bf-vk": key}
            )
            return answer.status, answer.headers.get("Retry-After"), await answer.json()

        assert [(await submit(KEY_A))[0] for _ in range(2)] == [202, 202]
        status, retry_after, body = await submit(KEY_A)
        assert (status, retry_after) == (429, "2")
        assert body["status_code"] == 429
        assert "at most 30 submits per minute" in str(body["error"])
        # The other key's Secret lifts the limit for it.
        assert [(await submit(KEY_B))[0] for _ in range(5)] == [202] * 5
        clock.advance(timedelta(seconds=2))
        assert (await submit(KEY_A))[0] == 202
    assert len(store.objects) == 2 + 5 + 1
