#!/usr/bin/env python3
"""Benchmark of the API process against the local control plane.

    uv run --frozen python bench/api_bench.py [--duration 10] [--poll-rate 1000]

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
   time, so a stalled server cannot hide queueing (no coordinated omission).

With --profile the API runs under cProfile and the top functions are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "src")]

CHAT = json.dumps(
    {"model": "local/echo", "messages": [{"role": "user", "content": "benchmark prompt"}]}
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
    base: str, ids: list[str], duration: float, rate: float, cpu: CpuMeter
) -> dict[str, Any]:
    import aiohttp

    latencies: list[float] = []
    statuses: dict[str, int] = {}
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector) as session:
        # Warm the connection pool so the first second does not measure TCP handshakes.
        await asyncio.gather(
            *(session.get(f"{base}/healthz") for _ in range(32)), return_exceptions=True
        )

        async def one(scheduled: float, job_id: str) -> None:
            async with session.get(f"{base}/v1/async/chat/completions/{job_id}") as response:
                await response.read()
            latencies.append(time.perf_counter() - scheduled)
            statuses[str(response.status)] = statuses.get(str(response.status), 0) + 1

        tasks: set[asyncio.Task[None]] = set()
        cpu.start()
        start = time.perf_counter()
        total = int(duration * rate)
        for index in range(total):
            scheduled = start + index / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(scheduled, random.choice(ids)))
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
        **percentiles(latencies),
        **cpu.report(len(latencies)),
    }


def generate(args: argparse.Namespace) -> None:
    import uvloop

    # The generator shares the host's cores with the API: uvloop keeps its own CPU cost
    # (and so its pressure on the server it measures) down, as it does for the API.
    cpu = CpuMeter(args.api_pid)
    if args.mode == "submit":
        result = uvloop.run(submit_load(args.base, args.duration, args.concurrency, cpu))
    else:
        ids = json.loads(Path(args.ids).read_text())
        result = uvloop.run(poll_load(args.base, ids, args.duration, args.rate, cpu))
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
    gen.add_argument("--api-pid", type=int, required=True)
    parser.add_argument("--kubeconfig", help="an existing cluster (default: the local plane)")
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--poll-rate", type=float, default=1000)
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
    asyncio.run(drive(args))


async def drive(args: argparse.Namespace) -> None:
    from tests.support.procs import ManagedProcess, free_port, python_module

    from asyncjobs.core import resources
    from asyncjobs.core.kube import KubeClient, KubeError, load_config

    kubeconfig = args.kubeconfig
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / namespace
    profile = log_dir / "api.prof"
    async with KubeClient(load_config(kubeconfig)) as kube:
        await kube.create(
            resources.namespaces_path(),
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        )
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        api_args = [
            "--kubeconfig",
            kubeconfig,
            "--namespace",
            namespace,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            args.log_level,
        ]
        log_dir.mkdir(parents=True, exist_ok=True)
        if args.profile:
            argv = [
                sys.executable,
                "-m",
                "cProfile",
                "-o",
                str(profile),
                "-m",
                "asyncjobs.api.main",
                *api_args,
            ]
        else:
            argv = python_module("asyncjobs.api.main", *api_args)
        api = ManagedProcess("api", argv, log_dir=log_dir).start()
        try:
            await asyncio.to_thread(api.wait_http_ok, f"{base}/readyz", 60)
            submits = await asyncio.to_thread(
                run_generator,
                "--base",
                base,
                "--mode",
                "submit",
                "--api-pid",
                str(api.pid),
                "--duration",
                str(args.duration),
                "--concurrency",
                str(args.concurrency),
            )
            ids = submits.pop("ids")
            ids_file = log_dir / "ids.json"
            ids_file.write_text(json.dumps(ids))
            polls = await asyncio.to_thread(
                run_generator,
                "--base",
                base,
                "--mode",
                "poll",
                "--api-pid",
                str(api.pid),
                "--duration",
                str(args.duration),
                "--rate",
                str(args.poll_rate),
                "--ids",
                str(ids_file),
            )
        finally:
            api.stop(timeout=30)
            try:
                await kube.delete(resources.namespaces_path(namespace))
            except KubeError as exc:
                print(f"could not delete namespace {namespace}: {exc}", file=sys.stderr)
    print(
        f"machine: {os.cpu_count()} cores; API log level {args.log_level}; "
        f"API, load generator and control plane on the same host"
    )
    print(
        f"submit  (closed loop, {args.concurrency} workers, {args.duration:g}s): "
        + json.dumps(submits)
    )
    print(
        f"poll    (open loop at {args.poll_rate:g}/s over {len(ids)} cached jobs, "
        f"{args.duration:g}s): " + json.dumps(polls)
    )
    if args.profile and profile.exists():
        import pstats

        print("\nAPI profile, top 25 by internal time:")
        pstats.Stats(str(profile)).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
