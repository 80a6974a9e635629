"""Which operator replica runs a job: a fixed shard per job, a live member per shard.

Every job belongs to one of `SHARDS` shards by a stable hash of its name, written at
submit as the label `asyncjobs.dev/shard`, so an operator replica can ask the apiserver
for its own shards' jobs only (a server-side label selector) instead of parsing every
job's events. Each shard belongs to one live operator member by rendezvous
(highest-random-weight) hashing over the members' names: when a member leaves, only its
shards move, each to whichever remaining member weighs most for it; when one joins, it
takes about 1/N of every other member's shards and nothing else changes.

The number of shards is a constant, not a setting, so the API, the operator and anyone
else creating AsyncJobs can never disagree on a job's shard. 256 spreads jobs within
about ±10 % of an even share over a few replicas (64 left one of three replicas with 16
shards and another with 26 in bench/scale_bench.py) and keeps the selector about 1 KB.

Pure functions only; the operator's adapters are in controller/members.py and main.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping

from asyncjobs.core import resources

SHARDS = 256
LABEL = f"{resources.GROUP}/shard"

_ALL = ",".join(str(shard) for shard in range(SHARDS))
# Matches jobs without the label or with a value that is no shard (notin also matches a
# missing label): created by kubectl or another tool; the operator labels them.
UNLABELLED_SELECTOR = f"{LABEL} notin ({_ALL})"


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def shard_of(name: str) -> int:
    """The shard a job of this name belongs to, the same in every process and release."""
    return _hash64(name) % SHARDS


def labelled_shard(labels: Mapping[str, str] | None) -> int | None:
    """The shard a job's label names; None when the label is missing or names no shard."""
    value = (labels or {}).get(LABEL, "")
    if not value.isdigit():
        return None
    shard = int(value)
    return shard if shard < SHARDS else None


def job_shard(name: str, labels: Mapping[str, str] | None) -> int:
    """The label decides where there is a valid one (it is what the watches select on);
    otherwise the hash of the name, which is also the value the label gets."""
    labelled = labelled_shard(labels)
    return shard_of(name) if labelled is None else labelled


def owner(shard: int, members: Iterable[str]) -> str | None:
    """The member that runs the shard: the highest weight hash(member, shard), ties
    broken by name; None when there are no members."""
    best: tuple[int, str] | None = None
    for member in members:
        weight = (_hash64(f"{member}\x00{shard}"), member)
        if best is None or weight > best:
            best = weight
    return None if best is None else best[1]


def owned_shards(member: str, members: Collection[str]) -> frozenset[int]:
    """The shards `member` runs when `members` are live (itself included or not)."""
    everyone = {*members, member}
    return frozenset(s for s in range(SHARDS) if owner(s, everyone) == member)


def selector(shards: Iterable[int]) -> str:
    """The label selector for the jobs of these shards ("" for none: select nothing is
    not expressible, the caller must not watch at all)."""
    values = ",".join(str(shard) for shard in sorted(shards))
    return f"{LABEL} in ({values})" if values else ""
