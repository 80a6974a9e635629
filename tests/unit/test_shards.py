"""Shards: a stable hash per job name, a rendezvous owner per shard over the live members."""

from __future__ import annotations

import collections
import uuid
from datetime import UTC, datetime

import pytest

from asyncjobs.core import jobs, shards
from asyncjobs.core.jobs import JobSpec
from asyncjobs.core.payloads import describe
from asyncjobs.core.request_types import RequestType

MEMBERS = ["op-a", "op-b", "op-c"]


def test_shard_of_is_stable_and_within_range() -> None:
    # Fixed values: the API and every operator release must agree forever.
    assert shards.shard_of("j1") == shards.shard_of("j1")
    assert shards.shard_of("0b6f8a58-3f7e-4d6e-9a43-2f1f5c1d9a10") == 137
    assert shards.shard_of("j1") == 78
    names = [str(uuid.UUID(int=i)) for i in range(100 * shards.SHARDS)]
    counts = collections.Counter(shards.shard_of(n) for n in names)
    assert set(counts) == set(range(shards.SHARDS))
    assert max(counts.values()) < 2 * 100  # about 100 per shard


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({shards.LABEL: "7"}, 7),
        ({shards.LABEL: "255"}, 255),
        ({shards.LABEL: "256"}, None),
        ({shards.LABEL: "-1"}, None),
        ({shards.LABEL: "seven"}, None),
        ({shards.LABEL: ""}, None),
        ({}, None),
        (None, None),
    ],
)
def test_labelled_shard(labels: dict[str, str] | None, expected: int | None) -> None:
    assert shards.labelled_shard(labels) == expected


def test_job_shard_prefers_a_valid_label_over_the_hash() -> None:
    assert shards.job_shard("j1", {shards.LABEL: "3"}) == 3
    assert shards.job_shard("j1", {shards.LABEL: "999"}) == shards.shard_of("j1")
    assert shards.job_shard("j1", None) == shards.shard_of("j1")


def test_every_shard_has_exactly_one_owner_and_the_split_is_even() -> None:
    owned = [shards.owned_shards(m, MEMBERS) for m in MEMBERS]
    assert frozenset().union(*owned) == frozenset(range(shards.SHARDS))
    assert sum(len(o) for o in owned) == shards.SHARDS
    assert all(shards.SHARDS / 6 <= len(o) <= shards.SHARDS / 2 for o in owned), owned
    assert shards.owner(5, []) is None
    assert shards.owned_shards("op-a", ["op-a"]) == frozenset(range(shards.SHARDS))
    # The member asking counts even if the list it has does not name it yet.
    assert shards.owned_shards("op-a", ["op-b"]) == shards.owned_shards("op-a", MEMBERS[:2])


def test_only_the_lost_members_shards_move() -> None:
    before = {s: shards.owner(s, MEMBERS) for s in range(shards.SHARDS)}
    after = {s: shards.owner(s, ["op-a", "op-c"]) for s in range(shards.SHARDS)}
    moved = {s for s in before if before[s] != after[s]}
    assert moved == {s for s in before if before[s] == "op-b"}
    # A member joining takes shards from the others and moves nothing between them.
    joined = {s: shards.owner(s, [*MEMBERS, "op-d"]) for s in range(shards.SHARDS)}
    assert all(joined[s] in (before[s], "op-d") for s in before)


def test_selectors() -> None:
    assert shards.selector({3, 1, 20}) == "asyncjobs.dev/shard in (1,3,20)"
    assert shards.selector(set()) == ""
    assert shards.UNLABELLED_SELECTOR.startswith("asyncjobs.dev/shard notin (0,1,2,")
    assert shards.UNLABELLED_SELECTOR.endswith(",255)")


def test_a_built_asyncjob_carries_its_shard_label() -> None:
    ref = describe("job-1", "request", b"{}", "application/json")
    spec = JobSpec(
        "job-1", RequestType.CHAT_COMPLETION, "local/echo", (), 60, ref, datetime.now(UTC)
    )
    obj = jobs.build_asyncjob(spec)
    assert obj["metadata"]["labels"][shards.LABEL] == str(shards.shard_of("job-1"))
