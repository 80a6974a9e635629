"""An apiserver's Secrets in memory, answered as the real client reads them, and a job
store whose results come from them: for measuring the memory a large result's poll
costs without a cluster (bench/poll_memory_bench.py, tests/unit/api)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from asyncjobs.api.clock import Clock
from asyncjobs.api.store import Finished
from asyncjobs.core.jobs import JobView
from asyncjobs.core.kube import KubeError, KubeObject
from asyncjobs.core.secret_payloads import SecretPayloads
from tests.unit.api.fakes import FakeJobStore


class SecretsAsJson:
    """Every object kept as its JSON text and parsed on each GET, as the real client
    parses an answer (bytes → str → objects)."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    async def create(self, path: str, body: Mapping[str, Any]) -> KubeObject:
        name = body["metadata"]["name"]
        if f"{path}/{name}" in self.objects:
            raise KubeError(409, "AlreadyExists", name)
        self.objects[f"{path}/{name}"] = json.dumps(body).encode()
        return dict(body)

    async def get(self, path: str) -> KubeObject:
        raw = self.objects.get(path)
        if raw is None:
            raise KubeError(404, "NotFound", path)
        parsed: KubeObject = json.loads(raw.decode())
        return parsed


class SecretBackedStore(FakeJobStore):
    """The fake job store, with results read from chunk Secrets like the real one."""

    def __init__(self, payloads: SecretPayloads, clock: Clock) -> None:
        super().__init__(clock)
        self.payloads = payloads

    async def result(self, view: JobView) -> Finished | None:
        assert view.result_ref is not None
        return Finished(view, await self.payloads.get(view.result_ref))

    async def complete_large(self, job_id: str, body: bytes) -> None:
        """Stores `body` as the job's result, as the operator does, and completes it."""
        ref = await self.payloads.put(
            self.objects[job_id], "result", body, "application/json", call=1
        )
        self.set_status(
            job_id,
            phase="Completed",
            statusCode=200,
            completionTime="2026-02-19T08:10:20.000Z",
            expiresAt="2026-02-19T09:10:20.000Z",
            resultRef=ref.to_dict(),
        )
