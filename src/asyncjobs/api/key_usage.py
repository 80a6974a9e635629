"""What each virtual key has spent: requests and tokens of its finished jobs, per period.

The ledger is the jobs themselves: the operator writes the provider's token counts into
the terminal status (`status.usage`, `status.provider`), and every API replica already
watches every AsyncJob for its cache. So each replica sums the same facts, whichever
operator shard ran a job and whichever replica took the submit, and a restarted replica
rebuilds the sums from its first list; nothing is counted twice because a job is one
object, counted by its name. The sums live beside the job cache (store.JobCache feeds
`seen`/`forget`), so a submit's budget check costs no apiserver round trip.

Jobs leave the cache when their result expires, and their usage with them: before the
operator deletes an expired job it folds the job's usage into its key's usage record
(core/usage_records.py, a ConfigMap in the jobs' namespace), which the API watches too
(`put_record`). A key's usage in a period is its record's totals for that period plus
its live finished jobs that the record does not list as folded: a job between its fold
and its delete is counted once, and a deleted job still counts until its period ends.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asyncjobs.core.budget_periods import Period, next_start, period_key, period_start
from asyncjobs.core.jobs import JobView, parse_time
from asyncjobs.core.usage_records import Record


@dataclass(frozen=True)
class Spent:
    """One finished job's usage."""

    done: datetime
    provider: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


@dataclass
class Totals:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def add(self, spent: Spent) -> None:
        self.requests += 1
        self.prompt_tokens += spent.prompt_tokens
        self.completion_tokens += spent.completion_tokens
        self.total_tokens += spent.total_tokens

    def document(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "input_tokens": self.prompt_tokens,
            "output_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


class KeyUsage:
    def __init__(self) -> None:
        # key id -> job name -> its usage; finished jobs of keys only.
        self._spent: dict[str, dict[str, Spent]] = {}
        # key id -> period key (budget_periods.period_key) -> tokens of those jobs, kept
        # as jobs come and go, so a budget check does not scan a key's jobs.
        self._tokens: dict[str, Counter[str]] = {}
        # Usage records by object name, and by key id (one record per key).
        self._records: dict[str, Record] = {}
        self._by_key: dict[str, Record] = {}
        self._folded: dict[str, frozenset[str]] = {}

    def put_record(self, name: str, record: Record | None) -> None:
        """A usage record as the watch delivered it; None: deleted or not a record."""
        if record is None:
            self._records.pop(name, None)
        else:
            self._records[name] = record
        self._reindex()

    def replace_records(self, records: dict[str, Record]) -> None:
        self._records = dict(records)
        self._reindex()

    def _reindex(self) -> None:
        self._by_key = {record.key_id: record for record in self._records.values()}
        self._folded = {key: frozenset(record.folded) for key, record in self._by_key.items()}

    def seen(self, view: JobView) -> None:
        if not view.virtual_key_id or not view.phase.terminal or not view.completed_at:
            return
        # A job is counted as a request once it finished, failed ones too (a provider
        # error may still cost), with the tokens its answer reported (0 without one).
        self.forget(view)
        spent = Spent(
            done=parse_time(view.completed_at),
            provider=view.provider or view.model.partition("/")[0],
            model=view.model,
            prompt_tokens=view.prompt_tokens,
            completion_tokens=view.completion_tokens,
            total_tokens=view.total_tokens,
        )
        self._spent.setdefault(view.virtual_key_id, {})[view.job_id] = spent
        self._count(view.virtual_key_id, spent, 1)

    def forget(self, view: JobView) -> None:
        key = view.virtual_key_id or ""
        jobs = self._spent.get(key)
        if jobs is None:
            return
        spent = jobs.pop(view.job_id, None)
        if spent is not None:
            self._count(key, spent, -1)
        if not jobs:
            del self._spent[key]
            self._tokens.pop(key, None)

    def _count(self, key: str, spent: Spent, sign: int) -> None:
        if not spent.total_tokens:
            return
        tokens = self._tokens.setdefault(key, Counter())
        for period in Period:
            tokens[period_key(period, spent.done)] += sign * spent.total_tokens

    def replace(self, views: list[JobView]) -> None:
        self._spent = {}
        self._tokens = {}
        for view in views:
            self.seen(view)

    def _in_period(self, key_id: str, period: Period, now: datetime) -> list[Spent]:
        start, end = period_start(period, now), next_start(period, now)
        jobs = self._spent.get(key_id, {})
        folded = self._folded.get(key_id, frozenset())
        return [
            spent
            for name, spent in jobs.items()
            if start <= spent.done < end and name not in folded
        ]

    def tokens_used(self, key_id: str, period: Period, now: datetime) -> int:
        """Tokens the key's jobs that finished in `now`'s period reported: the running
        sum of its stored jobs, less those its record lists as folded already (at most
        usage_records.FOLDED_NAMES looked at), plus its record's."""
        live = self._tokens.get(key_id, Counter())[period_key(period, now)]
        jobs = self._spent.get(key_id, {})
        start, end = period_start(period, now), next_start(period, now)
        for name in self._folded.get(key_id, frozenset()):
            spent = jobs.get(name)
            if spent is not None and start <= spent.done < end:
                live -= spent.total_tokens
        record = self._by_key.get(key_id)
        folded = record.tokens(period, period_start(period, now)) if record else 0
        return live + folded

    def summary(self, key_id: str, period: Period, now: datetime) -> dict[str, Any]:
        """The key's usage this period: totals and by provider and model."""
        total = Totals()
        record = self._by_key.get(key_id)
        if record is not None:
            # Deleted jobs count in the totals; by model are the live jobs only.
            folded = record.totals(period, period_start(period, now))
            total.requests = folded["requests"]
            total.prompt_tokens = folded["inputTokens"]
            total.completion_tokens = folded["outputTokens"]
            total.total_tokens = folded["totalTokens"]
        by_model: dict[tuple[str, str], Totals] = {}
        for spent in self._in_period(key_id, period, now):
            total.add(spent)
            by_model.setdefault((spent.provider, spent.model), Totals()).add(spent)
        return {
            "period": period.value,
            "period_start": period_start(period, now).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "resets_at": next_start(period, now).strftime("%Y-%m-%dT%H:%M:%SZ"),
            **total.document(),
            "by_model": [
                {"provider": provider, "model": model, **totals.document()}
                for (provider, model), totals in sorted(by_model.items())
            ],
        }
