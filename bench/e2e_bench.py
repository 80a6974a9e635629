#!/usr/bin/env python3
"""End-to-end benchmark: N jobs through the API and the operator against a fake provider.

    uv run --frozen python bench/e2e_bench.py --jobs 1000 --latency-ms 0 --concurrency 64
    uv run --frozen python bench/e2e_bench.py --jobs 1000 --payloads s3
    uv run --frozen python bench/e2e_bench.py --jobs 5000 --latency-ms 1000 --concurrency 500

Starts its own control plane (separate state directory and ports, so tests running on
the shared plane cannot pollute the apiserver's write counters or etcd's sizes;
--shared-plane reuses the default one), a scratch namespace, the operator and the API
as real processes, and the offline `local` provider with the given latency. With
--payloads s3 it also starts a SeaweedFS server of its own (tools/s3server.py, a free
port, stopped at the end) and gives both processes its settings. Then it submits N chat
completions of about --request-bytes each (their results are about as large) through
the API from --submitters concurrent clients and follows the jobs with a watch until
all are terminal. It reports:

- jobs/s from the first submit to the last completion, and submits/s in the same run;
- queue wait (submittedAt to startTime) and end-to-end (submittedAt to completionTime)
  percentiles, from the jobs' own status;
- CPU-ms per job of every process on the host's cores: operator, API, kube-apiserver,
  etcd, kube-controller-manager, weed (s3) and this load generator (the submitters and
  the watch), from /proc/<pid>/stat over the run;
- apiserver writes per job: `apiserver_request_total` for POST/PATCH/PUT/DELETE from
  the apiserver's own /metrics, before and after, divided by N;
- etcd bytes per job, three ways: what the finished jobs hold in etcd (the keys and
  values of the namespace's AsyncJobs and Secrets, read from etcd itself and divided by
  the AsyncJobs found), bytes written (etcd_debugging_mvcc_total_put_size_in_bytes,
  every revision of every key, after - before) and etcd_mvcc_db_total_size_in_use_in_bytes
  after - before (page-granular, and lowered by a compaction within the run, which is
  flagged);
- the operator's resident memory (now and peak).

Then the poll that carries the result, through the API, open loop at --poll-rate
(bench/api_bench.py's generator, in its own process; latency counts from each poll's
scheduled time, so queueing is not hidden). First every finished job is polled once,
as the client that submitted it collects its result: each of these reads the result
from the payload store. Then finished jobs chosen at random for --poll-seconds, as
clients, dashboards and retries poll again (answered from the API's result cache when
it holds them). --no-first-pass leaves out the first pass, so the random polls start
with a cold cache and the store reads fall into them. Each pass reports latency
percentiles, status counts (each must be a 200 with a result), the API's result-cache
hits and misses over the pass, and CPU-ms per poll of each process. The compact summary
is printed; everything is saved as JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "src")]

import aiohttp  # noqa: E402
import uvloop  # noqa: E402
import yaml  # noqa: E402
from tests.support.procs import ManagedProcess, free_port, python_module  # noqa: E402
from tools import s3server  # noqa: E402

from api_bench import cache_counters, run_generator  # noqa: E402
from asyncjobs.core import resources, results  # noqa: E402
from asyncjobs.core.jobs import parse_time  # noqa: E402
from asyncjobs.core.kube import KubeClient, KubeError, load_config  # noqa: E402
from asyncjobs.core.providers import local  # noqa: E402
from asyncjobs.core.providers.base import ProviderRequest  # noqa: E402
from asyncjobs.core.request_types import RequestType  # noqa: E402
from procstats import CpuMeter, per_unit_ms, pid_from_file, rss_kib  # noqa: E402

WRITE_VERBS = ("POST", "PATCH", "PUT", "DELETE")
BENCH_PLANE = {
    "ASYNCJOBS_PLANE_DIR": str(REPO / ".plane" / "bench"),
    "ASYNCJOBS_ETCD_PORT": "23791",
    "ASYNCJOBS_ETCD_PEER_PORT": "23801",
    "ASYNCJOBS_APISERVER_PORT": "26444",
}
PLANE_PROCESSES = ("kube-apiserver", "etcd", "kube-controller-manager")
# The local provider's chat answer echoes the first 48 words of the last user message
# (core/providers/local_text.py), which is how the benchmark sizes the results.
ECHOED_WORDS = 48
ETCD_COUNTERS = (
    "etcd_mvcc_db_total_size_in_use_in_bytes",
    "etcd_debugging_mvcc_total_put_size_in_bytes",
    "etcd_mvcc_put_total",
    "etcd_debugging_mvcc_compact_revision",
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--concurrency", type=int, default=64, help="provider calls in flight")
    parser.add_argument("--submitters", type=int, default=32, help="concurrent API clients")
    parser.add_argument("--payloads", choices=["secrets", "s3"], default="secrets")
    parser.add_argument(
        "--request-bytes",
        type=int,
        default=2048,
        help="size of each chat request; its result is about as large",
    )
    parser.add_argument(
        "--poll-rate", type=float, default=1000, help="polls/s of finished jobs, open loop"
    )
    parser.add_argument(
        "--poll-seconds", type=float, default=10, help="length of the poll phase; 0 skips it"
    )
    parser.add_argument(
        "--first-pass",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="poll every finished job once before the random polls",
    )
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--shared-plane", action="store_true")
    parser.add_argument("--keep", action="store_true", help="leave the namespace behind")
    parser.add_argument("--profile", action="store_true", help="run the operator under cProfile")
    return parser.parse_args()


@dataclass(frozen=True)
class Plane:
    kubeconfig: str
    state: Path  # pidfiles of its processes
    etcd: str  # client URL: plain HTTP on loopback, where /metrics and the JSON API answer
    # False for a cluster from KUBECONFIG (--shared-plane): its processes and etcd are
    # not ours to measure.
    local: bool


def plane_up(shared: bool, own: Mapping[str, str] = BENCH_PLANE) -> Plane:
    """The default plane (`shared`), or a plane of the bench's own (`own`: its state
    directory and ports, apart from the tests' and from other benches')."""
    env = {**os.environ, **({} if shared else own)}
    if not shared:
        env.pop("KUBECONFIG", None)
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / "plane.py"), "up"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    kubeconfig = done.stdout.strip()
    state = Path(env.get("ASYNCJOBS_PLANE_DIR", REPO / ".plane"))
    return Plane(
        kubeconfig=kubeconfig,
        state=state,
        etcd=f"http://127.0.0.1:{env.get('ASYNCJOBS_ETCD_PORT', '23790')}",
        local=Path(kubeconfig).resolve() == (state / "kubeconfig").resolve(),
    )


def plane_pids(plane: Plane) -> dict[str, int]:
    pids: dict[str, int] = {}
    if not plane.local:
        return pids
    for name in PLANE_PROCESSES:
        pid = pid_from_file(plane.state / f"{name}.pid")
        if pid is not None:
            pids[name] = pid
    return pids


@contextlib.contextmanager
def payload_backend(backend: str, plane: Plane) -> Iterator[tuple[dict[str, str], int | None]]:
    """The environment that makes the API and the operator use the backend (it overrides
    whatever the shell has), and weed's PID for s3, whose server runs until exit."""
    if backend != "s3":
        yield {"ASYNCJOBS_PAYLOADS": backend}, None
        return
    # Under the plane's directory (but not scripts/up's `s3`), on a free port.
    state = plane.state / "bench-s3"
    with s3server.start(state) as server:
        yield {"ASYNCJOBS_PAYLOADS": "s3", **server.env()}, pid_from_file(state / "weed.pid")


