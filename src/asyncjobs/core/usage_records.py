"""Durable per-key usage: what a virtual key's deleted jobs spent, per budget period.

A job's usage is written on the job itself (status.usage, by the operator), and the API
sums its watch of the jobs (api/key_usage.py). A job is deleted when its result expires
(an hour by default), far sooner than a day's or a month's budget ends, so before the
operator deletes an expired job it *folds* the job's usage into a record of its key: a
ConfigMap in the jobs' namespace (never the keys' namespace, which the operator must not
read), labelled `asyncjobs.dev/key-usage`, named from a hash of the key id:

    data.keyId     the key's id (as jobs record it; never the key)
    data.periods   JSON {"day:2026-12-01T00:00:00Z": {"requests", "inputTokens",
                   "outputTokens", "totalTokens"}, …}: each hour, day, ISO week and month
                   a folded job finished in; only the current and the previous period of
                   each kind are kept
    data.folded    JSON list of the names of the latest folded jobs (at most
                   FOLDED_NAMES): a fold is skipped when its job is listed, so a fold
                   repeated after a crash before the delete counts once, and the API
                   leaves a listed job out of its live sum while it still exists

The fold is a read-modify-write preconditioned on the record's resourceVersion, so
operator shards folding jobs of one key at once never lose each other's counts (a 409
reads again). `fold` is pure; the operator's adapter is controller/usage_folder.py.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from asyncjobs.core.budget_periods import Period, period_key, period_start
from asyncjobs.core.jobs import parse_time

LABEL = "asyncjobs.dev/key-usage"
FOLDED_NAMES = 512

_FIELDS = ("requests", "inputTokens", "outputTokens", "totalTokens")


def record_name(key_id: str) -> str:
    """The record's name: key ids may hold characters a name may not."""
    return "asyncjobs-usage-" + hashlib.sha256(key_id.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class JobSpend:
    name: str
    key_id: str
    done: datetime
    input_tokens: int
    output_tokens: int
    total_tokens: int


def spend_of(obj: Mapping[str, Any]) -> JobSpend | None:
    """What a finished job of a virtual key spent; None for a job without a key or not
    finished (nothing to fold)."""
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    key_id = spec.get("virtualKeyId")
    done = status.get("completionTime")
    if not key_id or not done or status.get("phase") not in ("Completed", "Failed"):
        return None
    usage = status.get("usage") or {}
    prompt, completion = _count(usage.get("promptTokens")), _count(usage.get("completionTokens"))
    return JobSpend(
        name=obj["metadata"]["name"],
        key_id=str(key_id),
        done=parse_time(done),
        input_tokens=prompt,
        output_tokens=completion,
        total_tokens=max(_count(usage.get("totalTokens")), prompt + completion),
    )


def _count(value: object) -> int:
    return value if isinstance(value, int) and value > 0 else 0


@dataclass(frozen=True)
class Record:
    key_id: str
    periods: dict[str, dict[str, int]]
    folded: tuple[str, ...]

    def tokens(self, period: Period, start: datetime) -> int:
        key = period_key(period, start)
        return self.periods.get(key, {}).get("totalTokens", 0)

    def totals(self, period: Period, start: datetime) -> dict[str, int]:
        found = self.periods.get(period_key(period, start), {})
        return {name: found.get(name, 0) for name in _FIELDS}


def read(data: Mapping[str, str] | None) -> Record | None:
    """A record's content; None when it is not one (a mangled record counts nothing)."""
    if not data or not data.get("keyId"):
        return None
    try:
        periods = json.loads(data.get("periods") or "{}")
        folded = json.loads(data.get("folded") or "[]")
    except ValueError:
        return None
    if not isinstance(periods, dict) or not isinstance(folded, list):
        return None
    clean = {
        str(key): {name: _count(values.get(name)) for name in _FIELDS}
        for key, values in periods.items()
        if isinstance(values, dict)
    }
    return Record(data["keyId"], clean, tuple(str(name) for name in folded))


def fold(data: Mapping[str, str] | None, spend: JobSpend, now: datetime) -> dict[str, str] | None:
    """The record's data with `spend` added to each period its job finished in; None
    when the job was folded already. Periods older than the previous one of their kind
    (as of `now`) are dropped, so a record stays a few hundred bytes plus its names."""
    record = read(data) or Record(spend.key_id, {}, ())
    if spend.name in record.folded:
        return None
    periods = {key: dict(values) for key, values in record.periods.items()}
    for period in Period:
        totals = periods.setdefault(period_key(period, spend.done), dict.fromkeys(_FIELDS, 0))
        totals["requests"] += 1
        totals["inputTokens"] += spend.input_tokens
        totals["outputTokens"] += spend.output_tokens
        totals["totalTokens"] += spend.total_tokens
    kept = {key: values for key, values in periods.items() if _recent(key, now)}
    folded = [*record.folded, spend.name][-FOLDED_NAMES:]
    return {
        "keyId": spend.key_id,
        "periods": json.dumps(kept, sort_keys=True, separators=(",", ":")),
        "folded": json.dumps(folded, separators=(",", ":")),
    }


def _recent(key: str, now: datetime) -> bool:
    kind, _, start_text = key.partition(":")
    try:
        period = Period(kind)
        start = parse_time(start_text)
    except ValueError:
        return False
    previous = period_start(period, period_start(period, now) - timedelta(microseconds=1))
    return start >= previous


def configmap(key_id: str, data: Mapping[str, str], labels: Mapping[str, str]) -> dict[str, Any]:
    """A new record object."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": record_name(key_id), "labels": {**labels, LABEL: "true"}},
        "data": dict(data),
    }
