"""Delivers the completion notifications this replica owes: one task per job whose
status holds a pending `webhook` (written with its terminal phase, core/lifecycle.py).

The pending notification is the durable state: a task reads it back from the job before
every attempt and writes each attempt's record (time, status code, latency, error;
never the payload) to the job's status, with the time of the next attempt, so an
operator that stops between two attempts loses nothing: the next one to watch the job
(this replica restarted, or the one that owns its shard now) picks it up where it stood.
Delivery is at least once, with the same webhook-id on every attempt. The endpoint's
counters (delivered, failures, last delivery) are kept on the AsyncJobWebhook's status.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import random
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from asyncjobs.controller import metrics as names
from asyncjobs.controller.endpoint_status import EndpointStatus
from asyncjobs.controller.metrics import Metrics
from asyncjobs.controller.webhook_sender import Sender, Sent
from asyncjobs.core import resources, webhook_delivery, webhook_log
from asyncjobs.core.jobs import format_time, parse_time
from asyncjobs.core.kube import KubeClient, KubeError, KubeObject
from asyncjobs.core.payloads import (
    PayloadCorrupt,
    PayloadMissing,
    PayloadNotOwned,
    PayloadRef,
    PayloadStore,
    PayloadStoreError,
)
from asyncjobs.core.request_types import REQUEST_TYPES, RequestType
from asyncjobs.core.webhook_delivery import Attempt, Outcome
from asyncjobs.core.webhook_endpoints import EVENT_COMPLETED, SECRET_KEY

log = logging.getLogger(__name__)

MAX_RECORDS = 10
# After an apiserver error, the task tries again after this long.
_KUBE_RETRY_SECONDS = 5.0


def _now() -> datetime:
    return datetime.now(UTC)


def notification_data(job: Mapping[str, Any]) -> dict[str, Any]:
    """The delivery's `data`: the job's facts, never its request or result."""
    name = job["metadata"]["name"]
    spec = job.get("spec", {})
    status = job.get("status", {})
    request_type = spec.get("requestType", "")
    submit_path = REQUEST_TYPES[RequestType(request_type)].submit_path
    data: dict[str, Any] = {
        "job_id": name,
        "request_type": request_type,
        "status": str(status.get("phase", "")).lower(),
        "status_code": status.get("statusCode"),
        "created_at": spec.get("submittedAt") or job["metadata"].get("creationTimestamp"),
        "completed_at": status.get("completionTime"),
        "expires_at": status.get("expiresAt"),
        "result_url": f"{submit_path}/{name}",
        "result_expires_at": status.get("expiresAt"),
    }
    return data


def redelivery_asked(metadata: Mapping[str, Any], notification: Mapping[str, Any]) -> bool:
    """Whether the API asked for a redelivery not yet taken: the job's annotation holds
    a token its notification has not recorded, and no delivery is under way."""
    token = (metadata.get("annotations") or {}).get(webhook_log.REDELIVER_ANNOTATION)
    return bool(
        token
        and notification.get("deliveryId")
        and not notification.get("pending")
        and token != notification.get("redeliveryToken")
    )


def test_data(test_id: str, now: datetime) -> dict[str, Any]:
    """A test event's `data`: the shape of a real one, about no job (`test: true`)."""
    stamp = format_time(now)
    return {
        "job_id": test_id,
        "request_type": "chat_completion",
        "status": "completed",
        "status_code": 200,
        "created_at": stamp,
        "completed_at": stamp,
        "expires_at": None,
        "result_url": None,
        "result_expires_at": None,
        "test": True,
    }


