#!/usr/bin/env python3
"""Scale benchmark: 1, 2 and 3 operator replicas behind 2 API replicas, then a SIGKILL.

    uv run --frozen python bench/scale_bench.py
    uv run --frozen python bench/scale_bench.py --jobs 900 --latency-ms 200 --kill-jobs 600

Starts a control plane of its own (its own state directory and ports, or the ones the
ASYNCJOBS_PLANE_DIR / ASYNCJOBS_*_PORT variables name), a fake OpenAI server (the real
wire format over a real socket, tests/fakes/openai_server.py) and, for each
configuration, a fresh namespace with 2 API processes and N operator processes, each
operator with a key of its own, so every provider call the fake records names the
replica that made it, and every request carries the job's own marker. It submits
--jobs chat completions round-robin through both APIs from --submitters clients and
follows the jobs with a watch until all are terminal, then reports per configuration:

- jobs/s from the first submit to the last completion;
- the share of the jobs each replica ran (status.operator of each finished job) and
  the shards it owned;
- CPU-ms per job of each operator replica, of the APIs, the apiserver and etcd (from
  /proc over the run), and each replica's peak RSS;
- provider calls per job, jobs called twice, and jobs whose calls overlapped in time
  (run twice at once: must be 0); lost jobs (not terminal by --timeout: must be 0).

Then the kill run: 3 replicas, --kill-jobs jobs with --kill-latency-ms per call, and
once a third of them are done one replica is SIGKILLed. It reports the takeover time
(from the kill to the first call another replica makes for a job of the dead one's
shards; the survivors may judge it gone only a lease duration after they last saw it
renewed), the jobs that moved, calls repeated (a call the dead replica had in flight is
made again by design), jobs run twice at once and lost jobs. On a host of 2 cores more
replicas add no throughput: the point is correctness and the work per replica. The
summary is printed; everything is saved as JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import json
import os
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "src")]

import aiohttp  # noqa: E402
import yaml  # noqa: E402
from tests.support.procs import ManagedProcess, free_port, python_module  # noqa: E402

from asyncjobs.core import resources, shards  # noqa: E402
from asyncjobs.core.jobs import parse_time  # noqa: E402
from asyncjobs.core.kube import KubeClient, load_config  # noqa: E402
from e2e_bench import Plane, follow, plane_pids, plane_up  # noqa: E402
from procstats import CpuMeter, per_unit_ms, rss_kib  # noqa: E402

# Apart from the tests' planes and from bench/e2e_bench.py's.
SCALE_PLANE = {
    "ASYNCJOBS_PLANE_DIR": str(REPO / ".plane" / "scale-bench"),
    "ASYNCJOBS_ETCD_PORT": "23796",
    "ASYNCJOBS_ETCD_PEER_PORT": "23806",
    "ASYNCJOBS_APISERVER_PORT": "26449",
}
PLANE_VARIABLES = tuple(SCALE_PLANE)
LEASE_PREFIX = "asyncjobs-operator"
API_REPLICAS = 2


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", default="1,2,3", help="operator replicas per run")
    parser.add_argument("--jobs", type=int, default=600)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--concurrency", type=int, default=64, help="calls in flight per replica")
    parser.add_argument("--submitters", type=int, default=32)
    parser.add_argument("--kill-jobs", type=int, default=600)
    parser.add_argument("--kill-latency-ms", type=float, default=1000.0)
    parser.add_argument("--kill-concurrency", type=int, default=16)
    parser.add_argument("--lease-duration", type=int, default=15)
    parser.add_argument("--timeout", type=float, default=300)
    return parser.parse_args()


def own_plane() -> dict[str, str]:
    """The plane the environment names (all of its variables), else the bench's own."""
    given = {name: os.environ[name] for name in PLANE_VARIABLES if name in os.environ}
    return given if len(given) == len(PLANE_VARIABLES) else SCALE_PLANE


