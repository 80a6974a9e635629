"""Reading virtual-key Secrets: the key itself or only its SHA-256, an optional id."""

from __future__ import annotations

import base64
import hashlib

import pytest

from asyncjobs.api.virtual_keys import KeyEntry, KeyRing, entry_from_secret

KEY = "sk-bf-team-a"
KEY_SHA = hashlib.sha256(KEY.encode()).hexdigest()


def secret(**data: str) -> dict[str, object]:
    return {
        "metadata": {"name": "team-a"},
        "data": {name: base64.b64encode(value.encode()).decode() for name, value in data.items()},
    }


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param({"key": KEY}, KeyEntry("team-a", "team-a", KEY_SHA), id="key-named-by-secret"),
        pytest.param(
            {"key": KEY, "id": "vk-1"}, KeyEntry("team-a", "vk-1", KEY_SHA), id="key-and-id"
        ),
        pytest.param({"sha256": KEY_SHA}, KeyEntry("team-a", "team-a", KEY_SHA), id="digest-only"),
        pytest.param(
            {"sha256": KEY_SHA.upper(), "id": "vk-2"},
            KeyEntry("team-a", "vk-2", KEY_SHA),
            id="digest-in-capitals",
        ),
        pytest.param({}, None, id="neither"),
        pytest.param({"sha256": "abc"}, None, id="digest-too-short"),
        pytest.param({"key": KEY, "id": "x" * 129}, None, id="id-too-long"),
        pytest.param(
            {"key": KEY, "weight": "4"},
            KeyEntry("team-a", "team-a", KEY_SHA, weight=4),
            id="weight",
        ),
        pytest.param(
            {"key": KEY, "weight": "0"}, KeyEntry("team-a", "team-a", KEY_SHA), id="weight-ignored"
        ),
    ],
)
def test_entry_from_secret(data: dict[str, str], expected: KeyEntry | None) -> None:
    assert entry_from_secret(secret(**data)) == expected


def test_the_ring_answers_each_keys_weight() -> None:
    weighted = entry_from_secret(secret(key=KEY, id="vk-w", weight="7"))
    plain = entry_from_secret({**secret(key="sk-bf-other"), "metadata": {"name": "other"}})
    assert weighted is not None
    assert plain is not None
    ring = KeyRing([weighted, plain])
    assert ring.weight("vk-w") == 7
    assert ring.weight("other") is None


def test_a_digest_only_secret_resolves_the_key_it_hashes() -> None:
    entry = entry_from_secret(secret(sha256=KEY_SHA, id="vk-3"))
    assert entry is not None
    ring = KeyRing([entry])
    assert ring.resolve(KEY) == "vk-3"
    assert ring.resolve("sk-bf-other") is None