# --- the requests -----------------------------------------------------------------


def chat_body(size: int) -> bytes:
    """A chat completion of about `size` bytes whose stored result is about as large.

    The user message is ECHOED_WORDS words, as wide as needed for the answer to reach
    `size` once the operator has stored it; a system message, which is not echoed, pads
    the request itself to `size`."""

    def build(width: int, pad: int) -> bytes:
        words = " ".join(f"{i:02d}" + "x" * (width - 2) for i in range(ECHOED_WORDS))
        messages = [{"role": "system", "content": "p" * pad}] if pad else []
        messages.append({"role": "user", "content": words})
        document = {"model": "local/echo", "messages": messages}
        return json.dumps(document, separators=(",", ":")).encode()

    # The narrowest words whose answer reaches `size` (it grows with the width).
    low, high = 2, max(2, size)
    while low < high:
        middle = (low + high) // 2
        if len(expected_result(build(middle, 0))) < size:
            low = middle + 1
        else:
            high = middle
    width = low
    # The padded body is len(build(width, 1)) - 1 + pad bytes long.
    pad = size - len(build(width, 1)) + 1
    return build(width, pad) if pad > 0 else build(width, 0)


def expected_result(body: bytes) -> bytes:
    """The result the operator will store for the body: the local provider's answer
    plus Bifrost's extra_fields, as core/results.py encodes it."""
    request = ProviderRequest(RequestType.CHAT_COMPLETION, "echo", body, "application/json")
    return results.result_body(
        local.answer(request, time.time()),
        request_type=RequestType.CHAT_COMPLETION.value,
        provider="local",
        model_requested="echo",
        latency_ms=0,
    )