class Fake:
    """The fake OpenAI server, driven through its control API."""

    def __init__(self, logs: Path) -> None:
        self.port = free_port()
        self.process = ManagedProcess(
            "fake-openai",
            python_module("tests.fakes.openai_server", "--port", str(self.port)),
            log_dir=logs,
        )

    def _post(self, path: str, body: dict[str, Any]) -> None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10):
            pass

    def reset(self, latency_ms: float, keys: list[str]) -> None:
        self._post("/_fake/reset", {})
        self._post("/_fake/config", {"latency_ms": latency_ms, "api_keys": keys})

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/_fake/stats", timeout=60) as r:
            stats: dict[str, Any] = json.load(r)
        return stats


def providers_file(path: Path, fake: Fake, key_secret: str, concurrency: int) -> Path:
    openai = {
        "type": "openai",
        "baseURL": f"http://127.0.0.1:{fake.port}/v1",
        "timeoutSeconds": 60,
        "maxConcurrency": concurrency,
        "keys": [{"secretRef": {"name": key_secret, "key": "k"}}],
    }
    config = {"providers": {"openai": openai}, "limits": {"maxInFlight": concurrency}}
    path.write_text(yaml.safe_dump(config))
    return path


def lease_name(identity: str) -> str:
    return f"{LEASE_PREFIX}-{identity}"


def body(marker: str) -> bytes:
    chat = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": marker}]}
    return json.dumps(chat).encode()


async def submit_all(
    apis: list[str], markers: list[str], submitters: int, ids: dict[str, str]
) -> float:
    """Submits one job per marker, round-robin over the APIs; fills marker -> job id.
    Returns the wall time of the first submit."""
    queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
    for index, marker in enumerate(markers):
        queue.put_nowait((index, marker))
    connector = aiohttp.TCPConnector(limit=submitters)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while not queue.empty():
                index, marker = queue.get_nowait()
                api = apis[index % len(apis)]
                for _ in range(5):
                    async with session.post(
                        f"{api}/v1/async/chat/completions",
                        data=body(marker),
                        headers={"Content-Type": "application/json"},
                    ) as answer:
                        if answer.status == 202:
                            ids[marker] = (await answer.json())["id"]
                            break
                    await asyncio.sleep(0.2)
                else:
                    raise RuntimeError(f"submit kept failing: {answer.status}")

        started = time.time()
        await asyncio.gather(*(worker() for _ in range(submitters)))
        return started


def calls_by_marker(stats: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    calls: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for request in stats["requests"]:
        messages = (request.get("json") or {}).get("messages") or [{}]
        calls[str(messages[0].get("content", ""))].append(request)
    return calls


def overlapping(calls: list[dict[str, Any]], end: float) -> bool:
    """Two calls of one job in flight at once (an unanswered one: until `end`)."""
    spans = sorted((c["started"], c.get("answered", end)) for c in calls)
    return any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))


def call_report(markers: list[str], stats: dict[str, Any], end: float) -> dict[str, Any]:
    calls = calls_by_marker(stats)
    counts = [len(calls.get(m, [])) for m in markers]
    return {
        "provider_calls_per_job": round(sum(counts) / max(len(markers), 1), 3),
        "jobs_called_twice": sum(1 for c in counts if c > 1),
        "jobs_never_called": sum(1 for c in counts if c == 0),
        "jobs_run_twice_at_once": sum(1 for m in markers if overlapping(calls.get(m, []), end)),
    }


