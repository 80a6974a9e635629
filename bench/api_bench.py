#!/usr/bin/env python3
"""Benchmark of the API process against the local control plane.

    uv run --frozen python bench/api_bench.py [--duration 10] [--poll-rate 1000]
        [--completed 1000] [--result-cache-bytes 0,67108864] [--payloads secrets|s3]

Starts (or reuses) the plane, creates a scratch namespace, starts the API as a real
process, and drives it from a separate load-generator process (an aiohttp client), so
the generator never shares an event loop or a core's GIL with the server. Each phase
reports the API's CPU-ms per request (its CPU time over the phase / requests served),
the measure to compare changes by on a shared host:

1. submits: a closed loop of --concurrency workers posting chat completions for
   --duration seconds (each submit is two apiserver writes: the AsyncJob and its
   request Secret); throughput and latency percentiles;
2. polls: an open loop at a fixed --poll-rate over the jobs just submitted, answered
   from the watch-fed cache; latency is measured from each request's *scheduled* send
   time, so a stalled server cannot hide queueing (no coordinated omission);
3. polls of *completed* jobs, the poll that carries a result: --completed of the
   submitted jobs are completed directly with the admin client, exactly as the operator
   writes them (the result of call 1 through the configured payload store, then a
   status merge patch to Completed with its resultRef), so the API is measured alone,
   without an operator's load. Then, for each budget in --result-cache-bytes (0 = the
   cache off), a fresh API process with that budget: a first pass polls every completed
   job once (each reads its result from the store, open loop at --poll-rate), then
   random polls of those jobs at --poll-rate for --duration. The API's result-cache
   counters are scraped after each pass. A poll counts as `with_result` when it is a
   200 whose document is completed with a non-empty result.

--payloads chooses where bodies live, for the API processes and the direct completions
alike: `secrets` (the default) or `s3`, which starts a SeaweedFS server of its own
(tools/s3server.py, a free port, stopped at the end).

With --profile the API runs under cProfile and the top functions are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "src")]

CHAT = json.dumps(
    {"model": "local/echo", "messages": [{"role": "user", "content": "benchmark prompt"}]}
).encode()

# A typical small chat completion as a provider answers it (~0.5 KiB).
RESULT = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1764129650,
        "model": "echo",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "benchmark answer " * 12},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 36, "total_tokens": 48},
    },
    separators=(",", ":"),
).encode()


def percentiles(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {}
    ordered = sorted(latencies)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)

    return {
        "p50_ms": at(0.50),
        "p90_ms": at(0.90),
        "p99_ms": at(0.99),
        "p999_ms": at(0.999),
        "max_ms": round(ordered[-1] * 1000, 3),
    }


# --- the load generator (runs in its own process) ---------------------------------------

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (all its threads), from /proc/<pid>/stat.

    CPU-seconds per request served is the server's cost, whatever else the host runs;
    wall-clock latency on a shared 2-core host is not.
    """
    stat = Path(f"/proc/{pid}/stat").read_text()
    # Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


class CpuMeter:
    """CPU used by the API and by this generator between start() and stop()."""

    def __init__(self, api_pid: int) -> None:
        self.api_pid = api_pid
        self.api = 0.0
        self.own = 0.0

    def start(self) -> None:
        self.api = -process_cpu_seconds(self.api_pid)
        self.own = -_own_cpu_seconds()

    def stop(self) -> None:
        self.api += process_cpu_seconds(self.api_pid)
        self.own += _own_cpu_seconds()

    def report(self, requests: int) -> dict[str, float]:
        per = max(requests, 1)
        return {
            "api_cpu_ms_per_request": round(self.api * 1000 / per, 3),
            "generator_cpu_ms_per_request": round(self.own * 1000 / per, 3),
        }


def _own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


