#!/usr/bin/env python3
"""Fair-share benchmark: one virtual key floods, another submits a trickle; how long does
the trickle wait for a call slot, with fair share on and off?

    uv run --frozen python bench/fairshare_bench.py
    uv run --frozen python bench/fairshare_bench.py --flood 2000 --slots 4 --latency-ms 200

Runs against the control plane the ASYNCJOBS_PLANE_DIR / ASYNCJOBS_*_PORT variables name
(all of them), else one of its own (`.plane/fairshare-bench`). The provider is the fake
OpenAI server (tests/fakes/openai_server.py: the real wire format over a real socket)
answering after --latency-ms, with --slots calls allowed at once (the provider's
maxConcurrency and the operator's maxInFlight), so the provider, not the pipeline, is
what jobs queue for. For each mode (--modes, default `on,off`: the operator with and
without --no-fair-share), a fresh namespace with one API and one operator and two
virtual keys of weight 1:

- key A (the flood) submits --flood chat completions from --submitters clients as fast
  as the API takes them;
- key B (the trickle) submits one job every --trickle-seconds from the flood's first
  submit until its last, from one client.

Every job is followed with a watch until terminal. Queue wait is the job's own
`status.startTime - spec.submittedAt` (the API's clock at accept, the operator's at the
claim: one host). Reported per mode: key B's queue wait p50 / p90 / p99 / max, key A's,
how many of A's jobs started between each B job's submit and its start (the order,
whatever the host's speed),
the flood's submit rate, and the host's load average at the start and end (the host is
shared; waits include time spent waiting for a core). Saved as JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import contextlib
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "src")]

import aiohttp  # noqa: E402
from tests.support.procs import ManagedProcess, free_port, python_module  # noqa: E402

from asyncjobs.core import resources  # noqa: E402
from asyncjobs.core.jobs import parse_time  # noqa: E402
from asyncjobs.core.kube import KubeClient, load_config  # noqa: E402
from e2e_bench import follow, payload_backend, percentiles, plane_up  # noqa: E402
from scale_bench import Fake, providers_file  # noqa: E402

OWN_PLANE = {
    "ASYNCJOBS_PLANE_DIR": str(REPO / ".plane" / "fairshare-bench"),
    "ASYNCJOBS_ETCD_PORT": "23797",
    "ASYNCJOBS_ETCD_PEER_PORT": "23807",
    "ASYNCJOBS_APISERVER_PORT": "26450",
}
KEYS = {"flood": "sk-bf-bench-flood", "trickle": "sk-bf-bench-trickle"}
PROVIDER_KEY = "sk-bench-provider"
WARM_UP = 4


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flood", type=int, default=2000, help="jobs key A submits")
    parser.add_argument("--submitters", type=int, default=16, help="key A's concurrent clients")
    parser.add_argument("--trickle-seconds", type=float, default=0.5, help="key B's interval")
    parser.add_argument("--latency-ms", type=float, default=200.0, help="each provider call")
    parser.add_argument("--slots", type=int, default=4, help="provider calls at once")
    parser.add_argument("--modes", default="on,off", help="fair share on, off, or both")
    parser.add_argument("--payloads", choices=["secrets", "s3"], default="secrets")
    parser.add_argument("--timeout", type=float, default=900)
    return parser.parse_args()


def own_plane() -> dict[str, str]:
    """The plane the environment names (all of its variables), else the bench's own."""
    given = {name: os.environ[name] for name in OWN_PLANE if name in os.environ}
    return given if len(given) == len(OWN_PLANE) else OWN_PLANE


def chat(marker: str) -> bytes:
    body = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": marker}]}
    return json.dumps(body).encode()


async def fresh_namespace(kube: KubeClient) -> str:
    namespace = f"fairshare-{uuid.uuid4().hex[:8]}"
    await kube.create(
        resources.namespaces_path(),
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
    )
    secrets = resources.secrets_path(namespace)
    await kube.create(
        secrets,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "provider-key"},
            "stringData": {"k": PROVIDER_KEY},
        },
    )
    for key_id, key in KEYS.items():
        await kube.create(
            secrets,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": key_id, "labels": {resources.LABEL_VIRTUAL_KEY: "true"}},
                "data": {"key": base64.b64encode(key.encode()).decode()},
            },
        )
    return namespace