class Cluster:
    """2 APIs and N operators on one fresh namespace."""

    def __init__(
        self, args: argparse.Namespace, plane: Plane, fake: Fake, namespace: str, logs: Path
    ) -> None:
        self.args, self.plane, self.fake, self.namespace = args, plane, fake, namespace
        self.logs = logs
        self.apis: list[ManagedProcess] = []
        self.api_urls: list[str] = []
        self.operators: dict[str, ManagedProcess] = {}
        self.metrics_ports: dict[str, int] = {}

    def common(self, providers: Path) -> list[str]:
        return [
            *("--kubeconfig", self.plane.kubeconfig, "--namespace", self.namespace),
            *("--providers-config", str(providers), "--log-level", "INFO"),
        ]

    def start(self, replicas: int, concurrency: int) -> None:
        for index in range(1, replicas + 1):
            identity = f"op-{index}"
            providers = providers_file(
                self.logs / f"{identity}.yaml", self.fake, f"key-{identity}", concurrency
            )
            port = free_port()
            argv = python_module(
                "asyncjobs.controller.main",
                *self.common(providers),
                *("--metrics-port", str(port), "--lease-identity", identity),
                *("--lease-duration-seconds", str(self.args.lease_duration)),
            )
            process = ManagedProcess(identity, argv, log_dir=self.logs)
            self.operators[identity], self.metrics_ports[identity] = process.start(), port
        api_providers = providers_file(self.logs / "api.yaml", self.fake, "key-op-1", concurrency)
        for index in range(API_REPLICAS):
            port = free_port()
            argv = python_module(
                "asyncjobs.api.main",
                *self.common(api_providers),
                *("--port", str(port), "--max-stored-jobs", "0", "--max-stored-bytes", "0"),
            )
            self.apis.append(ManagedProcess(f"api-{index}", argv, log_dir=self.logs).start())
            self.api_urls.append(f"http://127.0.0.1:{port}")
        for identity, process in self.operators.items():
            process.wait_http_ok(f"http://127.0.0.1:{self.metrics_ports[identity]}/healthz", 180)
        for api, url in zip(self.apis, self.api_urls, strict=True):
            api.wait_http_ok(f"{url}/readyz", 180)

    def members_seen(self, identity: str) -> float:
        url = f"http://127.0.0.1:{self.metrics_ports[identity]}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                text = answer.read().decode()
        except OSError:  # starting, or busy: ask again
            return 0.0
        for line in text.splitlines():
            if line.startswith("asyncjobs_operator_members "):
                return float(line.split()[1])
        return 0.0

    def wait_members(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.members_seen(i) == len(self.operators) for i in self.operators):
                return
            time.sleep(0.2)
        raise TimeoutError("the operators did not all see each other")

    def stop(self) -> None:
        for process in [*self.operators.values(), *self.apis]:
            process.stop()


async def fresh_namespace(kube: KubeClient, replicas: int) -> str:
    namespace = f"scale-{uuid.uuid4().hex[:8]}"
    await kube.create(
        resources.namespaces_path(),
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
    )
    for index in range(1, replicas + 1):
        await kube.create(
            resources.secrets_path(namespace),
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": f"key-op-{index}"},
                "stringData": {"k": f"sk-op-{index}"},
            },
        )
    return namespace


async def warm_up(cluster: Cluster, kube: KubeClient) -> None:
    """A few jobs through every API before anything is measured (imports, pools)."""
    ids: dict[str, str] = {}
    await submit_all(cluster.api_urls, [f"warm-{i}" for i in range(6)], 6, ids)
    await asyncio.wait_for(follow(kube, cluster.namespace, 6, {}), 60)


