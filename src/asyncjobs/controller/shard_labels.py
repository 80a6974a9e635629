"""Gives AsyncJobs created without a shard label (kubectl, another tool) their label.

Each replica watches only its own shards' jobs by label (main.py), so a job without a
valid `asyncjobs.dev/shard` would be seen by no one. Every few seconds each replica
lists such jobs (one LIST with a `notin` selector, served from the apiserver's watch
cache, normally empty) and labels those whose hashed shard it owns; the label appears
in that replica's watch as a new job. The label's value depends only on the job's name,
so two replicas that disagree for a moment write the same value.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from asyncjobs.controller.members import Ownership
from asyncjobs.controller.metrics import Metrics
from asyncjobs.core import resources, shards
from asyncjobs.core.kube import KubeClient, KubeError

log = logging.getLogger(__name__)

LABEL_EVERY_SECONDS = 2.0


def to_label(names: list[str], ownership: Ownership) -> dict[str, str]:
    """Name -> shard label value of the unlabelled jobs this replica labels."""
    wanted = {}
    for name in names:
        shard = shards.shard_of(name)
        if ownership.owns(shard):
            wanted[name] = str(shard)
    return wanted


class ShardLabeller:
    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        ownership: Callable[[], Ownership],
        metrics: Metrics,
        interval: float = LABEL_EVERY_SECONDS,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.ownership = ownership
        self.metrics = metrics
        self.interval = interval

    async def run(self) -> None:
        while True:
            try:
                await self.label_once()
            except KubeError as error:
                log.warning("cannot look for AsyncJobs without a shard label: %s", error)
            await asyncio.sleep(self.interval)

    async def label_once(self) -> int:
        """Labels this replica's unlabelled jobs; how many it labelled."""
        listed = await self.client.list(
            resources.asyncjobs_path(self.namespace),
            labelSelector=shards.UNLABELLED_SELECTOR,
            resourceVersion="0",  # the watch cache: no etcd read for a (normally) empty list
        )
        names = [item["metadata"]["name"] for item in listed.get("items", [])]
        labelled = 0
        for name, value in to_label(names, self.ownership()).items():
            patch = {"metadata": {"labels": {shards.LABEL: value}}}
            self.metrics.apiserver_writes.labels("PATCH", "asyncjobs").inc()
            try:
                await self.client.merge_patch(resources.asyncjobs_path(self.namespace, name), patch)
            except KubeError as error:
                if error.status != 404:
                    log.warning("cannot label job %s with its shard: %s", name, error.status)
                continue
            labelled += 1
            log.info("job %s had no shard label; labelled shard %s", name, value)
        return labelled
