#!/usr/bin/env python3
"""Capacity run: N AsyncJobs pending at once, then finishing, in bounded memory.

    uv run --frozen python bench/capacity_bench.py --jobs 100000
    uv run --frozen python bench/capacity_bench.py --jobs 20000 --no-finish

Starts its own control plane (in .plane/capacity, on ports of its own) and SeaweedFS
(bodies in S3, so etcd holds only the AsyncJobs), with the offline `local` provider.
Then, reporting the resident memory of every process at each step (VmRSS now, and
VmHWM, the peak so far, for the API and the operator):

1. fill: with no operator running, N chat completions are submitted through the API
   (--submitters clients; the backlog cap is lifted for the run), so all N are pending;
2. relist: a second API process starts from empty and lists the N jobs in pages; the
   time from its start to `/readyz` answering 200, and its memory once ready;
3. operator: the operator starts against the N pending jobs; its memory once its
   listing is done (the first job started) and at the end;
4. finish (unless --no-finish): every job runs to a terminal state; jobs/s and how many
   completed, failed or passed their deadline.

Targets (issue 12): at 100,000 jobs, API RSS ≤ 400 MiB, operator RSS ≤ 600 MiB, API
relist from empty ≤ 60 s on this machine, every job terminal by its deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "src"), str(REPO / "bench")]

import yaml  # noqa: E402
from tests.support.procs import ManagedProcess, free_port, python_module  # noqa: E402

from asyncjobs.core import resources  # noqa: E402
from asyncjobs.core.kube import KubeClient, KubeError, load_config  # noqa: E402
from e2e_bench import chat_body, payload_backend, plane_pids, plane_up, submit_all  # noqa: E402
from procstats import rss_kib  # noqa: E402

CAPACITY_PLANE = {
    "ASYNCJOBS_PLANE_DIR": str(REPO / ".plane" / "capacity"),
    "ASYNCJOBS_ETCD_PORT": "23793",
    "ASYNCJOBS_ETCD_PEER_PORT": "23803",
    "ASYNCJOBS_APISERVER_PORT": "26446",
}
TERMINAL = ("Completed", "Failed")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--submitters", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=64, help="provider calls in flight")
    parser.add_argument("--request-bytes", type=int, default=512)
    parser.add_argument(
        "--finish", action=argparse.BooleanOptionalAction, default=True, help="run every job"
    )
    parser.add_argument("--timeout", type=float, default=7200, help="for the finish step")
    parser.add_argument(
        "--reuse-namespace",
        help="skip the fill: use the pending jobs a run left in this namespace of the "
        "capacity plane (its SeaweedFS data kept under .plane/capacity), and keep them",
    )
    return parser.parse_args()


def mib(kib: int | None) -> float | None:
    return None if kib is None else round(kib / 1024, 1)


def memory(pids: dict[str, int]) -> dict[str, dict[str, float | None]]:
    out = {}
    for name, pid in pids.items():
        try:
            fields = rss_kib(pid)
        except OSError:
            continue
        out[name] = {"rss_mib": mib(fields.get("VmRSS")), "peak_mib": mib(fields.get("VmHWM"))}
    return out


async def phase_counts(kube: KubeClient, namespace: str) -> dict[str, int]:
    """Jobs by phase, listed in pages; a list the apiserver fails is tried again."""
    for _ in range(10):
        try:
            return await _phase_counts(kube, namespace)
        except KubeError as error:
            print(f"listing jobs failed ({error}); again", flush=True)
            await asyncio.sleep(5)
    return await _phase_counts(kube, namespace)


async def _phase_counts(kube: KubeClient, namespace: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    token: str | None = None
    path = resources.asyncjobs_path(namespace)
    while True:
        query = {"limit": "2000", **({"continue": token} if token else {})}
        page = await kube.list(path, **query)
        for item in page.get("items", []):
            phase = (item.get("status") or {}).get("phase") or "Pending"
            counts[phase] = counts.get(phase, 0) + 1
        token = page.get("metadata", {}).get("continue")
        if not token:
            return counts


def ready_after(url: str, started: float, timeout: float) -> float:
    deadline = started + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status == 200:
                    return round(time.monotonic() - started, 2)
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout} s")


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    plane = plane_up(shared=False, own=CAPACITY_PLANE)
    logs = REPO / "bench" / "results" / f"capacity-{int(time.time())}"
    logs.mkdir(parents=True, exist_ok=True)
    namespace = args.reuse_namespace or f"capacity-{uuid.uuid4().hex[:8]}"
    report: dict[str, Any] = {"jobs": args.jobs, "cores": os.cpu_count()}
    with payload_backend("s3", plane) as (payload_env, weed_pid):
        async with KubeClient(load_config(plane.kubeconfig)) as kube:
            if not args.reuse_namespace:
                await kube.create(
                    resources.namespaces_path(),
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
                )
            # Kept after a failure, to be looked at or reused (--reuse-namespace).
            await run(args, plane, kube, namespace, logs, payload_env, weed_pid, report)
            if not args.reuse_namespace:
                await kube.delete(resources.namespaces_path(namespace))
    report["logs"] = str(logs)
    return report


async def run(
    args: argparse.Namespace,
    plane: Any,
    kube: KubeClient,
    namespace: str,
    logs: Path,
    payload_env: dict[str, str],
    weed_pid: int | None,
    report: dict[str, Any],
) -> None:
    providers = logs / "providers.yaml"
    providers.write_text(
        yaml.safe_dump(
            {
                "providers": {"local": {"type": "local", "maxConcurrency": args.concurrency}},
                "limits": {"maxInFlight": args.concurrency},
            }
        )
    )
    common = ["--kubeconfig", plane.kubeconfig, "--namespace", namespace]
    common += ["--providers-config", str(providers), "--log-level", "WARNING"]
    lifted = ("--max-pending-jobs", "0", "--max-stored-jobs", "0", "--max-stored-bytes", "0")
    plane_processes = {**plane_pids(plane), **({"weed": weed_pid} if weed_pid else {})}

    def api_process(name: str) -> tuple[ManagedProcess, str]:
        port = free_port()
        argv = python_module("asyncjobs.api.main", *common, "--port", str(port), *lifted)
        return ManagedProcess(name, argv, log_dir=logs, env=payload_env), f"http://127.0.0.1:{port}"

    body = chat_body(args.request_bytes)
    submitter, api = api_process("api")
    with submitter:
        submitter.wait_http_ok(f"{api}/readyz", 600)
        if not args.reuse_namespace:
            ids: list[str] = []
            refused: dict[str, int] = {}
            first, last = await submit_all(api, args.jobs, args.submitters, ids, body, refused)
            report["fill"] = {
                "submits_per_second": round(args.jobs / (last - first), 1),
                "seconds": round(last - first, 1),
                "refused": refused,
                "memory": memory({"api": submitter.pid, **plane_processes}),
            }
            print("fill", json.dumps(report["fill"]), flush=True)

        fresh, fresh_url = api_process("api-relist")
        started = time.monotonic()
        with fresh:
            seconds = await asyncio.to_thread(ready_after, f"{fresh_url}/readyz", started, 600)
            report["relist"] = {
                "ready_seconds": seconds,
                "memory": memory({"api": fresh.pid}),
            }
        print("relist", json.dumps(report["relist"]), flush=True)

        metrics_port = free_port()
        operator = ManagedProcess(
            "operator",
            python_module(
                "asyncjobs.controller.main", *common, "--metrics-port", str(metrics_port)
            ),
            log_dir=logs,
            env=payload_env,
        )
        with operator:
            started = time.monotonic()
            operator.wait_http_ok(f"http://127.0.0.1:{metrics_port}/healthz", 600)
            # The listing is over once jobs start running.
            while (await phase_counts(kube, namespace)).get("Processing", 0) == 0:
                if time.monotonic() - started > 900:
                    raise RuntimeError("no job started within 15 minutes")
                await asyncio.sleep(1)
            report["operator_start"] = {
                "first_job_running_seconds": round(time.monotonic() - started, 1),
                "memory": memory({"operator": operator.pid, "api": submitter.pid}),
            }
            print("operator", json.dumps(report["operator_start"]), flush=True)
            if not args.finish:
                return
            while True:
                counts = await phase_counts(kube, namespace)
                if sum(counts.get(p, 0) for p in TERMINAL) >= args.jobs:
                    break
                if time.monotonic() - started > args.timeout:
                    break
                # Each count lists every job: at 100,000 that is load of its own.
                await asyncio.sleep(max(10.0, args.jobs / 2000))
            elapsed = time.monotonic() - started
            report["finish"] = {
                "seconds": round(elapsed, 1),
                "jobs_per_second": round(args.jobs / elapsed, 1),
                "phases": counts,
                "memory": memory(
                    {"operator": operator.pid, "api": submitter.pid, **plane_processes}
                ),
            }
            print("finish", json.dumps(report["finish"]), flush=True)


def main() -> None:
    args = parse_args()
    report = asyncio.run(bench(args))
    out = REPO / "bench" / "results" / f"capacity-{args.jobs}-{int(time.time())}.json"
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
