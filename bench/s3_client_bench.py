#!/usr/bin/env python3
"""CPU per S3 call: the project's SigV4 client (core/s3_client.py) against aiobotocore.

    uv run --frozen python bench/s3_client_bench.py [--calls 500] [--bytes 2048]

Starts a SeaweedFS S3 server (tools/s3server.py), then for each client makes --calls
sequential PUTs and then GETs of --bytes-sized objects and reports this process's CPU
(user + system) per call, and the wall time per call. Sequential calls on one
connection pool, so the numbers are the client's own cost plus the loopback round trip,
not the server's throughput. The server's CPU is not counted (it is the same for both).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "src")]

from aiobotocore.config import AioConfig  # noqa: E402
from aiobotocore.session import get_session  # noqa: E402
from tools import s3server  # noqa: E402

from asyncjobs.core.s3_payloads import S3Settings, open_s3_payloads  # noqa: E402

Call = Callable[[str], Awaitable[object]]


async def measure(name: str, put: Call, get: Call, calls: int) -> None:
    for verb, call in (("PUT", put), ("GET", get)):
        cpu, wall = time.process_time(), time.perf_counter()
        for index in range(calls):
            await call(f"bench/{name}/{index}")
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        print(
            f"{name:12} {verb}: {cpu / calls * 1000:6.2f} CPU-ms/call, "
            f"{wall / calls * 1000:6.2f} ms/call"
        )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--bytes", type=int, default=2048)
    args = parser.parse_args()
    body = os.urandom(args.bytes)
    with tempfile.TemporaryDirectory() as state, s3server.start(Path(state)) as server:
        os.environ.update(server.env())
        settings = S3Settings(bucket=server.bucket, endpoint=server.endpoint, path_style=True)
        async with open_s3_payloads(settings) as store:
            client = store.client

            async def ours_put(key: str) -> None:
                await client.put_object(key, body, "application/json", {"sha256": "x"})

            async def ours_get(key: str) -> None:
                await client.get_object(key)

            await measure("asyncjobs", ours_put, ours_get, 20)  # warm-up
            await measure("asyncjobs", ours_put, ours_get, args.calls)
        config = AioConfig(s3={"addressing_style": "path"}, max_pool_connections=64)
        async with get_session().create_client(
            "s3", endpoint_url=server.endpoint, region_name=server.region, config=config
        ) as boto:

            async def boto_put(key: str) -> None:
                await boto.put_object(
                    Bucket=server.bucket, Key=key, Body=body, Metadata={"sha256": "x"}
                )

            async def boto_get(key: str) -> None:
                answer = await boto.get_object(Bucket=server.bucket, Key=key)
                async with answer["Body"] as stream:
                    await stream.read()

            await measure("aiobotocore", boto_put, boto_get, 20)
            await measure("aiobotocore", boto_put, boto_get, args.calls)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
