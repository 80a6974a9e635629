"""The worst bodies the API's limits let in, sent to a real API process at a 25 MiB body
limit (the s3 backend's default): every one is answered (202 or a precise 400, never a
5xx), the API with its body worker stays under the chart's 512 MiB memory limit, and the
costly parses ran in the worker process, not on the API's loop.

Before the worker, the API parsed these on its loop (200-450 ms each on this machine's
cores, every poll on the replica waiting) and had no child process; the body limit and
the pod's memory limit are sized together here, as api/README.md says.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from asyncjobs.api.validation import MAX_JSON_DEPTH, max_json_values
from tests.support.procs import ManagedProcess, free_port, python_module

pytestmark = [pytest.mark.integration, pytest.mark.payload_independent]

LIMIT = 25 * 1024 * 1024
CHART_MEMORY_LIMIT_MIB = 512
CHAT = "/v1/async/chat/completions"


def chat_with(extra: bytes) -> bytes:
    return b'{"model":"local/echo","messages":[{"role":"user","content":"hi"}]' + extra + b"}"


def at_the_value_cap(unit: bytes, values_per_unit: int) -> bytes:
    """As many `unit`s as the value bound and the body limit allow, in a metadata list."""
    count = min((LIMIT - 200) // len(unit), max_json_values(LIMIT) // values_per_unit - 16)
    return chat_with(b',"metadata":{"v":[' + unit * count + b"0]}")


WORST = [
    # Accepted: the parser's most expensive shapes at the value cap.
    ("small objects at the value cap", at_the_value_cap(b'{"a":0},', 2), 202),
    ("integers at the value cap", at_the_value_cap(b"1,", 1), 202),
    # Refused after a full 25 MiB parse: one long string, then a missing field.
    (
        "one 25 MiB string",
        b'{"model":"local/echo","prompt":"' + b"x" * (LIMIT - 100) + b'"}',
        400,
    ),
    # Refused before any parse: too many values, too deep.
    ("25 MiB of empty lists", chat_with(b',"x":[' + b"[]," * ((LIMIT - 100) // 3) + b"0]"), 400),
    ("nesting past the bound", chat_with(b',"x":' + b"[" * (MAX_JSON_DEPTH + 1)), 400),
]


def resident_peak_mib(pid: int) -> tuple[float, list[str]]:
    """Peak RSS of the process and its children (the body worker shares the pod's limit),
    and the children's command lines."""
    # Each thread's children are listed under its own task (the worker is started from one).
    children = [
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    ]
    total = 0
    for each in [pid, *children]:
        for line in Path(f"/proc/{each}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1])
    commands = [
        Path(f"/proc/{c}/cmdline").read_bytes().replace(b"\0", b" ").decode() for c in children
    ]
    return total / 1024, commands


@pytest.fixture
async def api(
    kubeconfig_path: str, namespace: str, log_dir: Path
) -> AsyncIterator[tuple[str, int]]:
    port = free_port()
    process = ManagedProcess(
        "api",
        python_module(
            "asyncjobs.api.main",
            *("--kubeconfig", kubeconfig_path, "--namespace", namespace),
            *("--host", "127.0.0.1", "--port", str(port)),
            *("--max-request-bytes", str(LIMIT), "--max-stored-bytes", "0"),
        ),
        log_dir=log_dir,
    ).start()
    try:
        base = f"http://127.0.0.1:{port}"
        await asyncio.to_thread(process.wait_http_ok, f"{base}/readyz", 60)
        yield base, process.pid
    finally:
        process.stop()


async def test_the_worst_bodies_are_answered_within_the_memory_limit(
    api: tuple[str, int],
) -> None:
    base, pid = api
    answers = {}
    timeout = aiohttp.ClientTimeout(total=110)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for name, body, _ in WORST:
            assert len(body) <= LIMIT, name
            async with session.post(
                base + CHAT, data=io.BytesIO(body), headers={"Content-Type": "application/json"}
            ) as answer:
                answers[name] = answer.status
                document = await answer.json()
                if answer.status == 400:
                    assert document["error"]["message"], name
    assert answers == {name: status for name, _, status in WORST}
    peak, children = resident_peak_mib(pid)
    # multiprocessing's spawned worker (its resource tracker may be a second child).
    assert any("spawn_main" in command for command in children), children
    assert peak < CHART_MEMORY_LIMIT_MIB, f"API and worker peaked at {peak:.0f} MiB"
