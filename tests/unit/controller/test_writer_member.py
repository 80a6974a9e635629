"""The status writer of a sharded operator: every patch names this process, and a claim
for a job whose shard moved away is never sent."""

from __future__ import annotations

import time
from typing import Any

import pytest

from asyncjobs.controller.health import WatchHealth
from asyncjobs.controller.metrics import Metrics
from asyncjobs.controller.writer import JobWriter, NotOwned, slim


class Patches:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def merge_patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.sent.append(body)
        return {"metadata": {"name": "j1", "resourceVersion": "2"}, **body}


def writer(client: Patches, owned: bool) -> JobWriter:
    return JobWriter(
        client,  # type: ignore[arg-type]
        "ns",
        Metrics(),
        WatchHealth(time.monotonic),
        time.time,
        member="op-a/1f2e",
        may_claim=lambda _: owned,
    )


async def test_every_status_patch_names_this_process() -> None:
    client = Patches()
    await writer(client, owned=True).patch_status("j1", {"phase": "Processing"}, "1")
    await writer(client, owned=True).patch_status("j1", {"phase": "Completed"})
    assert [p["status"]["operator"] for p in client.sent] == ["op-a/1f2e"] * 2
    assert client.sent[0]["metadata"] == {"resourceVersion": "1"}


async def test_a_claim_of_a_job_no_longer_owned_is_not_sent() -> None:
    client = Patches()
    with pytest.raises(NotOwned):
        await writer(client, owned=False).patch_status("j1", {"phase": "Processing"}, "1")
    assert client.sent == []
    # Unconditional writes (a running job's retries and end) still go out.
    await writer(client, owned=False).patch_status("j1", {"phase": "Completed"})
    assert len(client.sent) == 1


async def test_patched_jobs_come_back_without_managed_fields() -> None:
    class WithManagedFields(Patches):
        async def merge_patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
            answer = await super().merge_patch(path, body)
            answer["metadata"]["managedFields"] = [{"manager": "asyncjobs-operator"}]
            return answer

    updated = await writer(WithManagedFields(), owned=True).patch_status("j1", {"phase": "Done"})
    assert updated is not None
    assert updated["metadata"] == {"name": "j1", "resourceVersion": "2"}


def test_slim_leaves_the_given_object_alone() -> None:
    given: Any = {"metadata": {"name": "j1", "managedFields": [{}]}, "spec": {}}
    slimmed = slim(given)
    assert slimmed == {"metadata": {"name": "j1"}, "spec": {}}
    assert given["metadata"]["managedFields"] == [{}], "the watch's object is not changed"
    assert slim(slimmed) is slimmed
