"""The fair-share rules the API and the operator share (core/fair_share.py)."""

from __future__ import annotations

import re

import pytest

from asyncjobs.core import fair_share


@pytest.mark.parametrize(
    ("header", "value"), [(None, None), ("0", 0), ("10", 10), ("-10", -10), ("7", 7), ("-1", -1)]
)
def test_priorities_in_range_are_read(header: str | None, value: int | None) -> None:
    assert fair_share.parse_priority(header) == value


@pytest.mark.parametrize(
    "header",
    [
        "",
        " 1",
        "1 ",
        "+1",
        "11",
        "-11",
        "100",
        "1.5",
        "high",
        "0x1",
        "\u0661",
        "1e1",
        "-0",
        "05",
        "010",
    ],
)
def test_anything_else_is_refused_with_one_message(header: str) -> None:
    message = "invalid x-asyncjobs-priority header: must be a whole number from -10 to 10"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        fair_share.parse_priority(header)


@pytest.mark.parametrize(
    ("text", "weight"),
    [
        ("1", 1),
        (" 5\n", 5),
        ("1000", 1000),
        ("0", None),
        ("1001", None),
        ("-1", None),
        ("x", None),
        ("", None),
        ("²", None),
    ],
)
def test_key_weights(text: str, weight: int | None) -> None:
    assert fair_share.parse_weight(text) == weight


def test_a_job_spec_gives_group_weight_and_priority_with_defaults() -> None:
    spec = {"virtualKeyId": "team-a", "keyWeight": 4, "priority": -2}
    assert fair_share.group_of(spec) == "team-a"
    assert fair_share.weight_of(spec) == 4
    assert fair_share.priority_of(spec) == -2
    assert fair_share.group_of({}) == fair_share.ANONYMOUS
    assert fair_share.weight_of({"keyWeight": 0}) == 1
    assert fair_share.priority_of({"priority": 99}) == 0


def test_metric_labels_hash_key_ids() -> None:
    label = fair_share.group_label("team-a")
    assert len(label) == 12
    assert "team" not in label
    assert fair_share.group_label(fair_share.ANONYMOUS) == "anonymous"
