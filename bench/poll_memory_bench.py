"""The API's transient memory for one poll of a job with a large result (issue 13).

    uv run --frozen python bench/poll_memory_bench.py [--result-mib 25] [--polls 3]

A job is completed with a result of `--result-mib` MiB stored the way the secrets
backend stores it: 1 MiB chunk Secrets (core/secret_payloads.py), held by an in-memory
apiserver that answers each GET as the real one does (the Secret's JSON text, which the
client decodes and parses). The real API app (create_app, aiohttp's test server) then
answers `--polls` polls of it over a real socket; the client reads each answer in 64 KiB
pieces and drops them, so only the API's side counts. For each poll, tracemalloc's peak
above what was allocated before the poll is printed, with the time the poll took; the
result cache runs at its default budget (a result over an eighth of it is not kept, so
each poll reads the store again: the case the issue measured).

tracemalloc sees Python allocations (bytes, str, dict), which is where result bodies
live; it slows the run, so the times are only comparable between runs of this script.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "src")]

from tests.support.json_secrets import SecretBackedStore, SecretsAsJson  # noqa: E402
from tests.unit.api.fakes import NOW, FakeClock  # noqa: E402

from asyncjobs.api.app import create_app  # noqa: E402
from asyncjobs.api.result_cache import DEFAULT_BUDGET_BYTES  # noqa: E402
from asyncjobs.api.settings import Settings  # noqa: E402
from asyncjobs.api.virtual_keys import KeyRing  # noqa: E402
from asyncjobs.core.secret_payloads import SecretPayloads  # noqa: E402

MIB = 1024 * 1024


def large_result(size: int) -> bytes:
    """An image generation answer of about `size` bytes (base64, like a real one)."""
    raw = bytes(range(256)) * (size * 3 // 4 // 256)
    image = {"b64_json": base64.b64encode(raw).decode()}
    return json.dumps({"created": 1, "data": [image]}).encode()


async def run(result_mib: int, polls: int) -> None:
    clock = FakeClock()
    payloads = SecretPayloads(SecretsAsJson(), "bench")
    store = SecretBackedStore(payloads, clock)
    job_id = "0b8f6a52-4a43-4d2b-9d59-3f7c2f1f4a11"
    store.put_job(job_id, "image_generation")
    await store.complete_large(job_id, large_result(result_mib * MIB))
    ref = store.objects[job_id]["status"]["resultRef"]
    clock.now = NOW + timedelta(seconds=5)
    settings = Settings(
        namespace="bench",
        providers=frozenset({"local"}),
        result_cache_bytes=DEFAULT_BUDGET_BYTES,
    )
    app = create_app(settings, store=store, keys=KeyRing(), clock=clock)
    print(f"result: {ref['size'] / MIB:.1f} MiB in {ref['chunks']} chunk Secrets")
    async with TestClient(TestServer(app)) as client:
        tracemalloc.start()
        for number in range(1, polls + 1):
            before, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            started = time.perf_counter()
            async with client.get(f"/v1/async/images/generations/{job_id}") as answer:
                assert answer.status == 200, await answer.text()
                received = 0
                async for piece in answer.content.iter_chunked(64 * 1024):
                    received += len(piece)
            took = time.perf_counter() - started
            _, peak = tracemalloc.get_traced_memory()
            print(
                f"poll {number}: {received / MIB:.1f} MiB answered in {took * 1000:.0f} ms, "
                f"peak {(peak - before) / MIB:.1f} MiB above the {before / MIB:.1f} MiB before"
            )
        tracemalloc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--result-mib", type=int, default=25)
    parser.add_argument("--polls", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(run(args.result_mib, args.polls))


if __name__ == "__main__":
    main()
