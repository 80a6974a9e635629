"""Large byte strings joined and hashed without holding the event loop.

Copying or hashing tens of MiB took 100-250 ms of a loaded core (a provider's answer of
2,048 embeddings is about 40 MiB; a request or result may be 25 MiB), during which a
loop served nothing: no poll, no other job, no Lease renewal. bytes.join and hashlib let
go of the GIL while they work on large buffers, so past IN_THREAD_BYTES they run in a
thread and the loop carries on. Under it, the hop to a thread costs more than the work.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence

import aiohttp

IN_THREAD_BYTES = 1 << 20


async def joined(parts: Sequence[bytes]) -> bytes:
    if sum(map(len, parts)) <= IN_THREAD_BYTES:
        return b"".join(parts)
    return await asyncio.to_thread(b"".join, parts)


class BodyTooLarge(Exception):
    """A body went past the limit it was read with; the rest was not read."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"over {limit} bytes")
        self.limit = limit


async def read_all(stream: aiohttp.StreamReader, limit: int | None = None) -> bytes:
    """An HTTP body to its end (BodyTooLarge past `limit` bytes, before holding more).
    aiohttp's read() joins the chunks on the loop. (Not iter_chunks(): on the shared
    empty body of a 204, every read after the first in the process returns an
    end-of-chunk marker, never the end, and the loop would spin.)"""
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream.iter_any():
        size += len(chunk)
        if limit is not None and size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return await joined(chunks)


async def sha256_hex(body: bytes) -> str:
    if len(body) <= IN_THREAD_BYTES:
        return sha256_hex_now(body)
    return await asyncio.to_thread(sha256_hex_now, body)


def sha256_hex_now(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()