class Deliverer:
    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        sender: Sender,
        *,
        first_retry_seconds: float = webhook_delivery.FIRST_RETRY_SECONDS,
        clock: Callable[[], datetime] = _now,
        draw: Callable[[], float] = random.random,
        metrics: Metrics | None = None,
        retention_seconds: float = webhook_log.DEFAULT_RETENTION_SECONDS,
        payloads: PayloadStore | None = None,
    ) -> None:
        self.client = client
        # Where results and stored errors are read for endpoints with include_response.
        self.payloads = payloads
        self.metrics = metrics or Metrics()
        self.endpoints = EndpointStatus(client, namespace, retention_seconds, clock)
        self.namespace = namespace
        self.sender = sender
        # Scales the contract's 30 s, 1, 2, 4 min (tests shorten it).
        self.scale = first_retry_seconds / webhook_delivery.FIRST_RETRY_SECONDS
        self.clock = clock
        self.draw = draw
        self.tasks: dict[str, asyncio.Task[None]] = {}
        # Jobs whose redelivery was asked while a task of theirs ran: the task looks once
        # more before it ends (the event that asked came while it was busy).
        self.recheck: set[str] = set()

    def observe(self, event_type: str | None, obj: Mapping[str, Any]) -> None:
        name = (obj.get("metadata") or {}).get("name", "")
        if not name:
            return
        if event_type == "DELETED":
            task = self.tasks.pop(name, None)
            if task is not None:
                task.cancel()
            return
        notification = (obj.get("status") or {}).get("webhook") or {}
        if name in self.tasks:
            if redelivery_asked(obj.get("metadata") or {}, {**notification, "pending": False}):
                self.recheck.add(name)
            return
        if notification.get("pending") or redelivery_asked(obj.get("metadata") or {}, notification):
            self.tasks[name] = asyncio.create_task(self._run(name), name=f"webhook {name}")

    async def close(self) -> None:
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks.clear()

    async def _run(self, name: str) -> None:
        try:
            while True:
                try:
                    wait = await self._attempt(name)
                except KubeError as error:
                    log.warning("webhook of job %s: apiserver %s", name, error.status)
                    wait = _KUBE_RETRY_SECONDS
                except PayloadStoreError as error:
                    log.warning("webhook of job %s: payload store: %s", name, error)
                    wait = _KUBE_RETRY_SECONDS
                if wait is None:
                    if name not in self.recheck:
                        return
                    self.recheck.discard(name)
                    continue
                await asyncio.sleep(wait)
        except Exception as error:  # one job's notification must not end the operator
            log.error("webhook of job %s: %s: %s", name, type(error).__name__, error)
        finally:
            self.tasks.pop(name, None)
            self.recheck.discard(name)

    async def _attempt(self, name: str) -> float | None:
        """One step: None when nothing more is owed, else seconds until the next."""
        try:
            job = await self.client.get(resources.asyncjobs_path(self.namespace, name))
        except KubeError as error:
            if error.status == 404:
                return None
            raise
        notification = job.get("status", {}).get("webhook") or {}
        if notification and redelivery_asked(job["metadata"], notification):
            # Asked through the API (redeliver): the same notification, pending again
            # with a fresh attempt count; the token marks the request as taken.
            notification = {
                "pending": True,
                "deliveryId": notification["deliveryId"],
                "attempts": 0,
                "records": notification.get("records", []),
                "redeliveryToken": job["metadata"]["annotations"][webhook_log.REDELIVER_ANNOTATION],
            }
            await self._write(name, {**notification, "outcome": None, "deliveredTime": None})
        if not notification.get("pending"):
            return None
        now = self.clock()
        due = notification.get("nextAttemptTime")
        if due and parse_time(due) > now:
            return (parse_time(due) - now).total_seconds()
        event = webhook_delivery.event_of(job.get("status", {}).get("phase", ""))
        endpoint = await self._endpoint(job.get("spec", {}).get("webhookId", ""))
        spec = endpoint.get("spec", {}) if endpoint else {}
        if (
            event is None
            or endpoint is None
            or spec.get("disabled")
            or event not in spec.get("events", [])
        ):
            await self._write(name, {**notification, "pending": False, "outcome": "skipped"})
            self.metrics.webhook_deliveries.labels(names.WEBHOOK_SKIPPED).inc()
            return None
        secret = await self._secret(spec["signingSecretName"])
        data = notification_data(job)
        inline: webhook_delivery.Inline | None = None
        if spec.get("includeResponse"):
            inline, expired = await self._inline(job)
            if expired:
                data["result_expired"] = True
        body = webhook_delivery.payload(event, format_time(now), data, inline=inline)
        headers = webhook_delivery.headers(
            secret,
            notification["deliveryId"],
            int(now.timestamp()),
            body,
            event,
            spec.get("headers", {}),
        )
        sent = await self.sender.send(
            endpoint["metadata"]["uid"],
            spec["url"],
            headers,
            body,
            timeout_seconds=spec.get("timeoutSeconds", 10),
            allow_private_network=bool(spec.get("allowPrivateNetwork")),
        )
        self._observe(sent)
        attempts = int(notification.get("attempts", 0)) + 1
        outcome = webhook_delivery.classify(sent.status_code)
        if outcome is Outcome.RETRY and attempts >= int(spec.get("maxAttempts", 5)):
            outcome = Outcome.FAILED
        record = Attempt(now, sent.status_code, sent.latency_ms, sent.error).to_dict()
        records = [*notification.get("records", []), record][-MAX_RECORDS:]
        written: dict[str, Any] = {
            "pending": outcome is Outcome.RETRY,
            "deliveryId": notification["deliveryId"],
            "attempts": attempts,
            "records": records,
        }
        if "redeliveryToken" in notification:
            written["redeliveryToken"] = notification["redeliveryToken"]
        wait: float | None = None
        if outcome is Outcome.RETRY:
            wait = self.scale * webhook_delivery.retry_delay(attempts, self.draw())
            written["nextAttemptTime"] = format_time(now + timedelta(seconds=wait))
        else:
            written["outcome"] = outcome.value
            if outcome is Outcome.DELIVERED:
                written["deliveredTime"] = format_time(now)
        await self._write(name, written)
        if outcome is Outcome.RETRY:
            self.metrics.webhook_retries.inc()
        else:
            self.metrics.webhook_deliveries.labels(outcome.value).inc()
            ended = webhook_log.entry(
                notification["deliveryId"], name, event, outcome.value, now, attempts, records
            )
            await self.endpoints.record(endpoint["metadata"]["name"], ended)
        return wait

    async def _inline(self, job: KubeObject) -> tuple[webhook_delivery.Inline | None, bool]:
        """What an include_response delivery carries: the stored result of a completed
        job or the error of a failed one (too large: omitted, never read), and whether
        the result is gone (its body no longer stored: `result_expired`)."""
        status = job.get("status", {})
        key = webhook_delivery.inline_key(status.get("phase", ""))
        if key is None:
            return None, False
        raw_ref = status.get("resultRef")
        if raw_ref is None or self.payloads is None:
            if key == "response":
                return (key, None), True  # no stored result to send
            error = status.get("error")
            if not error:
                return None, False
            # No stored error: the summary in the status is what a poll answers.
            return (key, json.dumps(error, separators=(",", ":")).encode()), False
        ref = PayloadRef.from_dict(raw_ref)
        if not webhook_delivery.fits_inline(ref.size):
            return (key, None), False
        try:
            stored = await self.payloads.get(ref, owner=job)
        except PayloadMissing:
            return None, True
        except (PayloadCorrupt, PayloadNotOwned):
            return (key, None), False
        return (key, stored), False

    async def send_test(self, endpoint: KubeObject, test_id: str) -> None:
        """A test event to the endpoint (one attempt, no retry), asked through the API:
        its answer goes to the endpoint's status (lastTest) and its delivery log."""
        spec = endpoint.get("spec", {})
        now = self.clock()
        secret = await self._secret(spec["signingSecretName"])
        event = (spec.get("events") or [EVENT_COMPLETED])[0]
        body = webhook_delivery.payload(event, format_time(now), test_data(test_id, now))
        headers = webhook_delivery.headers(
            secret, test_id, int(now.timestamp()), body, event, spec.get("headers", {})
        )
        sent = await self.sender.send(
            endpoint["metadata"]["uid"],
            spec["url"],
            headers,
            body,
            timeout_seconds=spec.get("timeoutSeconds", 10),
            allow_private_network=bool(spec.get("allowPrivateNetwork")),
        )
        record = Attempt(now, sent.status_code, sent.latency_ms, sent.error).to_dict()
        delivered = webhook_delivery.classify(sent.status_code) is Outcome.DELIVERED
        name = endpoint["metadata"]["name"]
        ended = webhook_log.entry(test_id, "", event, webhook_log.OUTCOME_TEST, now, 1, [record])
        await self.endpoints.record(name, ended, count=False)
        await self.endpoints.set_status(
            name, {"lastTest": {"id": test_id, "delivered": delivered, **record}}
        )

    def _observe(self, sent: Sent) -> None:
        if sent.status_code is None:
            label = names.ATTEMPT_NO_ANSWER
        elif 200 <= sent.status_code < 300:
            label = names.ATTEMPT_SUCCEEDED
        else:
            label = names.ATTEMPT_FAILED
        self.metrics.webhook_latency.labels(label).observe(sent.latency_ms / 1000)

    async def _write(self, name: str, notification: Mapping[str, Any]) -> None:
        # A merge patch: keys the new state lacks (nextAttemptTime) are removed.
        cleared = {key: None for key in ("nextAttemptTime",) if key not in notification}
        await self.client.merge_patch(
            resources.asyncjobs_path(self.namespace, name, status=True),
            {"status": {"webhook": {**cleared, **notification}}},
        )

    async def _endpoint(self, uid: str) -> KubeObject | None:
        if not uid:
            return None
        listed = await self.client.list(resources.webhooks_path(self.namespace))
        for item in listed.get("items", []):
            if item["metadata"].get("uid") == uid:
                found: KubeObject = item
                return found
        return None

    async def _secret(self, name: str) -> str:
        secret = await self.client.get(resources.secrets_path(self.namespace, name))
        return base64.b64decode(secret["data"][SECRET_KEY]).decode()
