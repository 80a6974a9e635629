"""The job list's cost per request: `job_list.page` over the API's job cache of N jobs.

    uv run --frozen python bench/list_bench.py [--jobs 1000,10000,50000] [--keys 10]

Builds N JobViews (as the cache holds them: N/keys per virtual key, a quarter completed,
created one millisecond apart) and times, in this process, the three pages a list
request may ask for: a key's first page, the gateway token's first page (every job),
and a filtered page (status=completed, one key), each read from the cache's list order
(api/job_order.py) as the route does. Prints the median of 50 calls each, in
milliseconds, and the time to fill the cache from a full list (a relist, ordering
included). No server or apiserver: the list answers from memory, so this is its
whole CPU cost apart from HTTP.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial

from asyncjobs.api import job_list
from asyncjobs.api.store import JobCache
from asyncjobs.core.jobs import JobView, Phase, format_time

START = datetime(2026, 11, 30, tzinfo=UTC)


def views(count: int, keys: int) -> list[JobView]:
    made = []
    for index in range(count):
        made.append(
            JobView(
                job_id=str(uuid.uuid4()),
                uid="",
                request_type="chat_completion",
                phase=Phase.COMPLETED if (index // keys) % 4 == 0 else Phase.PENDING,
                created_at=format_time(START + timedelta(milliseconds=index)),
                virtual_key_id=f"team-{index % keys}",
                request_id=str(uuid.uuid4()),
                model="local/echo",
            )
        )
    return made


def median_ms(call: Callable[[], object], rounds: int = 50) -> float:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", default="1000,10000,50000")
    parser.add_argument("--keys", type=int, default=10)
    args = parser.parse_args()
    now = START + timedelta(days=1)
    print("jobs   key page ms   token page ms   key+completed ms   relist ordering ms")
    for count in (int(n) for n in args.jobs.split(",")):
        made = views(count, args.keys)
        cache = JobCache()
        relist = median_ms(partial(cache.replace, made), rounds=5)
        plain = job_list.ListQuery()
        done = job_list.ListQuery(status=Phase.COMPLETED)

        def first_page(
            key_id: str | None, query: job_list.ListQuery, cache: JobCache = cache
        ) -> object:
            return job_list.page(cache.newest_first(key_id, None), query, now)

        key = median_ms(partial(first_page, "team-1", plain))
        token = median_ms(partial(first_page, None, plain))
        filtered = median_ms(partial(first_page, "team-1", done))
        print(f"{count:<6} {key:12.2f} {token:15.2f} {filtered:18.2f} {relist:20.1f}")


if __name__ == "__main__":
    main()
