#!/usr/bin/env python3
"""End-to-end benchmark: N jobs through the API and the operator against a fake provider.

    uv run --frozen python bench/e2e_bench.py --jobs 1000 --latency-ms 0 --concurrency 64
    uv run --frozen python bench/e2e_bench.py --jobs 5000 --latency-ms 1000 --concurrency 500

Starts its own control plane (separate state directory and ports, so tests running on
the shared plane cannot pollute the apiserver's write counters; --shared-plane reuses
the default one), a scratch namespace, the operator and the API as real processes, and
the offline `local` provider with the given latency. Then it submits N chat
completions through the API from --submitters concurrent clients and follows the jobs
with a watch until all are terminal. It reports:

- jobs/s from the first submit to the last completion, and the submit rate alone;
- queue wait (submittedAt to startTime) and end-to-end (submittedAt to completionTime)
  percentiles, from the jobs' own status;
- the operator's resident memory (now and peak);
- apiserver writes per job: `apiserver_request_total` for POST/PATCH/PUT/DELETE from
  the apiserver's own /metrics, before and after, divided by N.

A sample of jobs is then polled through the API to check that each answers 200 with a
result. Results are printed and saved as JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "src")]

import aiohttp  # noqa: E402
import yaml  # noqa: E402
from tests.support.procs import ManagedProcess, free_port, python_module  # noqa: E402

from asyncjobs.core import resources  # noqa: E402
from asyncjobs.core.jobs import parse_time  # noqa: E402
from asyncjobs.core.kube import KubeClient, KubeError, load_config  # noqa: E402

WRITE_VERBS = ("POST", "PATCH", "PUT", "DELETE")
BENCH_PLANE = {
    "ASYNCJOBS_PLANE_DIR": str(REPO / ".plane" / "bench"),
    "ASYNCJOBS_ETCD_PORT": "23791",
    "ASYNCJOBS_ETCD_PEER_PORT": "23801",
    "ASYNCJOBS_APISERVER_PORT": "26444",
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--concurrency", type=int, default=64, help="provider calls in flight")
    parser.add_argument("--submitters", type=int, default=64, help="concurrent API clients")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--shared-plane", action="store_true")
    parser.add_argument("--keep", action="store_true", help="leave the namespace behind")
    parser.add_argument("--profile", action="store_true", help="run the operator under cProfile")
    return parser.parse_args()


def plane_up(shared: bool) -> str:
    env = {**os.environ, **({} if shared else BENCH_PLANE)}
    env.pop("KUBECONFIG", None) if not shared else None
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / "plane.py"), "up"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return done.stdout.strip()


async def request_counts(kube: KubeClient) -> dict[str, float]:
    """apiserver_request_total summed by verb (writes and reads)."""
    async with kube.session.get("/metrics", headers=kube._headers()) as answer:
        text = await answer.text()
    counts: dict[str, float] = dict.fromkeys(WRITE_VERBS, 0.0)
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        verb = re.search(r'verb="([A-Z]+)"', line)
        if verb:
            counts[verb.group(1)] = counts.get(verb.group(1), 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


async def wait_other_benches_gone(kube: KubeClient, mine: str, timeout: float = 300) -> None:
    """A previous run's namespace being deleted would add its DELETEs to our count."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = await kube.list(resources.namespaces_path())
        names = [n["metadata"]["name"] for n in listed["items"]]
        if not [n for n in names if n.startswith("bench-") and n != mine]:
            return
        await asyncio.sleep(1)
    raise TimeoutError("an earlier benchmark namespace is still being deleted")