async def submit_load(
    base: str, duration: float, concurrency: int, cpu: CpuMeter
) -> dict[str, Any]:
    import aiohttp

    latencies: list[float] = []
    ids: list[str] = []
    errors: dict[str, int] = {}
    deadline = time.perf_counter() + duration
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with session.post(
                    base + "/v1/async/chat/completions",
                    data=CHAT,
                    headers={"Content-Type": "application/json"},
                ) as response:
                    body = await response.read()
                latencies.append(time.perf_counter() - started)
                if response.status == 202:
                    ids.append(json.loads(body)["id"])
                else:
                    errors[str(response.status)] = errors.get(str(response.status), 0) + 1

        cpu.start()
        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
        cpu.stop()
    return {
        "requests": len(latencies),
        "accepted": len(ids),
        "errors": errors,
        "seconds": round(elapsed, 3),
        "per_second": round(len(ids) / elapsed, 1),
        **percentiles(latencies),
        **cpu.report(len(latencies)),
        "ids": ids,
    }


async def poll_load(
    base: str, ids: list[str], duration: float, rate: float, cpu: CpuMeter, *, each_once: bool
) -> dict[str, Any]:
    import aiohttp

    latencies: list[float] = []
    statuses: dict[str, int] = {}
    with_result = 0
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector) as session:
        # Warm the connection pool so the first second does not measure TCP handshakes.
        await asyncio.gather(
            *(session.get(f"{base}/healthz") for _ in range(32)), return_exceptions=True
        )

        async def one(scheduled: float, job_id: str) -> None:
            nonlocal with_result
            async with session.get(f"{base}/v1/async/chat/completions/{job_id}") as response:
                body = await response.read()
            latencies.append(time.perf_counter() - scheduled)
            statuses[str(response.status)] = statuses.get(str(response.status), 0) + 1
            if response.status == 200 and carries_result(body):
                with_result += 1

        tasks: set[asyncio.Task[None]] = set()
        cpu.start()
        start = time.perf_counter()
        total = len(ids) if each_once else int(duration * rate)
        for index in range(total):
            scheduled = start + index / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            job_id = ids[index] if each_once else random.choice(ids)
            task = asyncio.create_task(one(scheduled, job_id))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
        cpu.stop()
    return {
        "requests": len(latencies),
        "target_per_second": rate,
        "achieved_per_second": round(len(latencies) / elapsed, 1),
        "statuses": statuses,
        "with_result": with_result,
        **percentiles(latencies),
        **cpu.report(len(latencies)),
    }


def carries_result(body: bytes) -> bool:
    """A completed job's answer: the job document, completed, with a non-empty result
    (a 200 alone would also pass a failed job or an empty body)."""
    try:
        document = json.loads(body)
    except ValueError:
        return False
    return (
        isinstance(document, dict)
        and document.get("status") == "completed"
        and bool(document.get("result"))
    )


def generate(args: argparse.Namespace) -> None:
    import uvloop

    # The generator shares the host's cores with the API: uvloop keeps its own CPU cost
    # (and so its pressure on the server it measures) down, as it does for the API.
    cpu = CpuMeter(args.api_pid)
    if args.mode == "submit":
        result = uvloop.run(submit_load(args.base, args.duration, args.concurrency, cpu))
    else:
        ids = json.loads(Path(args.ids).read_text())
        result = uvloop.run(
            poll_load(args.base, ids, args.duration, args.rate, cpu, each_once=args.each_once)
        )
    print(json.dumps(result))


# --- the driver -----------------------------------------------------------------------------