async def post(session: aiohttp.ClientSession, api: str, key: str, marker: str) -> str:
    for _ in range(5):
        async with session.post(
            f"{api}/v1/async/chat/completions",
            data=chat(marker),
            headers={"Content-Type": "application/json", "x-bf-vk": key},
        ) as answer:
            if answer.status == 202:
                return str((await answer.json())["id"])
        await asyncio.sleep(0.2)
    raise RuntimeError(f"submit kept failing: {answer.status}")


async def flood(api: str, jobs: int, submitters: int, ids: list[str]) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(jobs):
        queue.put_nowait(index)
    connector = aiohttp.TCPConnector(limit=submitters)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while not queue.empty():
                index = queue.get_nowait()
                ids.append(await post(session, api, KEYS["flood"], f"flood-{index}"))

        await asyncio.gather(*(worker() for _ in range(submitters)))


async def trickle(api: str, every: float, until: asyncio.Event, ids: list[str]) -> None:
    async with aiohttp.ClientSession() as session:
        while not until.is_set():
            ids.append(await post(session, api, KEYS["trickle"], f"trickle-{len(ids)}"))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(until.wait(), every)


def started_ahead(
    done: dict[str, dict[str, Any]], flood_ids: list[str], ids: list[str]
) -> list[int]:
    """For each job of `ids`: how many flood jobs started after it was submitted and
    before it started. The queue's share, apart from how slow the host was: with fair
    share, the slots the flood got while this job was waiting (or not yet seen by the
    operator); without, the backlog ahead of it."""
    starts = sorted(
        parse_time(done[i]["status"]["startTime"]).timestamp()
        for i in flood_ids
        if done[i]["status"].get("startTime")
    )
    ahead = []
    for job_id in ids:
        job = done[job_id]
        if not job["status"].get("startTime"):
            continue
        submitted = parse_time(job["spec"]["submittedAt"]).timestamp()
        start = parse_time(job["status"]["startTime"]).timestamp()
        ahead.append(bisect.bisect_left(starts, start) - bisect.bisect_right(starts, submitted))
    return ahead


def waits(done: dict[str, dict[str, Any]], ids: list[str]) -> list[float]:
    result = []
    for job_id in ids:
        job = done[job_id]
        submitted = parse_time(job["spec"]["submittedAt"])
        started = job["status"].get("startTime")
        if started:
            result.append((parse_time(started) - submitted).total_seconds())
    return result