def rss_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def plane_pids(shared: bool) -> dict[str, int]:
    state = Path(os.environ.get("ASYNCJOBS_PLANE_DIR", REPO / ".plane"))
    if not shared:
        state = Path(BENCH_PLANE["ASYNCJOBS_PLANE_DIR"])
    pids = {}
    for name in ("etcd", "kube-apiserver", "kube-controller-manager"):
        try:
            pids[name] = int((state / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            continue
    return pids


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {
        "p50": at(0.50),
        "p90": at(0.90),
        "p99": at(0.99),
        "max": round(ordered[-1], 3),
        "mean": round(statistics.fmean(ordered), 3),
    }


async def follow(
    kube: KubeClient, namespace: str, expected: int, done: dict[str, dict[str, Any]]
) -> None:
    """Fills `done` with terminal statuses from a watch until `expected` are in."""
    path = resources.asyncjobs_path(namespace)
    while len(done) < expected:
        listed = await kube.list(path)
        for item in listed.get("items", []):
            _record(item, done)
        version = listed["metadata"]["resourceVersion"]
        try:
            async for event in kube.watch(path, resource_version=version, timeout_seconds=60):
                _record(event.get("object", {}), done)
                if len(done) >= expected:
                    return
        except KubeError:
            continue  # relist


def _record(obj: dict[str, Any], done: dict[str, dict[str, Any]]) -> None:
    status = obj.get("status") or {}
    if status.get("phase") in ("Completed", "Failed"):
        done[obj["metadata"]["name"]] = {"spec": obj.get("spec", {}), "status": status}


async def submit_all(
    api: str, jobs: int, submitters: int, ids: list[str], body: bytes
) -> tuple[float, float]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(jobs):
        queue.put_nowait(index)
    connector = aiohttp.TCPConnector(limit=submitters)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                for _ in range(5):
                    async with session.post(
                        f"{api}/v1/async/chat/completions",
                        data=body,
                        headers={"Content-Type": "application/json"},
                    ) as answer:
                        if answer.status == 202:
                            ids.append((await answer.json())["id"])
                            break
                        await asyncio.sleep(0.2)
                else:
                    raise RuntimeError(f"submit kept failing: {answer.status}")

        started = time.time()
        await asyncio.gather(*(worker() for _ in range(submitters)))
        return started, time.time()


async def check_sample(api: str, ids: list[str]) -> int:
    ok = 0
    async with aiohttp.ClientSession() as session:
        for job_id in ids:
            async with session.get(f"{api}/v1/async/chat/completions/{job_id}") as answer:
                body = await answer.json()
                if answer.status == 200 and body.get("status") == "completed" and body["result"]:
                    ok += 1
    return ok


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    kubeconfig = plane_up(args.shared_plane)
    logs = REPO / "bench" / "results" / f"logs-{int(time.time())}"
    logs.mkdir(parents=True, exist_ok=True)
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    providers = logs / "providers.yaml"
    providers.write_text(
        yaml.safe_dump(
            {
                "providers": {
                    "local": {
                        "type": "local",
                        "latencyMs": args.latency_ms,
                        "maxConcurrency": args.concurrency,
                    }
                },
                "limits": {"maxInFlight": args.concurrency},
            }
        )
    )
    body = json.dumps(
        {"model": "local/echo", "messages": [{"role": "user", "content": "benchmark prompt"}]}
    ).encode()
    async with KubeClient(load_config(kubeconfig)) as kube:
        await kube.create(
            resources.namespaces_path(),
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        )
        common = ["--kubeconfig", kubeconfig, "--namespace", namespace]
        common += ["--providers-config", str(providers), "--log-level", "WARNING"]
        operator_port, api_port = free_port(), free_port()
        operator_argv = python_module(
            "asyncjobs.controller.main", *common, "--metrics-port", str(operator_port)
        )
        if args.profile:
            operator_argv[1:1] = ["-m", "cProfile", "-o", str(logs / "operator.prof")]
        operator = ManagedProcess("operator", operator_argv, log_dir=logs)
        api_proc = ManagedProcess(
            "api",
            python_module("asyncjobs.api.main", *common, "--port", str(api_port)),
            log_dir=logs,
        )
        api = f"http://127.0.0.1:{api_port}"
        try:
            with operator, api_proc:
                operator.wait_http_ok(f"http://127.0.0.1:{operator_port}/healthz", 60)
                api_proc.wait_http_ok(f"{api}/readyz", 60)
                # Warm up both processes (connection pools, imports) outside the count.
                warm: list[str] = []
                await submit_all(api, 5, 5, warm, body)
                await asyncio.wait_for(follow(kube, namespace, 5, {}), 60)

                await wait_other_benches_gone(kube, namespace)
                before = await request_counts(kube)
                processes = {
                    "operator": operator.pid,
                    "api": api_proc.pid,
                    **plane_pids(args.shared_plane),
                }
                cpu_before = {name: cpu_seconds(pid) for name, pid in processes.items()}
                done: dict[str, dict[str, Any]] = {}
                watcher = asyncio.create_task(follow(kube, namespace, args.jobs + 5, done))
                ids: list[str] = []
                first, last_submit = await submit_all(api, args.jobs, args.submitters, ids, body)
                await asyncio.wait_for(watcher, args.timeout)
                finished = time.time()
                after = await request_counts(kube)
                cpu = {
                    name: round(cpu_seconds(pid) - cpu_before[name], 1)
                    for name, pid in processes.items()
                }
                memory = rss_kib(operator.pid)
                sample_ok = await check_sample(api, ids[:: max(1, len(ids) // 20)])
        finally:
            if not args.keep:
                await kube.delete(resources.namespaces_path(namespace))

    measured = [done[i] for i in ids]
    waits, totals, completions = [], [], []
    for job in measured:
        status, spec = job["status"], job["spec"]
        submitted = parse_time(spec["submittedAt"])
        completed = parse_time(status["completionTime"])
        completions.append(completed.timestamp())
        totals.append((completed - submitted).total_seconds())
        if status.get("startTime"):
            waits.append((parse_time(status["startTime"]) - submitted).total_seconds())
    last_completion = max(completions)
    writes = {verb: after[verb] - before[verb] for verb in WRITE_VERBS}
    reads = {v: after[v] - before.get(v, 0.0) for v in after if v not in WRITE_VERBS}
    return {
        "jobs": args.jobs,
        "latency_ms": args.latency_ms,
        "concurrency": args.concurrency,
        "submitters": args.submitters,
        "completed": sum(1 for j in measured if j["status"]["phase"] == "Completed"),
        "failed": sum(1 for j in measured if j["status"]["phase"] == "Failed"),
        "wall_seconds": round(last_completion - first, 2),
        "jobs_per_second": round(args.jobs / (last_completion - first), 1),
        "submit_seconds": round(last_submit - first, 2),
        "submits_per_second": round(args.jobs / (last_submit - first), 1),
        "watch_lag_seconds": round(finished - last_completion, 2),
        "queue_wait_seconds": percentiles(waits),
        "end_to_end_seconds": percentiles(totals),
        "operator_rss_mib": round(memory.get("VmRSS", 0) / 1024, 1),
        "operator_peak_rss_mib": round(memory.get("VmHWM", 0) / 1024, 1),
        "cpu_seconds": cpu,
        "cpu_ms_per_job": {name: round(1000 * v / args.jobs, 2) for name, v in cpu.items()},
        "load_average_1m": os.getloadavg()[0],
        "apiserver_writes": writes,
        "apiserver_writes_per_job": round(sum(writes.values()) / args.jobs, 2),
        "apiserver_reads": reads,
        "sample_polled_ok": f"{sample_ok}/{len(ids[:: max(1, len(ids) // 20)])}",
        "logs": str(logs),
    }


def main() -> None:
    args = parse_args()
    report = asyncio.run(bench(args))
    out = REPO / "bench" / "results" / f"e2e-{args.jobs}-{int(args.latency_ms)}ms.json"
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