async def measured_run(
    args: argparse.Namespace, plane: Plane, fake: Fake, kube: KubeClient, replicas: int
) -> dict[str, Any]:
    namespace = await fresh_namespace(kube, replicas)
    logs = REPO / "bench" / "results" / f"scale-logs-{int(time.time())}-{replicas}"
    logs.mkdir(parents=True, exist_ok=True)
    fake.reset(args.latency_ms, [f"sk-op-{i}" for i in range(1, replicas + 1)])
    cluster = Cluster(args, plane, fake, namespace, logs)
    try:
        cluster.start(replicas, args.concurrency)
        cluster.wait_members()
        await warm_up(cluster, kube)
        pids = {name: p.pid for name, p in cluster.operators.items()}
        pids |= {f"api-{i}": p.pid for i, p in enumerate(cluster.apis)}
        pids |= plane_pids(plane)
        meter = CpuMeter(pids)
        markers = [f"job-{n}" for n in range(args.jobs)]
        ids: dict[str, str] = {}
        done: dict[str, dict[str, Any]] = {}
        following = asyncio.create_task(follow(kube, namespace, args.jobs + 6, done))
        first_submit = await submit_all(cluster.api_urls, markers, args.submitters, ids)
        with contextlib.suppress(TimeoutError):  # what is not done by then is lost
            await asyncio.wait_for(following, args.timeout)
        cpu = meter.stop()
        stats = await asyncio.to_thread(fake.stats)
        exited = [name for name, p in cluster.operators.items() if not p.running()]
        rss = {name: rss_kib(p.pid) for name, p in cluster.operators.items() if p.running()}
    finally:
        cluster.stop()
        await kube.delete(resources.namespaces_path(namespace))
    finished = [done[ids[m]] for m in markers if ids.get(m) in done]
    last = max(
        (parse_time(j["status"]["completionTime"]).timestamp() for j in finished),
        default=float("nan"),
    )
    share = collections.Counter(j["status"].get("operator", "?").split("/")[0] for j in finished)
    members = [lease_name(i) for i in cluster.operators]
    return {
        "operator_replicas": replicas,
        "api_replicas": API_REPLICAS,
        "jobs": args.jobs,
        "jobs_per_second": round(len(finished) / (last - first_submit), 1),
        "completed": sum(1 for j in finished if j["status"]["phase"] == "Completed"),
        "lost": args.jobs - len(finished),
        # An operator that lost its Lease (an overloaded apiserver) exits; nothing here
        # restarts it as a kubelet would.
        "operators_exited": exited,
        "share": {i: share.get(i, 0) for i in cluster.operators},
        "shards_owned": {
            i: len(shards.owned_shards(lease_name(i), members)) for i in cluster.operators
        },
        **call_report(markers, stats, time.monotonic()),
        "cpu_ms_per_job": per_unit_ms(cpu, args.jobs),
        "operator_peak_rss_mib": {n: round(r.get("VmHWM", 0) / 1024, 1) for n, r in rss.items()},
    }