def run_generator(*argv: str) -> dict[str, Any]:
    output = subprocess.run(
        [sys.executable, __file__, "generate", *argv], check=True, capture_output=True, text=True
    ).stdout
    result: dict[str, Any] = json.loads(output)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command")
    gen = sub.add_parser("generate")
    gen.add_argument("--base", required=True)
    gen.add_argument("--mode", choices=["submit", "poll"], required=True)
    gen.add_argument("--duration", type=float, default=10)
    gen.add_argument("--concurrency", type=int, default=16)
    gen.add_argument("--rate", type=float, default=1000)
    gen.add_argument("--ids")
    gen.add_argument("--each-once", action="store_true", help="poll every id once, in order")
    gen.add_argument("--api-pid", type=int, required=True)
    parser.add_argument("--kubeconfig", help="an existing cluster (default: the local plane)")
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--poll-rate", type=float, default=1000)
    parser.add_argument(
        "--completed",
        type=int,
        default=1000,
        help="submitted jobs to complete (result Secret + status) for phase 3; 0 skips it",
    )
    parser.add_argument(
        "--result-cache-bytes",
        default="0,67108864",
        help="comma-separated API --result-cache-bytes budgets, one phase-3 run each",
    )
    parser.add_argument(
        "--payloads",
        choices=["secrets", "s3"],
        default="secrets",
        help="payload backend; s3 starts a SeaweedFS server for the run",
    )
    parser.add_argument("--log-level", default="WARNING", help="the API's log level")
    parser.add_argument("--profile", action="store_true", help="run the API under cProfile")
    args = parser.parse_args()
    if args.command == "generate":
        generate(args)
        return
    if not args.kubeconfig:
        args.kubeconfig = subprocess.run(
            [sys.executable, str(REPO / "tools" / "plane.py"), "up"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    with payload_backend(args.payloads):
        asyncio.run(drive(args))


@contextlib.contextmanager
def payload_backend(backend: str) -> Iterator[None]:
    """Chooses the payload store for the run through the environment, which the API
    processes inherit and which this process's own store (the direct completions) and
    botocore's credentials read, exactly as deployed processes read theirs. For s3 a
    SeaweedFS server of our own runs for the length of the run."""
    os.environ["ASYNCJOBS_PAYLOADS"] = backend  # overrides one left in the shell
    if backend != "s3":
        yield
        return
    from tools import s3server

    state = Path(tempfile.mkdtemp(prefix="api-bench-s3-"))
    with s3server.start(state) as server:
        os.environ.update(server.env())
        yield


async def drive(args: argparse.Namespace) -> None:
    from tests.support.procs import ManagedProcess, free_port, python_module

    from asyncjobs.core import resources
    from asyncjobs.core.kube import KubeClient, KubeError, load_config

    kubeconfig = args.kubeconfig
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / namespace
    log_dir.mkdir(parents=True, exist_ok=True)
    budgets = [int(b) for b in args.result_cache_bytes.split(",") if b.strip()]
    profiles: list[tuple[str, Path]] = []
    load_before = load_average()

    async def start_api(name: str, *extra: str) -> tuple[ManagedProcess, str]:
        port = free_port()
        api_args = [
            *("--kubeconfig", kubeconfig, "--namespace", namespace),
            *("--host", "127.0.0.1", "--port", str(port), "--log-level", args.log_level),
            # The secrets backend's quota (10,000 jobs) would refuse the submits of a
            # long submit phase; its check costs nothing worth measuring.
            *("--max-stored-jobs", "0", "--max-stored-bytes", "0"),
            *extra,
        ]
        if args.profile:
            profile = log_dir / f"{name}.prof"
            profiles.append((name, profile))
            argv = [sys.executable, "-m", "cProfile", "-o", str(profile)]
            argv += ["-m", "asyncjobs.api.main", *api_args]
        else:
            argv = python_module("asyncjobs.api.main", *api_args)
        process = ManagedProcess(name, argv, log_dir=log_dir).start()
        base = f"http://127.0.0.1:{port}"
        try:
            await asyncio.to_thread(process.wait_http_ok, f"{base}/readyz", 60)
        except BaseException:
            process.stop(timeout=30)
            raise
        return process, base

    def polls(base: str, pid: int, ids_file: Path, *each_once: str) -> dict[str, Any]:
        return run_generator(
            *("--base", base, "--mode", "poll", "--api-pid", str(pid)),
            *("--duration", str(args.duration), "--rate", str(args.poll_rate)),
            *("--ids", str(ids_file), *each_once),
        )

    completed_runs: list[tuple[int, dict[str, Any], dict[str, Any], dict[str, float]]] = []
    async with KubeClient(load_config(kubeconfig)) as kube:
        await kube.create(
            resources.namespaces_path(),
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        )
        try:
            api, base = await start_api("api")
            try:
                submits = await asyncio.to_thread(
                    run_generator,
                    *("--base", base, "--mode", "submit", "--api-pid", str(api.pid)),
                    *("--duration", str(args.duration), "--concurrency", str(args.concurrency)),
                )
                ids = submits.pop("ids")
                ids_file = log_dir / "ids.json"
                ids_file.write_text(json.dumps(ids))
                pending = await asyncio.to_thread(polls, base, api.pid, ids_file)
            finally:
                api.stop(timeout=30)
            if args.completed and budgets:
                done = ids[: args.completed]
                began = time.perf_counter()
                await complete_jobs(kube, namespace, done, args.concurrency)
                completing = time.perf_counter() - began
                done_file = log_dir / "completed.json"
                done_file.write_text(json.dumps(done))
                for index, budget in enumerate(budgets):
                    name = f"api-cache-{budget}-{index}"
                    api, base = await start_api(name, "--result-cache-bytes", str(budget))
                    try:
                        first = await asyncio.to_thread(
                            polls, base, api.pid, done_file, "--each-once"
                        )
                        first["cache"] = await cache_counters(base)
                        again = await asyncio.to_thread(polls, base, api.pid, done_file)
                        counters = await cache_counters(base)
                    finally:
                        api.stop(timeout=30)
                    completed_runs.append((budget, first, again, counters))
        finally:
            try:
                await kube.delete(resources.namespaces_path(namespace))
            except KubeError as exc:
                print(f"could not delete namespace {namespace}: {exc}", file=sys.stderr)
    print(
        f"machine: {os.cpu_count()} cores; load average before {' '.join(load_before)}, "
        f"after {' '.join(load_average())}; "
        f"API log level {args.log_level}; payloads {args.payloads}; "
        "API, load generator and control plane on the same host"
    )
    print(
        f"submit  (closed loop, {args.concurrency} workers, {args.duration:g}s): "
        + json.dumps(submits)
    )
    print(
        f"poll    (open loop at {args.poll_rate:g}/s over {len(ids)} pending jobs, "
        f"{args.duration:g}s): " + json.dumps(pending)
    )
    if completed_runs:
        print(
            f"completed {min(args.completed, len(ids))} jobs directly (result of"
            f" {len(RESULT)} B stored in {args.payloads} + status patch,"
            f" {args.concurrency} at once) in {completing:.1f}s"
        )
    for budget, first, again, counters in completed_runs:
        label = f"--result-cache-bytes {budget}" + (" (off)" if budget == 0 else "")
        print(f"poll completed, first of each, {label}: " + json.dumps(first))
        print(
            f"poll completed, open loop at {args.poll_rate:g}/s, {args.duration:g}s, {label}: "
            + json.dumps({**again, "cache": counters})
        )
    if args.profile:
        import pstats

        for name, profile in profiles:
            if profile.exists():
                print(f"\nAPI profile ({name}), top 25 by internal time:")
                pstats.Stats(str(profile)).sort_stats("tottime").print_stats(25)


async def complete_jobs(kube: Any, namespace: str, ids: list[str], concurrency: int) -> None:
    """Completes jobs as the operator does: the result of call 1 through the payload
    store the environment configures (the API's), then the status."""
    from datetime import UTC, datetime, timedelta

    from tests.support.bodies import open_bodies

    from asyncjobs.core import resources
    from asyncjobs.core.jobs import format_time

    gate = asyncio.Semaphore(concurrency)
    async with open_bodies(kube, namespace) as store:

        async def complete(job_id: str) -> None:
            async with gate:
                job = await kube.get(resources.asyncjobs_path(namespace, job_id))
                ref = await store.put(job, "result", RESULT, "application/json", call=1)
                now = datetime.now(UTC)
                status = {
                    "phase": "Completed",
                    "statusCode": 200,
                    "completionTime": format_time(now),
                    "expiresAt": format_time(now + timedelta(hours=1)),
                    "resultRef": ref.to_dict(),
                }
                await kube.merge_patch(
                    resources.asyncjobs_path(namespace, job_id, status=True), {"status": status}
                )

        await asyncio.gather(*(complete(job_id) for job_id in ids))


async def cache_counters(base: str) -> dict[str, float]:
    """The API's asyncjobs_api_result_cache_* values, from its /metrics."""
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as response:
        text = await response.text()
    prefix = "asyncjobs_api_result_cache_"
    return {
        name.removeprefix(prefix): float(value)
        for name, value in (line.split() for line in text.splitlines() if line.startswith(prefix))
        if not name.endswith("_created")
    }


def load_average() -> list[str]:
    return Path("/proc/loadavg").read_text().split()[:3]


if __name__ == "__main__":
    main()
