"""The AsyncJob resource, typed: the one shape of a job that every part shares.

An AsyncJob arrives from the apiserver as JSON, and the API, the operator, the
lifecycle and the tests all read it. These TypedDicts describe that JSON exactly as the
CRD does (charts/asyncjobs/templates/crd-asyncjobs.yaml), so mypy checks every key
that is read or written, while reading a field stays a plain dict lookup: nothing is
converted on the poll path. The few rules that interpret fields (the default phase,
which time counts as submitted) live here once.

`as_asyncjob` is the one place where an untyped object from the apiserver becomes an
AsyncJob; `StatusPatch` is the status as a merge patch, where None removes a field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Required, TypedDict, cast


class PayloadRefFields(TypedDict, total=False):
    """Where a body lives: its Secrets (`secretName`, chunked) or its object
    (`objectKey`), exactly one of the two; its size, SHA-256 and media type."""

    secretName: str
    objectKey: str
    chunks: Required[int]
    size: Required[int]
    sha256: Required[str]
    contentType: Required[str]


class Condition(TypedDict, total=False):
    type: Required[str]
    status: Required[str]
    reason: str
    message: str
    lastTransitionTime: str
    observedGeneration: int


class Usage(TypedDict, total=False):
    promptTokens: int
    completionTokens: int
    totalTokens: int


class AsyncJobSpec(TypedDict, total=False):
    requestType: Required[str]
    model: Required[str]
    fallbacks: list[str]
    resultTTLSeconds: int
    submittedAt: str
    requestRef: Required[PayloadRefFields]
    webhookId: str  # the uid of the AsyncJobWebhook to notify when the job finishes
    virtualKeyId: str
    keyWeight: int  # the virtual key's fair-share weight when the job was submitted
    priority: int  # the submit's priority within its key (core/fair_share.py)
    requestId: str
    activeDeadlineSeconds: int
    backoffLimit: int


class WebhookStatus(TypedDict, total=False):
    """The job's completion notification (docs/webhooks.md): written pending with the
    terminal status itself, so no crash between finishing and notifying can lose it."""

    pending: Required[bool]
    deliveryId: Required[str]  # the webhook-id, the same on every attempt
    attempts: Required[int]
    nextAttemptTime: str
    deliveredTime: str
    outcome: str  # delivered, failed, skipped (the endpoint is gone or not subscribed)
    records: list[dict[str, Any]]  # the latest attempts: time, statusCode, latencyMs, error


class _StatusFields(TypedDict, total=False):
    """The status fields a merge patch never removes."""

    phase: str
    conditions: list[Condition]
    attempts: int
    attemptsOnModel: int
    interruptions: int
    repeatedCalls: int
    startTime: str
    completionTime: str
    expiresAt: str
    duration: str
    statusCode: int
    provider: str
    modelUsed: str
    operator: str  # the member Lease holder that made the latest attempt
    observedGeneration: int


class AsyncJobStatus(_StatusFields, total=False):
    resultRef: PayloadRefFields
    error: dict[str, Any]  # a BifrostError (core/errors.py)
    usage: Usage
    webhook: WebhookStatus


class StatusPatch(_StatusFields, total=False):
    """A merge patch of the status: the keys it sets; None deletes a key."""

    resultRef: PayloadRefFields | None
    error: dict[str, Any] | None
    usage: Usage | None
    webhook: WebhookStatus | None


class ObjectMeta(TypedDict, total=False):
    name: Required[str]
    namespace: str
    uid: str
    resourceVersion: str
    generation: int
    creationTimestamp: str
    deletionTimestamp: str
    labels: dict[str, str]
    annotations: dict[str, str]
    ownerReferences: list[dict[str, Any]]


class AsyncJob(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: Required[ObjectMeta]
    spec: AsyncJobSpec
    status: AsyncJobStatus


# The phase of a job with no status yet (the apiserver never sets one on create).
DEFAULT_PHASE = "Pending"


def as_asyncjob(obj: Mapping[str, Any]) -> AsyncJob:
    """An object the apiserver returned for the AsyncJob resource, as an AsyncJob.

    Not a validation: the CRD's structural schema has validated it already, and a
    field another writer mangled fails where it is read, as it would anyway."""
    return cast(AsyncJob, obj)


def status_of(job: AsyncJob) -> AsyncJobStatus:
    return job.get("status") or {}


def phase_of(job: AsyncJob) -> str:
    return status_of(job).get("phase") or DEFAULT_PHASE


def submitted_text(job: AsyncJob) -> str:
    """When the client submitted the job: the API's submittedAt, or for an AsyncJob
    applied with kubectl, its creation time."""
    spec = job.get("spec")
    submitted = spec.get("submittedAt") if spec else None
    return submitted or job["metadata"].get("creationTimestamp", "")
