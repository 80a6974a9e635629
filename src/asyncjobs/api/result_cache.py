"""Recently read results, in memory under a byte budget: a repeated poll costs no read.

A completed job's result never changes: its reference names the Secret (per job and per
provider call) and the SHA-256 of the bytes, and the store checks both on the first read.
So the bytes read once under a reference are the bytes of every later read, and a key of
(Secret name, SHA-256) can never serve other bytes. The cache only replaces that read:
the poll still finds the job first, so a job deleted or expired answers 404, and a job
whose result could not be read (`integrity.py`) is never cached, since only a verified
read puts bytes here.

Least recently used entries are evicted once the entries' cost passes the budget; a
result larger than an eighth of the budget is not kept, so one large body cannot flush
every small one. A budget of 0 disables the cache. It holds plain counters; metrics.py
reads them when scraped, so a hit costs a dict lookup and a move, nothing more.
"""

from __future__ import annotations

from collections import OrderedDict

from asyncjobs.core.payloads import PayloadRef

DEFAULT_BUDGET_BYTES = 64 * 1024 * 1024

# What an entry costs beyond its body, measured with tracemalloc (api/README.md): the
# bytes object's header, the key tuple and its two strings, the OrderedDict's slot and
# link. Rounded up so the budget bounds real memory, not just the bodies.
ENTRY_OVERHEAD_BYTES = 400

# A body above budget // this is not cached.
_LARGEST_SHARE = 8

# (Secret name, SHA-256) of the result reference.
Key = tuple[str, str]


class ResultCache:
    def __init__(self, budget_bytes: int = 0) -> None:
        self.budget_bytes = max(0, budget_bytes)
        self.largest_body = self.budget_bytes // _LARGEST_SHARE
        self._entries: OrderedDict[Key, bytes] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.budget_bytes > 0

    def get(self, ref: PayloadRef) -> bytes | None:
        """The result stored under `ref` if held (counted as a hit), else None (a miss)."""
        if not self.budget_bytes:
            return None
        key = (ref.name, ref.sha256)
        body = self._entries.get(key)
        if body is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return body

    def put(self, ref: PayloadRef, body: bytes) -> None:
        """Keeps `body`, read and verified under `ref`, evicting the least recently used."""
        if not self.budget_bytes or len(body) > self.largest_body:
            return
        key = (ref.name, ref.sha256)
        if key in self._entries:
            self._entries.move_to_end(key)
            return
        self._entries[key] = body
        self.bytes += len(body) + ENTRY_OVERHEAD_BYTES
        while self.bytes > self.budget_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= len(evicted) + ENTRY_OVERHEAD_BYTES

    def __len__(self) -> int:
        return len(self._entries)
