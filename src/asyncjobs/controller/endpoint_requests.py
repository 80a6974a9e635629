"""Looks after the endpoints (AsyncJobWebhook) themselves: test events the API asked
for, and the delivery log's retention.

The API never signs or sends (it cannot read signing secrets): `POST /api/webhooks/{id}/
test` sets a test annotation on the endpoint and waits for `status.lastTest` to answer
it. Endpoints are few and change rarely, so rather than a watch of its own each replica
lists them every few seconds; the one whose shards include the endpoint's name acts, so
one test is sent once however many replicas run. The same pass drops log entries past
the retention (core/webhook_log.py), so an endpoint no delivery writes to is kept tidy
too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from asyncjobs.controller.deliverer import Deliverer
from asyncjobs.controller.members import Ownership
from asyncjobs.core import resources, shards, webhook_log
from asyncjobs.core.kube import KubeError, KubeObject

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0


def test_asked(webhook: KubeObject) -> str | None:
    """The id of a test asked for and not yet answered, if any."""
    token = (webhook["metadata"].get("annotations") or {}).get(webhook_log.TEST_ANNOTATION)
    answered = (webhook.get("status", {}).get("lastTest") or {}).get("id")
    return str(token) if token and token != answered else None


class EndpointRequests:
    def __init__(
        self,
        deliverer: Deliverer,
        ownership: Callable[[], Ownership],
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.deliverer = deliverer
        self.ownership = ownership
        self.poll_seconds = poll_seconds

    async def run(self) -> None:
        while True:
            try:
                await self.pass_once()
            except (KubeError, OSError) as error:
                log.warning("webhook endpoints: %s", error)
            except Exception as error:  # a bug here must not end the operator
                log.error("webhook endpoints: %s: %s", type(error).__name__, error)
            await asyncio.sleep(self.poll_seconds)

    async def pass_once(self) -> None:
        client = self.deliverer.client
        listed = await client.list(resources.webhooks_path(self.deliverer.namespace))
        ownership = self.ownership()
        for webhook in listed.get("items", []):
            if not ownership.owns(shards.shard_of(webhook["metadata"]["name"])):
                continue
            test_id = test_asked(webhook)
            if test_id is not None:
                await self.deliverer.send_test(webhook, test_id)
            await self.deliverer.endpoints.sweep(webhook)