async def kill_run(
    args: argparse.Namespace, plane: Plane, fake: Fake, kube: KubeClient
) -> dict[str, Any]:
    replicas, victim = 3, "op-2"
    namespace = await fresh_namespace(kube, replicas)
    logs = REPO / "bench" / "results" / f"scale-logs-{int(time.time())}-kill"
    logs.mkdir(parents=True, exist_ok=True)
    fake.reset(args.kill_latency_ms, [f"sk-op-{i}" for i in range(1, replicas + 1)])
    cluster = Cluster(args, plane, fake, namespace, logs)
    markers = [f"job-{n}" for n in range(args.kill_jobs)]
    ids: dict[str, str] = {}
    done: dict[str, dict[str, Any]] = {}
    try:
        cluster.start(replicas, args.kill_concurrency)
        cluster.wait_members()
        await warm_up(cluster, kube)
        following = asyncio.create_task(follow(kube, namespace, args.kill_jobs + 6, done))
        await submit_all(cluster.api_urls, markers, args.submitters, ids)
        while len(done) < 6 + args.kill_jobs // 3 and not following.done():  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # `done` fills from the watch; polled, cheap
        cluster.operators[victim].kill()
        killed = time.monotonic()
        done_at_kill = len(done) - 6
        with contextlib.suppress(TimeoutError):  # what is not done by then is lost
            await asyncio.wait_for(following, args.timeout)
        stats = await asyncio.to_thread(fake.stats)
        exited = [n for n, p in cluster.operators.items() if n != victim and not p.running()]
    finally:
        cluster.stop()
        await kube.delete(resources.namespaces_path(namespace))
    members = [lease_name(i) for i in cluster.operators]
    victims_jobs = {
        m for m in markers if shards.owner(shards.shard_of(ids[m]), members) == lease_name(victim)
    }
    calls = calls_by_marker(stats)
    taken_over = [
        c["started"]
        for m in victims_jobs
        for c in calls.get(m, [])
        if c["key"] != f"sk-{victim}" and c["started"] > killed
    ]
    finished = [done[ids[m]] for m in markers if ids.get(m) in done]
    moved_finish = [
        parse_time(done[ids[m]]["status"]["completionTime"]).timestamp()
        for m in victims_jobs
        if ids[m] in done and not done[ids[m]]["status"].get("operator", "").startswith(victim)
    ]
    return {
        "operator_replicas": replicas,
        "killed": victim,
        "jobs": args.kill_jobs,
        "done_at_kill": done_at_kill,
        "lease_duration_s": args.lease_duration,
        "takeover_s": round(min(taken_over) - killed, 2) if taken_over else None,
        "jobs_of_the_killed_replica": len(victims_jobs),
        "jobs_moved": len(moved_finish),
        "completed": sum(1 for j in finished if j["status"]["phase"] == "Completed"),
        "lost": args.kill_jobs - len(finished),
        "other_operators_exited": exited,
        **call_report(markers, stats, time.monotonic()),
        "share": dict(
            collections.Counter(j["status"].get("operator", "?").split("/")[0] for j in finished)
        ),
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    plane = plane_up(False, own_plane())
    logs = REPO / "bench" / "results"
    fake = Fake(logs / f"scale-logs-{int(time.time())}-fake")
    fake.process.start()
    fake.process.wait_http_ok(f"http://127.0.0.1:{fake.port}/_fake/stats")
    try:
        async with KubeClient(load_config(plane.kubeconfig)) as kube:
            runs = []
            for replicas in (int(r) for r in args.replicas.split(",") if r):
                runs.append(await measured_run(args, plane, fake, kube, replicas))
                print(json.dumps(runs[-1]), flush=True)
            kill = await kill_run(args, plane, fake, kube) if args.kill_jobs else None
    finally:
        fake.process.stop()
    return {
        "runs": runs,
        "kill": kill,
        "latency_ms": args.latency_ms,
        "concurrency_per_replica": args.concurrency,
        "cores": os.cpu_count(),
        "load_average_end": [round(v, 2) for v in os.getloadavg()],
    }


def summary(report: dict[str, Any]) -> str:
    lines = []
    for run in report["runs"]:
        cpu = run["cpu_ms_per_job"]
        per_operator = ", ".join(f"{n} {cpu.get(n, 0):.2f}" for n in run["share"])
        lines.append(
            f"{run['operator_replicas']} operator(s), {run['api_replicas']} APIs: "
            f"{run['jobs_per_second']} jobs/s; share {run['share']}; "
            f"exited {run['operators_exited']}; "
            f"calls/job {run['provider_calls_per_job']}, twice at once "
            f"{run['jobs_run_twice_at_once']}, lost {run['lost']}; operator CPU-ms/job "
            f"{per_operator}; APIs {sum(v for k, v in cpu.items() if k.startswith('api')):.2f}, "
            f"apiserver {cpu.get('kube-apiserver', 0):.2f}, etcd {cpu.get('etcd', 0):.2f}; "
            f"peak RSS MiB {run['operator_peak_rss_mib']}"
        )
    kill = report["kill"]
    if kill:
        lines.append(
            f"kill {kill['killed']} of 3 after {kill['done_at_kill']} of {kill['jobs']} done: "
            f"takeover {kill['takeover_s']} s (lease {kill['lease_duration_s']} s); "
            f"{kill['jobs_moved']} jobs moved; calls repeated {kill['jobs_called_twice']}; "
            f"twice at once {kill['jobs_run_twice_at_once']}; lost {kill['lost']}; "
            f"share {kill['share']}"
        )
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    report = asyncio.run(bench(args))
    out = REPO / "bench" / "results" / f"scale-{int(time.time())}.json"
    out.write_text(json.dumps(report, indent=2))
    print(summary(report))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
