"""API keys of one provider and the order in which a call tries them.

A provider may hold several keys (separate quotas, separate projects), each with a
weight and optionally the models it may be used for. A call tries them in a weighted
random order, so load spreads by weight, and moves to the next key when one is rejected
(401) or throttled (429). The choice is a pure function of the keys, the model and a
random source, so tests pin it with a seeded Random.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase


@dataclass(frozen=True)
class ApiKey:
    # repr=False keeps the secret out of logs, tracebacks and test failure output.
    value: str = field(repr=False)
    weight: float = 1.0
    # Model names or shell-style patterns ("gpt-4o*"); empty means every model.
    models: tuple[str, ...] = ()

    def serves(self, model: str) -> bool:
        return not self.models or any(fnmatchcase(model, pattern) for pattern in self.models)


def key_order(keys: Sequence[ApiKey], model: str, rng: random.Random) -> list[ApiKey]:
    """The keys that serve `model`, in a random order where heavier keys tend to come first.

    Each key draws u**(1/weight) for a uniform u and keys are sorted by that draw, which
    makes the first key proportional to weight and the rest a weighted order of the
    remainder (weighted sampling without replacement).
    """
    candidates = [key for key in keys if key.serves(model)]
    draws = [rng.random() ** (1.0 / key.weight) for key in candidates]
    ranked = sorted(zip(draws, range(len(candidates)), strict=True), reverse=True)
    return [candidates[index] for _, index in ranked]
