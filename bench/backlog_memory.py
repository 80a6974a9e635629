#!/usr/bin/env python3
"""Memory per pending job in the operator's supervisor, without a cluster.

    uv run --frozen python bench/backlog_memory.py --jobs 100000
    uv run --frozen python bench/backlog_memory.py --jobs 20000 --started 100000

Builds the supervisor as the operator does (fake provider and writer, no apiserver),
hands it N pending chat jobs shaped like the ones the API writes (labels, annotations,
a virtual key, a request reference), as a listing does, and reports the growth of the
process's resident memory per job once the listing is over, and the time to observe
each. `--started` sets how many jobs of one provider become tasks (the operator's
`--max-started-per-provider`): the default parks all but 500; a value above N makes
every job a task, the operator before the backlog existed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "src")]

from tests.unit.controller.fakes import (  # noqa: E402
    FakeSecrets,
    ScriptedProvider,
    StatusWriter,
    asyncjob,
    context,
)

from asyncjobs.controller.expiry import Expiry  # noqa: E402
from asyncjobs.controller.health import WatchHealth  # noqa: E402
from asyncjobs.controller.supervisor import STARTED_PER_PROVIDER, Supervisor  # noqa: E402


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def pending_job(i: int) -> dict[str, Any]:
    obj = asyncjob(name=f"chat-{i:032x}", uid=f"{i:08x}-1b2c-4d5e-8f90-1234567890ab")
    obj["metadata"].update(
        resourceVersion=str(i + 10),
        namespace="capacity-abcdef12",
        generation=1,
        labels={
            "asyncjobs.dev/shard": str(i % 256),
            "asyncjobs.dev/request-type": "chat_completion",
            "asyncjobs.dev/virtual-key": "3f2a9c1b7d4e",
        },
        annotations={"asyncjobs.dev/request-id": f"req-{i:032x}"},
    )
    obj["spec"].update(virtualKeyId="team-a", keyWeight=1, priority=0, resultTTLSeconds=3600)
    obj["status"] = {"phase": "Pending"}
    return obj


async def measure(jobs: int, started: int) -> None:
    async def delete(name: str, uid: str) -> None:
        pass

    ctx = context(StatusWriter(asyncjob()), FakeSecrets(), {"openai": ScriptedProvider("openai")})
    supervisor = Supervisor(
        ctx, Expiry(delete, ctx.wall), WatchHealth(time.monotonic), per_lane=lambda: started
    )
    # Calls never start: every job stays pending, as behind a busy provider.
    ctx.admission.paused = True
    names = [f"chat-{i:032x}" for i in range(jobs)]
    gc.collect()
    before = rss_kib()
    began = time.perf_counter()
    for i in range(jobs):
        supervisor.observe(None, pending_job(i))
    observed = time.perf_counter() - began
    supervisor.listed(names)
    await asyncio.sleep(0.5)  # the started tasks run up to their wait for a slot
    ctx.admission.paused = True
    gc.collect()
    grown = rss_kib() - before
    print(
        f"{jobs} pending jobs, {len(supervisor.tasks)} tasks, {len(supervisor.backlog)} parked: "
        f"{grown / jobs:.2f} KiB per job, {grown / 1024:.0f} MiB in all, "
        f"{observed / jobs * 1e6:.0f} µs to observe each"
    )
    await supervisor.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--started", type=int, default=STARTED_PER_PROVIDER)
    args = parser.parse_args()
    asyncio.run(measure(args.jobs, args.started))


if __name__ == "__main__":
    main()
