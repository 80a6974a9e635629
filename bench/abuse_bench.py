#!/usr/bin/env python3
"""Hostile-input benchmark: the worst body of each kind at the configured limits.

    uv run --frozen python bench/abuse_bench.py                     # s3 backend: 25 MiB bodies
    uv run --frozen python bench/abuse_bench.py --payloads secrets  # 4 MiB bodies
    uv run --frozen python bench/abuse_bench.py --only "from a provider"  # one case

Starts its own control plane (in .plane/abuse, on ports of its own, or the plane the
ASYNCJOBS_PLANE_DIR/_ETCD_PORT/_ETCD_PEER_PORT/_APISERVER_PORT variables name), a scratch
namespace, the API and the operator as real processes with the backend's default limits
and the offline `local` provider with its default output limits, and (for s3) a
SeaweedFS of its own. Then, one case at a time, it sends a body built to cost as much as
the limits allow (the largest JSON value count, the deepest nesting, the most multipart
parts, the largest local answer, the largest result, a provider's answer of 2,048
embeddings of 3,072 values from a fake OpenAI-compatible server on a real socket) and
follows the job to a terminal state, polling its result once it has one. For each case
it reports:

- the HTTP status of the submit (and of the poll that carries the result);
- the longest event-loop stall of the API and of the operator while the case ran,
  measured from outside: a probe process sends one request at a time to the API's
  `/readyz` and the operator's `/healthz`, every 5 ms, and the slowest answer in the
  case's window is the longest time either loop could not answer (the probe's own
  round trip is about 0.3 ms on an idle loop, and is included);
- peak resident memory (VmHWM, which only grows) of the API (with its body worker
  process, which shares the pod's memory limit) and of the operator after the case,
  against the chart's memory limits (api 512 MiB, operator 1 GiB).

Targets (issue 13): no process over its chart memory limit, no stall over 100 ms, no 5xx.
The machine is shared: stalls include waiting for a core while the plane works, so run it
on a quiet host and compare with the idle rows (`baseline`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "src"), str(REPO / "bench")]

import aiohttp  # noqa: E402
import yaml  # noqa: E402
from tests.support.procs import ManagedProcess, free_port, python_module  # noqa: E402

from asyncjobs.api.settings import BACKEND_DEFAULTS  # noqa: E402
from asyncjobs.api.validation import MAX_JSON_DEPTH, max_json_values  # noqa: E402
from asyncjobs.core import multipart, resources  # noqa: E402
from asyncjobs.core.kube import KubeClient, load_config  # noqa: E402
from asyncjobs.core.provider_config import LocalLimits  # noqa: E402
from e2e_bench import payload_backend, plane_up  # noqa: E402
from procstats import rss_kib  # noqa: E402

ABUSE_PLANE = {
    "ASYNCJOBS_PLANE_DIR": str(REPO / ".plane" / "abuse"),
    "ASYNCJOBS_ETCD_PORT": "23792",
    "ASYNCJOBS_ETCD_PEER_PORT": "23802",
    "ASYNCJOBS_APISERVER_PORT": "26445",
}
CHART_LIMITS_MIB = {"api": 512, "operator": 1024}
PROBE_INTERVAL = 0.005
# The OpenAI-compatible provider the large-answer case calls, and its key.
FAKE_PROVIDER = "fakeai"
FAKE_KEY_SECRET = "fakeai-key"
TERMINAL = ("completed", "failed")


# --- the bodies: each as costly as the limits allow ----------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    path: str  # submit route
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


def _chat(extra: bytes) -> bytes:
    return b'{"model":"local/echo","messages":[{"role":"user","content":"hi"}]' + extra + b"}"


def _fit(unit: bytes, prefix_len: int, limit: int, values: int) -> int:
    """How many `unit`s fit both the body limit and the value cap."""
    return min((limit - prefix_len - 64) // len(unit), values - 16)


def cases(limit: int) -> list[Case]:
    values = max_json_values(limit)
    chat = "/v1/async/chat/completions"
    out: list[Case] = []
    # Accepted: the most values the cap allows, in the shapes the parser likes least.
    for name, unit in (("ints", b"1,"), ("objects", b'{"a":0},'), ("strings", b'"abcdefghijklm",')):
        count = _fit(unit, 80, limit, values // (2 if name == "objects" else 1))
        out.append(
            Case(
                f"json {name} at the value cap",
                chat,
                _chat(b',"metadata":{"v":[' + unit * count + b"0]}"),
            )
        )
    # Refused: more values than the cap, and nesting past the depth bound, at full size.
    out.append(
        Case(
            "json `[],` over the cap (refused)",
            chat,
            _chat(b',"x":[' + b"[]," * ((limit - 100) // 3) + b"0]"),
        )
    )
    depth = MAX_JSON_DEPTH + 1
    deep = b'{"a":' * depth + b"0" + b"}" * depth
    out.append(Case("json nested past the bound (refused)", chat, _chat(b',"x":' + deep)))
    # The Anthropic route translates the body: the same value count through it.
    count = _fit(b"1,", 200, limit, values)
    anthropic = (
        b'{"model":"local/echo","max_tokens":16,"messages":[{"role":"user","content":"hi"}],'
        b'"metadata":{"user_id":"u","v":[' + b"1," * count + b"1]}}"
    )
    out.append(
        Case(
            "anthropic messages at the value cap",
            "/anthropic/v1/messages",
            anthropic,
            headers=(("x-bf-async", "true"),),
        )
    )
    # One long string: a large chat whose echoed answer is as large (the largest result).
    words = 48
    word = b"w" * ((limit - 200) // words - 1)
    long_chat = (
        b'{"model":"local/echo","messages":[{"role":"user","content":"'
        + b" ".join([word] * words)
        + b'"}]}'
    )
    out.append(Case("chat echoing the largest answer", chat, long_chat))
    # The local provider's largest embeddings answer its limits allow.
    limits = LocalLimits()
    inputs = min(limits.max_embedding_inputs, 64)
    dims = limits.max_embedding_values // inputs
    emb = json.dumps({"model": "local/embed", "input": ["x"] * inputs, "dimensions": dims}).encode()
    out.append(Case("embeddings at the local output limit", "/v1/async/embeddings", emb))
    # A real provider's largest answers: 2,048 inputs of 3,072 values from an
    # OpenAI-compatible server over a real socket (tests/fakes/openai_server.py).
    large = {"model": f"{FAKE_PROVIDER}/text-embedding-3-large", "input": ["x"] * 2048}
    large["dimensions"] = 3072
    out.append(
        Case(
            "embeddings answer of 2,048 x 3,072 from a provider",
            "/v1/async/embeddings",
            json.dumps(large).encode(),
        )
    )
    # Multipart: more parts than allowed (refused), and the most parts with a file at the limit.
    boundary = "b0undary"
    part = f'--{boundary}\r\nContent-Disposition: form-data; name="f"\r\n\r\nx\r\n'.encode()
    many = part * 10_000 + f"--{boundary}--\r\n".encode()
    out.append(
        Case(
            "multipart 10,000 parts (refused)",
            "/v1/async/audio/transcriptions",
            many,
            f"multipart/form-data; boundary={boundary}",
        )
    )
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nlocal/whisper\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    audio = head + b"\r\n" * ((limit - len(head) - len(tail) - 64) // 2) + tail
    out.append(
        Case(
            "multipart file of line breaks at the limit",
            "/v1/async/audio/transcriptions",
            audio,
            f"multipart/form-data; boundary={boundary}",
        )
    )
    assert multipart.MAX_PARTS < 10_000
    return out


# --- the probe: loop stalls seen from outside --------------------------------------------


def probe_main(urls: list[str], out: str) -> None:
    """One request at a time to each URL, every PROBE_INTERVAL; writes `time name latency`
    lines until killed."""

    async def one(session: aiohttp.ClientSession, name: str, url: str, sink: Any) -> None:
        while True:
            started = time.time()
            try:
                async with session.get(url) as answer:
                    await answer.read()
            except aiohttp.ClientError:
                pass
            sink.write(f"{started:.4f} {name} {time.time() - started:.4f}\n")
            await asyncio.sleep(PROBE_INTERVAL)

    async def run() -> None:
        with open(out, "a", buffering=1) as sink:  # noqa: ASYNC230 (the probe's own process)
            async with aiohttp.ClientSession() as session:
                await asyncio.gather(
                    *(
                        one(session, name, url, sink)
                        for name, url in (u.split("=", 1) for u in urls)
                    )
                )

    asyncio.run(run())


def stalls(probe_file: Path, start: float, end: float) -> dict[str, float]:
    worst: dict[str, float] = {}
    for line in probe_file.read_text().splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        at, name, latency = float(parts[0]), parts[1], float(parts[2])
        # A probe sent before the window that returned inside it counts too.
        if at <= end and at + latency >= start:
            worst[name] = max(worst.get(name, 0.0), latency)
    return {name: round(1000 * value, 1) for name, value in worst.items()}


# --- the run -------------------------------------------------------------------------------


def peak_mib(pid: int) -> float:
    """Peak RSS of a process plus its children now alive (the API's body worker)."""
    total = rss_kib(pid).get("VmHWM", 0)
    # Each thread's children are listed under its own task (the worker is started from one).
    children = [
        child
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    ]
    for child in children:
        try:
            total += rss_kib(int(child)).get("VmHWM", 0)
        except OSError:
            continue
    return round(total / 1024, 1)


async def drive(api: str, case: Case, timeout: float) -> dict[str, Any]:
    headers = {"Content-Type": case.content_type, **dict(case.headers)}
    async with aiohttp.ClientSession() as session:
        async with session.post(api + case.path, data=case.body, headers=headers) as answer:
            status = answer.status
            document = await answer.json(content_type=None)
        report: dict[str, Any] = {"submit": status}
        if status not in (200, 202) or not isinstance(document, dict) or "id" not in document:
            return report
        job_id = document["id"]
        poll_path, poll_headers = f"{case.path}/{job_id}", {}
        if case.path.startswith("/anthropic/"):
            poll_path, poll_headers = case.path, {"x-bf-async-id": job_id}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # The provider routes retrieve with a POST that carries x-bf-async-id.
            method = session.post if poll_headers else session.get
            async with method(api + poll_path, headers=poll_headers) as answer:
                body = await answer.read()
                polled = json.loads(body)
            state = polled.get("status") or (
                "completed" if polled.get("type") == "message" and polled.get("content") else None
            )
            anthropic_done = case.path.startswith("/anthropic/") and polled.get("stop_reason")
            if answer.status == 200 and (state in TERMINAL or anthropic_done):
                report.update(poll=answer.status, job=state or "completed", result_bytes=len(body))
                error = polled.get("error")
                if isinstance(error, dict):
                    report["error"] = (error.get("error") or {}).get("message") or error.get(
                        "message"
                    )
                return report
            await asyncio.sleep(0.2)
        report["job"] = "not terminal before the timeout"
        report["last_poll"] = [answer.status, body[:300].decode(errors="replace")]
        return report


def own_plane() -> dict[str, str]:
    """The plane the environment names (all of its variables: an engineer's own ports),
    else the bench's own."""
    given = {name: os.environ[name] for name in ABUSE_PLANE if name in os.environ}
    return given if len(given) == len(ABUSE_PLANE) else ABUSE_PLANE


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    plane = plane_up(shared=False, own=own_plane())
    logs = REPO / "bench" / "results" / f"abuse-{int(time.time())}"
    logs.mkdir(parents=True, exist_ok=True)
    namespace = f"abuse-{uuid.uuid4().hex[:8]}"
    limit = BACKEND_DEFAULTS[args.payloads].max_request_bytes
    rows: list[dict[str, Any]] = []
    with payload_backend(args.payloads, plane) as (payload_env, _weed):
        async with KubeClient(load_config(plane.kubeconfig)) as kube:
            await kube.create(
                resources.namespaces_path(),
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
            )
            await kube.create(
                f"/api/v1/namespaces/{namespace}/secrets",
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": FAKE_KEY_SECRET},
                    "stringData": {"k": "sk-bench"},
                },
            )
            try:
                rows = await run(args, plane.kubeconfig, namespace, logs, limit, payload_env)
            finally:
                await kube.delete(resources.namespaces_path(namespace))
    return {
        "payloads": args.payloads,
        "max_request_bytes": limit,
        "cases": rows,
        "load_average_end": [round(v, 2) for v in os.getloadavg()],
        "logs": str(logs),
    }


