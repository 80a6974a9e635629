"""The operator's overload flags: their defaults are the policies' own, and they parse."""

from __future__ import annotations

from asyncjobs.controller.main import parse_args
from asyncjobs.core.cooldown import CooldownPolicy
from asyncjobs.core.lifecycle import Policy


def test_the_defaults_are_the_policies_defaults() -> None:
    args = parse_args([])
    assert args.retry_after_max_seconds == Policy().retry_after_max_seconds
    assert args.cooldown_failures == CooldownPolicy().failures_to_open
    assert args.cooldown_max_seconds == CooldownPolicy().max_seconds


def test_the_flags_parse() -> None:
    args = parse_args(
        [
            "--retry-after-max-seconds",
            "30",
            "--cooldown-failures",
            "2",
            "--cooldown-max-seconds",
            "9",
        ]
    )
    assert (args.retry_after_max_seconds, args.cooldown_failures, args.cooldown_max_seconds) == (
        30.0,
        2,
        9.0,
    )