# --- counters from the apiserver and etcd ---------------------------------------------


async def request_counts(kubeconfig: str) -> dict[str, float]:
    """apiserver_request_total summed by verb (writes and reads). Read with kubectl,
    which authenticates with whatever the kubeconfig holds."""
    kubectl = shutil.which("kubectl") or str(Path(sys.executable).parent / "kubectl")
    done = await asyncio.to_thread(
        subprocess.run,
        [kubectl, "--kubeconfig", kubeconfig, "get", "--raw", "/metrics"],
        check=True,
        capture_output=True,
        text=True,
    )
    counts: dict[str, float] = dict.fromkeys(WRITE_VERBS, 0.0)
    for line in done.stdout.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        verb = re.search(r'verb="([A-Z]+)"', line)
        if verb:
            counts[verb.group(1)] = counts.get(verb.group(1), 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def etcd_counters(plane: Plane) -> dict[str, float]:
    """ETCD_COUNTERS from etcd's own /metrics; empty when etcd is not ours to reach (a
    cluster from KUBECONFIG)."""
    if not plane.local:
        return {}
    etcd = plane.etcd
    try:
        with urllib.request.urlopen(f"{etcd}/metrics", timeout=10) as answer:
            text = answer.read().decode()
    except OSError:
        return {}
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ETCD_COUNTERS:
            values[name] = float(value)
    return values


def etcd_stored(etcd: str, prefix: str) -> tuple[int, int]:
    """Keys under a prefix and their bytes (key + value, as etcd holds the latest
    revision: JSON for custom resources, protobuf for Secrets), through etcd's JSON API,
    a page at a time."""
    start, end = prefix.encode(), prefix.encode()[:-1] + bytes([prefix.encode()[-1] + 1])
    keys = size = 0
    while True:
        query = {
            "key": base64.b64encode(start).decode(),
            "range_end": base64.b64encode(end).decode(),
            "limit": 500,
        }
        request = urllib.request.Request(
            f"{etcd}/v3/kv/range", data=json.dumps(query).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            page = json.load(answer)
        kvs = page.get("kvs", [])
        for kv in kvs:
            keys += 1
            size += len(base64.b64decode(kv["key"])) + len(base64.b64decode(kv.get("value", "")))
        if not page.get("more") or not kvs:
            return keys, size
        start = base64.b64decode(kvs[-1]["key"]) + b"\0"


def etcd_report(
    etcd: str, namespace: str, before: dict[str, float], after: dict[str, float], jobs: int
) -> dict[str, Any]:
    if not before or not after:
        return {"error": f"etcd at {etcd} not measured (not a local plane?)"}
    job_keys, job_bytes = etcd_stored(etcd, f"/registry/asyncjobs.dev/asyncjobs/{namespace}/")
    secret_keys, secret_bytes = etcd_stored(etcd, f"/registry/secrets/{namespace}/")
    delta = {name: after[name] - before[name] for name in ETCD_COUNTERS}
    return {
        "stored_bytes_per_job": round((job_bytes + secret_bytes) / max(job_keys, 1)),
        "stored_asyncjobs": job_keys,
        "stored_asyncjob_bytes": job_bytes,
        "stored_secrets": secret_keys,
        "stored_secret_bytes": secret_bytes,
        "put_bytes_per_job": round(delta["etcd_debugging_mvcc_total_put_size_in_bytes"] / jobs),
        "puts_per_job": round(delta["etcd_mvcc_put_total"] / jobs, 2),
        "db_in_use_bytes_per_job": round(delta["etcd_mvcc_db_total_size_in_use_in_bytes"] / jobs),
        # A compaction frees the revisions it drops, so db_in_use then undercounts.
        "compacted_during_run": delta["etcd_debugging_mvcc_compact_revision"] > 0,
    }


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


# --- the load -----------------------------------------------------------------------


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
    api: str, jobs: int, submitters: int, ids: list[str], body: bytes, refused: dict[str, int]
) -> tuple[float, float]:
    """Submits `jobs` times from `submitters` clients; a refused submit (counted by
    status in `refused`) is tried again, up to five times."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(jobs):
        queue.put_nowait(index)
    connector = aiohttp.TCPConnector(limit=submitters)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                # A loaded apiserver can time a create out (503): retry as a client would,
                # for up to about a minute.
                for attempt in range(12):
                    async with session.post(
                        f"{api}/v1/async/chat/completions",
                        data=body,
                        headers={"Content-Type": "application/json"},
                    ) as answer:
                        if answer.status == 202:
                            ids.append((await answer.json())["id"])
                            break
                        refused[str(answer.status)] = refused.get(str(answer.status), 0) + 1
                    await asyncio.sleep(min(10.0, 0.2 * 2**attempt))
                else:
                    raise RuntimeError(f"submit kept failing: {answer.status}")

        started = time.time()
        await asyncio.gather(*(worker() for _ in range(submitters)))
        return started, time.time()


async def completed_polls(
    args: argparse.Namespace,
    api: str,
    api_pid: int,
    pids: dict[str, int],
    ids_file: Path,
    *,
    each_once: bool,
) -> dict[str, Any]:
    """Open-loop polls of finished jobs through the API, from a generator process of its
    own, so that it shares no event loop with this process: each job once, in order, or
    jobs at random for --poll-seconds."""
    cache_before = await cache_counters(api)
    meter = CpuMeter(pids)
    polled = await asyncio.to_thread(
        run_generator,
        *("--base", api, "--mode", "poll", "--api-pid", str(api_pid)),
        *("--duration", str(args.poll_seconds), "--rate", str(args.poll_rate)),
        *("--ids", str(ids_file), *(["--each-once"] if each_once else [])),
    )
    cpu = meter.stop()
    cache_after = await cache_counters(api)
    hits = cache_after.get("hits_total", 0.0) - cache_before.get("hits_total", 0.0)
    misses = cache_after.get("misses_total", 0.0) - cache_before.get("misses_total", 0.0)
    cpu_per_poll = per_unit_ms(cpu, polled["requests"])
    cpu_per_poll["poll generator"] = polled.pop("generator_cpu_ms_per_request")
    polled.pop("api_cpu_ms_per_request")  # the same as cpu_ms_per_poll["api"]
    return {
        **polled,
        "all_200_with_result": polled["with_result"] == polled["requests"],
        "result_cache": {
            "hits": hits,
            "misses": misses,
            "hit_ratio": round(hits / (hits + misses), 4) if hits + misses else None,
            "entries": cache_after.get("entries"),
            "bytes": cache_after.get("bytes"),
        },
        "cpu_ms_per_poll": cpu_per_poll,
    }


# --- the run ------------------------------------------------------------------------


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    load_start = os.getloadavg()
    plane = plane_up(args.shared_plane)
    logs = REPO / "bench" / "results" / f"logs-{int(time.time())}"
    logs.mkdir(parents=True, exist_ok=True)
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    body = chat_body(args.request_bytes)
    with payload_backend(args.payloads, plane) as (payload_env, weed_pid):
        async with KubeClient(load_config(plane.kubeconfig)) as kube:
            await kube.create(
                resources.namespaces_path(),
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
            )
            try:
                report = await run(args, plane, kube, namespace, logs, body, payload_env, weed_pid)
            finally:
                if not args.keep:
                    await kube.delete(resources.namespaces_path(namespace))
    return {
        "jobs": args.jobs,
        "payloads": args.payloads,
        "latency_ms": args.latency_ms,
        "concurrency": args.concurrency,
        "submitters": args.submitters,
        "request_body_bytes": len(body),
        **report,
        "load_average_start": [round(v, 2) for v in load_start],
        "load_average_end": [round(v, 2) for v in os.getloadavg()],
        "cores": os.cpu_count(),
        "logs": str(logs),
    }


async def run(
    args: argparse.Namespace,
    plane: Plane,
    kube: KubeClient,
    namespace: str,
    logs: Path,
    body: bytes,
    payload_env: dict[str, str],
    weed_pid: int | None,
) -> dict[str, Any]:
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
    common = ["--kubeconfig", plane.kubeconfig, "--namespace", namespace]
    common += ["--providers-config", str(providers), "--log-level", "WARNING"]
    operator_port, api_port = free_port(), free_port()
    operator_argv = python_module(
        "asyncjobs.controller.main", *common, "--metrics-port", str(operator_port)
    )
    if args.profile:
        operator_argv[1:1] = ["-m", "cProfile", "-o", str(logs / "operator.prof")]
    operator = ManagedProcess("operator", operator_argv, log_dir=logs, env=payload_env)
    # The secrets backend's quota (10,000 jobs, 512 MiB) would refuse the submits of a
    # large run; the check itself costs nothing worth measuring.
    api_argv = python_module(
        "asyncjobs.api.main",
        *common,
        *("--port", str(api_port), "--max-stored-jobs", "0", "--max-stored-bytes", "0"),
    )
    api_proc = ManagedProcess("api", api_argv, log_dir=logs, env=payload_env)
    api = f"http://127.0.0.1:{api_port}"
    refused: dict[str, int] = {}
    with operator, api_proc:
        operator.wait_http_ok(f"http://127.0.0.1:{operator_port}/healthz", 60)
        api_proc.wait_http_ok(f"{api}/readyz", 60)
        # Warm up both processes (connection pools, imports) outside the count.
        await submit_all(api, 5, 5, [], body, refused)
        await asyncio.wait_for(follow(kube, namespace, 5, {}), 60)

        await wait_other_benches_gone(kube, namespace)
        processes = {
            "operator": operator.pid,
            "api": api_proc.pid,
            **plane_pids(plane),
            **({"weed": weed_pid} if weed_pid else {}),
            # The submitters and the watch that follows the jobs.
            "load generator": os.getpid(),
        }
        before = await request_counts(plane.kubeconfig)
        etcd_before = await asyncio.to_thread(etcd_counters, plane)
        meter = CpuMeter(processes)
        done: dict[str, dict[str, Any]] = {}
        watcher = asyncio.create_task(follow(kube, namespace, args.jobs + 5, done))
        ids: list[str] = []
        first, last_submit = await submit_all(api, args.jobs, args.submitters, ids, body, refused)
        await asyncio.wait_for(watcher, args.timeout)
        finished = time.time()
        cpu = meter.stop()
        after = await request_counts(plane.kubeconfig)
        etcd_after = await asyncio.to_thread(etcd_counters, plane)
        memory = rss_kib(operator.pid)
        etcd = await asyncio.to_thread(
            etcd_report, plane.etcd, namespace, etcd_before, etcd_after, args.jobs
        )
        polls: dict[str, Any] = {}
        if args.poll_seconds > 0:
            finished_ids = [i for i in ids if done[i]["status"]["phase"] == "Completed"]
            ids_file = logs / "finished.json"
            ids_file.write_text(json.dumps(finished_ids))
            # This process is idle meanwhile; the poll generator reports its own CPU.
            pollers = {k: v for k, v in processes.items() if k != "load generator"}
            poll = functools.partial(completed_polls, args, api, api_proc.pid, pollers, ids_file)
            if args.first_pass:
                polls["first"] = await poll(each_once=True)
            polls["random"] = await poll(each_once=False)

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
    result_sizes = [
        j["status"]["resultRef"]["size"] for j in measured if "resultRef" in j["status"]
    ]
    return {
        "completed": sum(1 for j in measured if j["status"]["phase"] == "Completed"),
        "failed": sum(1 for j in measured if j["status"]["phase"] == "Failed"),
        "refused_submits": refused,
        "stored_request_bytes": round(
            statistics.fmean(j["spec"]["requestRef"]["size"] for j in measured)
        ),
        "stored_result_bytes": round(statistics.fmean(result_sizes)) if result_sizes else None,
        "wall_seconds": round(last_completion - first, 2),
        "jobs_per_second": round(args.jobs / (last_completion - first), 1),
        "submit_seconds": round(last_submit - first, 2),
        "submits_per_second": round(args.jobs / (last_submit - first), 1),
        "watch_lag_seconds": round(finished - last_completion, 2),
        "queue_wait_seconds": percentiles(waits),
        "end_to_end_seconds": percentiles(totals),
        "operator_rss_mib": round(memory.get("VmRSS", 0) / 1024, 1),
        "operator_peak_rss_mib": round(memory.get("VmHWM", 0) / 1024, 1),
        "cpu_seconds": {name: round(v, 2) for name, v in cpu.items()},
        "cpu_ms_per_job": per_unit_ms(cpu, args.jobs),
        "apiserver_writes": writes,
        "apiserver_writes_per_job": round(sum(writes.values()) / args.jobs, 2),
        "apiserver_reads": reads,
        "etcd": etcd,
        "completed_polls": polls,
    }


# --- the report -----------------------------------------------------------------------


def summary(report: dict[str, Any], args: argparse.Namespace) -> str:
    def ms(seconds: dict[str, float]) -> str:
        return " / ".join(f"{seconds[k] * 1000:.0f}" for k in ("p50", "p99")) + " ms"

    cpu = report["cpu_ms_per_job"]
    etcd = report["etcd"]
    jobs = report["jobs"]
    lines = [
        f"e2e: {report['jobs']} jobs, payloads {report['payloads']}, "
        f"{report['submitters']} submitters, provider {report['latency_ms']:g} ms, "
        f"{report['concurrency']} in flight; request {report['stored_request_bytes']} B, "
        f"result {report['stored_result_bytes']} B",
        f"  load average start {fmt_load(report['load_average_start'])}, "
        f"end {fmt_load(report['load_average_end'])} ({report['cores']} cores)",
        f"  jobs/s {report['jobs_per_second']} end to end ({report['wall_seconds']} s); "
        f"submits/s {report['submits_per_second']}; completed {report['completed']}, "
        f"failed {report['failed']}, refused submits {report['refused_submits'] or 0}",
        f"  queue wait p50/p99 {ms(report['queue_wait_seconds'])}; "
        f"end to end p50/p99 {ms(report['end_to_end_seconds'])}; "
        f"operator RSS {report['operator_rss_mib']} MiB (peak {report['operator_peak_rss_mib']})",
        f"  apiserver writes/job {report['apiserver_writes_per_job']} ("
        + ", ".join(f"{verb} {n / jobs:g}" for verb, n in report["apiserver_writes"].items())
        + ")",
        "  CPU-ms/job: "
        + ", ".join(f"{name} {value:g}" for name, value in cpu.items() if name != "total")
        + f"; total {cpu['total']:g}",
    ]
    if "error" in etcd:
        lines.append(f"  etcd: {etcd['error']}")
    else:
        lines.append(
            f"  etcd bytes/job: stored {etcd['stored_bytes_per_job']} "
            f"({etcd['stored_asyncjobs']} AsyncJobs, {etcd['stored_secrets']} Secrets), "
            f"written {etcd['put_bytes_per_job']} ({etcd['puts_per_job']} puts), "
            f"db in use +{etcd['db_in_use_bytes_per_job']}"
            + (" (a compaction ran: undercounted)" if etcd["compacted_during_run"] else "")
        )
    titles = {
        "first": f"completed polls, first of each job, open loop at {args.poll_rate:g}/s",
        "random": f"completed polls, random jobs at {args.poll_rate:g}/s "
        f"for {args.poll_seconds:g} s",
    }
    for name, polls in report["completed_polls"].items():
        cache = polls["result_cache"]
        per_poll = polls["cpu_ms_per_poll"]
        lines += [
            f"  {titles[name]}: {polls['requests']} polls, achieved "
            f"{polls['achieved_per_second']}/s, p50/p90/p99/max "
            + " / ".join(f"{polls[k]:g}" for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms"))
            + f" ms; statuses {polls['statuses']}, with result {polls['with_result']}"
            + ("" if polls["all_200_with_result"] else "  <-- NOT ALL 200 WITH A RESULT"),
            f"    result cache hits {cache['hits']:g}, misses {cache['misses']:g} "
            f"(hit ratio {cache['hit_ratio']}); CPU-ms/poll: "
            + ", ".join(f"{process} {value:g}" for process, value in per_poll.items()),
        ]
    return "\n".join(lines)


def fmt_load(values: list[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def main() -> None:
    args = parse_args()
    # uvloop keeps the generator's own CPU (and so its pressure on the cores it shares
    # with what it measures) down, as it does for the API.
    report = uvloop.run(bench(args))
    out = (
        REPO
        / "bench"
        / "results"
        / f"e2e-{args.jobs}-{int(args.latency_ms)}ms-{args.payloads}.json"
    )
    out.write_text(json.dumps(report, indent=2))
    print(summary(report, args))
    print(f"saved {out.relative_to(REPO)}")
    polls = report["completed_polls"].values()
    if report["failed"] or not all(p["all_200_with_result"] for p in polls):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
