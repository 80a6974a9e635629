"""The API's Prometheus metrics, all in one place, on a registry owned by the app.

Labels are bounded by construction: the route *template* (never the path, which holds
job ids), the method, the status code and the request type. A registry per app keeps
unit tests that build many apps from colliding on global collectors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from asyncjobs.api.result_cache import ResultCache

UNMATCHED_ROUTE = "unmatched"

# Buckets from 0.5 ms: polls answered from memory take well under 5 ms.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "asyncjobs_api_requests_total",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "asyncjobs_api_request_duration_seconds",
            "Time to answer an HTTP request, by route template and method.",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.submitted = Counter(
            "asyncjobs_api_jobs_submitted_total",
            "Jobs accepted (202), by request type.",
            ["request_type"],
            registry=self.registry,
        )
        self.cache_jobs = Gauge(
            "asyncjobs_api_cache_jobs",
            "AsyncJobs held in the watch-fed cache.",
            registry=self.registry,
        )
        self.results_unreadable = Counter(
            "asyncjobs_api_results_unreadable_total",
            "Completed jobs failed at poll time because their stored result was missing or"
            " did not match its checksum, by reason (missing or corrupt).",
            ["reason"],
            registry=self.registry,
        )
        # Per virtual key: the key's id (never the key), bounded by the keys an
        # administrator made; submits without a key are not counted here.
        self.key_refusals = Counter(
            "asyncjobs_api_key_refusals_total",
            "Submits of a virtual key refused before anything was written, by key id and"
            " reason (Bifrost's governance type: provider_blocked, model_blocked,"
            " token_limited, request_limited; or backlog_full, quota_exceeded).",
            ["key", "reason"],
            registry=self.registry,
        )
        self.watch_restarts = Counter(
            "asyncjobs_api_watch_restarts_total",
            "Watches restarted with a relist, by resource and reason (expired or error).",
            ["resource", "reason"],
            registry=self.registry,
        )

    def watch_key_pending(self, pending: Callable[[], Mapping[str, int]]) -> None:
        """Exposes each virtual key's jobs not yet terminal, read from the job cache at
        scrape time (every replica watches every job: take the max over replicas)."""
        self.registry.register(_KeyPendingCollector(pending))

    def watch_result_cache(self, cache: ResultCache) -> None:
        """Exposes the result cache's counters, read at scrape time (a hit counts nothing
        more than an int)."""
        self.registry.register(_ResultCacheCollector(cache))


class _ResultCacheCollector(Collector):
    def __init__(self, cache: ResultCache) -> None:
        self.cache = cache

    def collect(self) -> Iterator[Metric]:
        cache = self.cache
        yield CounterMetricFamily(
            "asyncjobs_api_result_cache_hits",
            "Polls of completed jobs answered from the result cache, with no store read.",
            value=cache.hits,
        )
        yield CounterMetricFamily(
            "asyncjobs_api_result_cache_misses",
            "Polls of completed jobs whose result was not cached and was read from the store.",
            value=cache.misses,
        )
        yield GaugeMetricFamily(
            "asyncjobs_api_result_cache_bytes",
            "Bytes the cached results count against the budget (bodies plus a fixed"
            " overhead per entry).",
            value=cache.bytes,
        )
        yield GaugeMetricFamily(
            "asyncjobs_api_result_cache_entries",
            "Results held in the result cache.",
            value=len(cache),
        )


class _KeyPendingCollector(Collector):
    def __init__(self, pending: Callable[[], Mapping[str, int]]) -> None:
        self.pending = pending

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "asyncjobs_api_key_pending_jobs",
            "Jobs of each virtual key (by id) not yet terminal, as this replica's job cache"
            " last saw them.",
            labels=["key"],
        )
        for key, count in sorted(self.pending().items()):
            family.add_metric([key], count)
        yield family