async def run_mode(
    args: argparse.Namespace,
    kubeconfig: str,
    kube: KubeClient,
    fake: Fake,
    fair: bool,
    payload_env: dict[str, str],
) -> dict[str, Any]:
    namespace = await fresh_namespace(kube)
    logs = REPO / "bench" / "results" / f"fairshare-logs-{int(time.time())}-{int(fair)}"
    logs.mkdir(parents=True, exist_ok=True)
    fake.reset(args.latency_ms, [PROVIDER_KEY])
    providers = providers_file(logs / "providers.yaml", fake, "provider-key", args.slots)
    common = ["--kubeconfig", kubeconfig, "--namespace", namespace]
    common += ["--providers-config", str(providers), "--log-level", "WARNING"]
    operator_port, api_port = free_port(), free_port()
    operator = ManagedProcess(
        "operator",
        python_module(
            "asyncjobs.controller.main",
            *common,
            *("--metrics-port", str(operator_port)),
            *([] if fair else ["--no-fair-share"]),
        ),
        log_dir=logs,
        env=payload_env,
    )
    api_argv = python_module(
        "asyncjobs.api.main",
        *common,
        *("--port", str(api_port), "--max-stored-jobs", "0", "--max-stored-bytes", "0"),
    )
    api_process = ManagedProcess("api", api_argv, log_dir=logs, env=payload_env)
    api = f"http://127.0.0.1:{api_port}"
    load_start = os.getloadavg()
    try:
        with operator, api_process:
            operator.wait_http_ok(f"http://127.0.0.1:{operator_port}/healthz", 120)
            api_process.wait_http_ok(f"{api}/readyz", 120)
            warm: list[str] = []
            async with aiohttp.ClientSession() as session:
                for index in range(WARM_UP):
                    warm.append(await post(session, api, KEYS["trickle"], f"warm-{index}"))
            await asyncio.wait_for(follow(kube, namespace, WARM_UP, {}), 120)

            done: dict[str, dict[str, Any]] = {}
            expected: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            flood_ids: list[str] = []
            trickle_ids: list[str] = []
            flood_over = asyncio.Event()

            async def follow_all() -> None:
                # The trickle's length is known only when the flood is submitted.
                await follow(kube, namespace, WARM_UP + args.flood, done)
                total = await expected
                await follow(kube, namespace, WARM_UP + total, done)

            watcher = asyncio.create_task(follow_all())
            trickler = asyncio.create_task(
                trickle(api, args.trickle_seconds, flood_over, trickle_ids)
            )
            began = time.time()
            await flood(api, args.flood, args.submitters, flood_ids)
            submitted = time.time()
            flood_over.set()
            await trickler
            expected.set_result(len(flood_ids) + len(trickle_ids))
            await asyncio.wait_for(watcher, args.timeout)
            finished = time.time()
    finally:
        await kube.delete(resources.namespaces_path(namespace))
    flood_waits, trickle_waits = waits(done, flood_ids), waits(done, trickle_ids)
    return {
        "fair_share": fair,
        "flood_jobs": len(flood_ids),
        "trickle_jobs": len(trickle_ids),
        "flood_submits_per_second": round(len(flood_ids) / (submitted - began), 1),
        "jobs_per_second": round((len(flood_ids) + len(trickle_ids)) / (finished - began), 1),
        "seconds": round(finished - began, 1),
        "trickle_queue_wait_seconds": percentiles(trickle_waits),
        "flood_queue_wait_seconds": percentiles(flood_waits),
        "flood_jobs_started_ahead_of_trickle": percentiles(
            [float(n) for n in started_ahead(done, flood_ids, trickle_ids)]
        ),
        "failed": sum(1 for job in done.values() if job["status"].get("phase") == "Failed"),
        "load_average_start": [round(v, 2) for v in load_start],
        "load_average_end": [round(v, 2) for v in os.getloadavg()],
        "logs": str(logs),
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    plane = plane_up(False, own_plane())
    logs = REPO / "bench" / "results" / f"fairshare-fake-{int(time.time())}"
    logs.mkdir(parents=True, exist_ok=True)
    runs = []
    fake = Fake(logs)
    fake.process.start()
    try:
        fake.process.wait_http_ok(f"http://127.0.0.1:{fake.port}/_fake/stats", 60)
        with payload_backend(args.payloads, plane) as (payload_env, _):
            async with KubeClient(load_config(plane.kubeconfig)) as kube:
                for mode in args.modes.split(","):
                    fair = mode == "on"
                    run = await run_mode(args, plane.kubeconfig, kube, fake, fair, payload_env)
                    runs.append(run)
    finally:
        fake.process.stop()
    return {
        "flood": args.flood,
        "submitters": args.submitters,
        "trickle_seconds": args.trickle_seconds,
        "latency_ms": args.latency_ms,
        "slots": args.slots,
        "payloads": args.payloads,
        "cores": os.cpu_count(),
        "runs": runs,
    }


def summary(report: dict[str, Any]) -> str:
    def ms(p: dict[str, float]) -> str:
        return " / ".join(f"{p[k] * 1000:,.0f}" for k in ("p50", "p90", "p99", "max")) + " ms"

    lines = [
        f"fair share: key A floods {report['flood']} jobs ({report['submitters']} clients), "
        f"key B one every {report['trickle_seconds']:g} s; provider {report['latency_ms']:g} ms "
        f"per call, {report['slots']} at once; payloads {report['payloads']}; "
        f"{report['cores']} cores"
    ]
    for run in report["runs"]:
        lines += [
            f"  fair share {'on ' if run['fair_share'] else 'off'}: "
            f"B's queue wait p50/p90/p99/max {ms(run['trickle_queue_wait_seconds'])} "
            f"({run['trickle_jobs']} jobs); A's {ms(run['flood_queue_wait_seconds'])}",
            "    A's jobs started between a B job's submit and its start p50/p90/p99/max "
            + " / ".join(
                f"{run['flood_jobs_started_ahead_of_trickle'][k]:g}"
                for k in ("p50", "p90", "p99", "max")
            ),
            f"    A submitted at {run['flood_submits_per_second']}/s; {run['jobs_per_second']} "
            f"jobs/s over {run['seconds']} s; failed {run['failed']}; load average "
            f"{' '.join(map(str, run['load_average_start']))} -> "
            f"{' '.join(map(str, run['load_average_end']))}",
        ]
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    report = asyncio.run(bench(args))
    out = REPO / "bench" / "results" / f"fairshare-{args.flood}-{int(time.time())}.json"
    out.write_text(json.dumps(report, indent=2))
    print(summary(report))
    print(f"saved {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