async def run(
    args: argparse.Namespace,
    kubeconfig: str,
    namespace: str,
    logs: Path,
    limit: int,
    payload_env: dict[str, str],
) -> list[dict[str, Any]]:
    fake_port = free_port()
    fake = ManagedProcess(
        "fake-openai",
        python_module("tests.fakes.openai_server", "--port", str(fake_port)),
        log_dir=logs,
    )
    fakeai = {
        "type": "openai",
        "baseURL": f"http://127.0.0.1:{fake_port}/v1",
        "keys": [{"secretRef": {"name": FAKE_KEY_SECRET, "key": "k"}}],
    }
    providers = logs / "providers.yaml"
    providers.write_text(
        yaml.safe_dump({"providers": {"local": {"type": "local"}, FAKE_PROVIDER: fakeai}})
    )
    common = ["--kubeconfig", kubeconfig, "--namespace", namespace]
    common += ["--providers-config", str(providers), "--log-level", "WARNING"]
    operator_port, api_port = free_port(), free_port()
    operator = ManagedProcess(
        "operator",
        python_module("asyncjobs.controller.main", *common, "--metrics-port", str(operator_port)),
        log_dir=logs,
        env=payload_env,
    )
    api_proc = ManagedProcess(
        "api",
        python_module("asyncjobs.api.main", *common, "--port", str(api_port)),
        log_dir=logs,
        env=payload_env,
    )
    api = f"http://127.0.0.1:{api_port}"
    probe_file = logs / "probe.txt"
    built = [case for case in cases(limit) if not args.only or args.only in case.name]
    rows: list[dict[str, Any]] = []
    with fake, operator, api_proc:
        operator.wait_http_ok(f"http://127.0.0.1:{operator_port}/healthz", 60)
        api_proc.wait_http_ok(f"{api}/readyz", 60)
        probe = subprocess.Popen(  # noqa: ASYNC220 (started once, before measuring)
            [
                sys.executable,
                __file__,
                "--probe",
                str(probe_file),
                f"api={api}/readyz",
                f"operator=http://127.0.0.1:{operator_port}/healthz",
            ]
        )
        try:
            # The probe's interpreter takes seconds to start on a loaded machine.
            for _ in range(600):
                if probe_file.exists() and probe_file.stat().st_size:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(2)

            def measure(start: float, end: float) -> dict[str, float]:
                return stalls(probe_file, start, end)

            start = time.time()
            await asyncio.sleep(3)
            rows.append({"case": "baseline (idle, 3 s)", "stall_ms": measure(start, time.time())})
            for case in built:
                start = time.time()
                outcome = await drive(api, case, args.timeout)
                await asyncio.sleep(0.5)  # the operator's last writes after the poll
                end = time.time()
                rows.append(
                    {
                        "case": case.name,
                        "body_bytes": len(case.body),
                        **outcome,
                        "stall_ms": measure(start, end),
                        "peak_rss_mib": {
                            "api": peak_mib(api_proc.pid),
                            "operator": peak_mib(operator.pid),
                        },
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
        finally:
            probe.kill()
            probe.wait()
    return rows


def table(report: dict[str, Any]) -> str:
    lines = [
        f"payloads={report['payloads']} body limit={report['max_request_bytes']:,} B; "
        f"chart limits api {CHART_LIMITS_MIB['api']} MiB, "
        f"operator {CHART_LIMITS_MIB['operator']} MiB",
        "| case | body | submit | job | longest stall api / operator (ms) "
        "| peak RSS api / operator (MiB) |",
        "|---|---|---|---|---|---|",
    ]
    for row in report["cases"]:
        stall = row.get("stall_ms", {})
        rss = row.get("peak_rss_mib", {})
        body = f"{row['body_bytes'] / 2**20:.1f} MiB" if "body_bytes" in row else ""
        job = row.get("job", "")
        if row.get("error"):
            job += f" ({row['error'][:60]})"
        lines.append(
            f"| {row['case']} | {body} | {row.get('submit', '')} | {job} | "
            f"{stall.get('api', '?')} / {stall.get('operator', '?')} | "
            f"{rss.get('api', '')} / {rss.get('operator', '')} |"
        )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--probe":
        probe_main(sys.argv[3:], sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payloads", choices=["secrets", "s3"], default="s3")
    parser.add_argument("--timeout", type=float, default=120, help="per case, to a terminal job")
    parser.add_argument("--only", help="run only the cases whose name contains this")
    args = parser.parse_args()
    report = asyncio.run(bench(args))
    out = REPO / "bench" / "results" / f"abuse-{args.payloads}-{int(time.time())}.json"
    out.write_text(json.dumps(report, indent=2))
    print(table(report))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
