"""Every Prometheus metric of the operator, in one place.

Label values are bounded sets (request types, configured provider names, outcomes,
condition reasons, status codes), never a job id: a per-object label would grow without
bound. The metrics live in their own registry so tests and several operators in one
process do not clash.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from asyncjobs.core.fair_share import group_label
from asyncjobs.core.jobs import Phase

OUTCOME_COMPLETED = "completed"
OUTCOME_FAILED = "failed"

_PHASES = frozenset(phase.value for phase in Phase)

# Provider calls that got no HTTP answer (timeouts, refused connections).
STATUS_NO_ANSWER = "none"

# How a provider call ended.
CALL_SUCCEEDED = "succeeded"
CALL_FAILED = "failed"  # an HTTP error answer
CALL_NO_ANSWER = "no_answer"

# What became of a job whose operator stopped during a call.
RESUME_REUSED = "result_reused"  # its result was stored: finished without a new call
RESUME_REPEATED = "call_repeated"
RESUME_FAILED = "failed"  # deadline passed, or interrupted too often

# How a completion-webhook delivery ended (core/webhook_delivery.py Outcome, plus skipped:
# the endpoint was gone, disabled or not subscribed to the event).
WEBHOOK_DELIVERED = "delivered"
WEBHOOK_FAILED = "failed"
WEBHOOK_SKIPPED = "skipped"
# How one delivery attempt ended: a 2xx, another answer, or no answer at all.
ATTEMPT_SUCCEEDED = "succeeded"
ATTEMPT_FAILED = "failed"
ATTEMPT_NO_ANSWER = "no_answer"

# From a local call in a millisecond to a slow image edit in minutes.
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.jobs_finished = Counter(
            "asyncjobs_operator_jobs_finished",
            "Jobs that reached a terminal phase; reason is the terminal condition's reason "
            "(core/conditions.py Reason), so failures can be told apart by cause.",
            ["request_type", "provider", "outcome", "reason"],
            registry=r,
        )
        # Per virtual key (its id, bounded by the keys administrators made; jobs without a
        # key are not counted here), provider and model (the model the key asked for; a
        # key's allowedModels bounds them).
        self.key_requests = Counter(
            "asyncjobs_operator_key_requests",
            "Finished jobs of each virtual key, by key id, provider, model and outcome.",
            ["key", "provider", "model", "outcome"],
            registry=r,
        )
        self.key_tokens = Counter(
            "asyncjobs_operator_key_tokens",
            "Tokens the providers reported for each virtual key's jobs, by key id, provider,"
            " model and direction (input: prompt, output: completion).",
            ["key", "provider", "model", "direction"],
            registry=r,
        )
        self.queue_wait = Histogram(
            "asyncjobs_operator_queue_wait_seconds",
            "From submission to the first provider call starting.",
            buckets=_SECONDS,
            registry=r,
        )
        self.execution = Histogram(
            "asyncjobs_operator_execution_seconds",
            "From the first provider call starting to the terminal status.",
            buckets=_SECONDS,
            registry=r,
        )
        self.end_to_end = Histogram(
            "asyncjobs_operator_end_to_end_seconds",
            "From submission to the terminal status.",
            buckets=_SECONDS,
            registry=r,
        )
        self.jobs = Gauge(
            "asyncjobs_operator_jobs",
            "AsyncJobs in the served namespace, by phase (as the watch last delivered them).",
            ["phase"],
            registry=r,
        )
        self.phases = PhaseTally(self.jobs)
        self.jobs_running = Gauge(
            "asyncjobs_operator_jobs_running",
            "Jobs this operator is carrying (waiting for a slot, calling, or backing off).",
            registry=r,
        )
        self.jobs_expiring = Gauge(
            "asyncjobs_operator_jobs_awaiting_expiry",
            "Terminal jobs waiting for their result to expire.",
            registry=r,
        )
        self.in_flight = Gauge(
            "asyncjobs_operator_provider_calls_in_flight",
            "Provider calls running now.",
            registry=r,
        )
        self.waiting = Gauge(
            "asyncjobs_operator_provider_calls_waiting",
            "Jobs waiting for a provider call slot.",
            registry=r,
        )
        self.cooldowns = Counter(
            "asyncjobs_operator_provider_cooldowns",
            "Cooldowns started (a provider's circuit breaker opened), by cause: throttled "
            "(a 429) or failing (a run of 5xx answers or calls with no answer).",
            ["provider", "cause"],
            registry=r,
        )
        self.cooldowns_active = Gauge(
            "asyncjobs_operator_provider_cooldowns_active",
            "Providers whose calls are held now (cooling down, or awaiting the probe call).",
            registry=r,
        )
        self.jobs_held = Gauge(
            "asyncjobs_operator_jobs_held",
            "Jobs waiting for a provider whose calls are held; they spend no attempt.",
            registry=r,
        )
        self.retries = Counter(
            "asyncjobs_operator_retries",
            "Provider calls scheduled again after a failure (reason Retrying or FallingBack).",
            ["provider", "reason"],
            registry=r,
        )
        self.provider_calls = Counter(
            "asyncjobs_operator_provider_calls",
            "Provider calls made, by outcome (succeeded, failed with an HTTP error, "
            "no_answer); divided by jobs finished, the provider calls each job costs.",
            ["provider", "outcome"],
            registry=r,
        )
        self.repeated_calls = Counter(
            "asyncjobs_operator_provider_calls_repeated",
            "Provider calls made again because an operator stopped during one and left no "
            "stored result (a subset of provider calls; each job's count is in its status).",
            registry=r,
        )
        self.bodies_deleted = Counter(
            "asyncjobs_operator_payload_deletes",
            "Deletions of a deleted job's stored bodies from an object store, by outcome "
            "(deleted, failed after retries: left to the bucket's lifecycle rule).",
            ["outcome"],
            registry=r,
        )
        self.interruptions = Counter(
            "asyncjobs_operator_job_interruptions",
            "Jobs found Processing with no operator running them (an operator stopped "
            "during a call), by what followed: result_reused, call_repeated, failed.",
            ["outcome"],
            registry=r,
        )
        for outcome in (RESUME_REUSED, RESUME_REPEATED, RESUME_FAILED):
            self.interruptions.labels(outcome)  # every series exists from the start
        self.provider_latency = Histogram(
            "asyncjobs_operator_provider_call_seconds",
            "Provider call latency.",
            ["provider", "status"],
            buckets=_SECONDS,
            registry=r,
        )
        self.provider_reloads = Counter(
            "asyncjobs_operator_provider_config_reloads",
            "Times a changed providers file was loaded and its providers and limits applied.",
            registry=r,
        )
        self.apiserver_writes = Counter(
            "asyncjobs_operator_apiserver_writes",
            "Writes this operator sent to the apiserver.",
            ["verb", "resource"],
            registry=r,
        )
        self.last_watch_event = Gauge(
            "asyncjobs_operator_last_watch_event_timestamp_seconds",
            "When the AsyncJob watch last delivered an event.",
            registry=r,
        )
        self.member = Gauge(
            "asyncjobs_operator_member",
            "1 while this process holds its member Lease and runs its shards' jobs; 0 while "
            "it joins or after it left (controller/member_lease.py).",
            registry=r,
        )

        self.webhook_deliveries = Counter(
            "asyncjobs_operator_webhook_deliveries",
            "Completion-webhook deliveries that ended, by outcome: delivered, failed "
            "(retries spent or a final answer such as 4xx) or skipped (endpoint gone, "
            "disabled or not subscribed).",
            ["outcome"],
            registry=r,
        )
        for outcome in (WEBHOOK_DELIVERED, WEBHOOK_FAILED, WEBHOOK_SKIPPED):
            self.webhook_deliveries.labels(outcome)
        self.webhook_retries = Counter(
            "asyncjobs_operator_webhook_retries",
            "Completion-webhook attempts that failed and were scheduled again "
            "(408, 429, 5xx or no answer, with attempts left).",
            registry=r,
        )
        self.webhook_latency = Histogram(
            "asyncjobs_operator_webhook_attempt_seconds",
            "Completion-webhook attempt latency, by outcome (succeeded: a 2xx, failed: "
            "another answer, no_answer: a network error, a timeout or a refused address).",
            ["outcome"],
            buckets=_SECONDS,
            registry=r,
        )
        self.webhook_pending = Gauge(
            "asyncjobs_operator_webhook_pending",
            "Completion-webhook notifications this operator owes (being sent or waiting "
            "for their next attempt): the delivery queue's depth.",
            registry=r,
        )
        self.waiting_by_key = WaitingByKey()
        r.register(self.waiting_by_key)

    def count_cooldown(self, provider: str, cause: str) -> None:
        self.cooldowns.labels(provider, cause).inc()


class WaitingByKey(Collector):
    """Jobs waiting for a call slot per virtual key, read from the admission queue at
    scrape time. The label is a short hash of the key id (core/fair_share.py), one
    series per key with jobs waiting now: as many as the install has keys, never one
    per job."""

    NAME = "asyncjobs_operator_jobs_waiting_by_key"

    def __init__(self) -> None:
        self.source: Callable[[], Mapping[str, int]] | None = None

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            self.NAME,
            "Jobs waiting for a provider call slot, by fair-share group: key is a hash of "
            "the virtual key id (sha256, 12 hex digits), or anonymous for jobs without a key.",
            labels=["key"],
        )
        counts: dict[str, int] = {}
        for group, waiting in (self.source() if self.source else {}).items():
            label = group_label(group)
            counts[label] = counts.get(label, 0) + waiting
        for label, waiting in sorted(counts.items()):
            family.add_metric([label], waiting)
        yield family


class PhaseTally:
    """Keeps the by-phase job gauge from the watch events the operator receives anyway.

    One dict entry per job and a constant-time update per event, so the gauge costs no
    requests and no scan (an index that once fed it cost more than it was worth).
    Phases outside the closed set are not counted, so the label stays bounded.
    """

    def __init__(self, gauge: Gauge) -> None:
        self._gauge = gauge
        self._phases: dict[str, str] = {}
        for phase in Phase:
            gauge.labels(phase.value).set(0)

    def seen(self, name: str, phase: str) -> None:
        if phase not in _PHASES:
            return
        previous = self._phases.get(name)
        if previous == phase:
            return
        if previous is not None:
            self._gauge.labels(previous).dec()
        self._phases[name] = phase
        self._gauge.labels(phase).inc()

    def forget(self, name: str) -> None:
        previous = self._phases.pop(name, None)
        if previous is not None:
            self._gauge.labels(previous).dec()

    def keep_only(self, names: Collection[str]) -> None:
        """Forgets every job not in `names` (a complete listing)."""
        for name in [name for name in self._phases if name not in names]:
            self.forget(name)
