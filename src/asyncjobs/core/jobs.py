"""The AsyncJob resource as the rest of the code sees it: how one is built on submit
and the few fields a poll needs, read from the object the apiserver returns.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from asyncjobs.core import resources, shards
from asyncjobs.core.model import (
    AsyncJob,
    AsyncJobSpec,
    ObjectMeta,
    as_asyncjob,
    phase_of,
    status_of,
    submitted_text,
)
from asyncjobs.core.payloads import PayloadRef
from asyncjobs.core.request_types import RequestType


class Phase(enum.StrEnum):
    """The job's phase (status.phase; model.DEFAULT_PHASE when there is none yet)."""

    PENDING = "Pending"
    PROCESSING = "Processing"
    COMPLETED = "Completed"
    FAILED = "Failed"

    @property
    def terminal(self) -> bool:
        return self in (Phase.COMPLETED, Phase.FAILED)

    @property
    def api_status(self) -> str:
        """The job status as the Bifrost API spells it."""
        return self.value.lower()


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds, as Bifrost prints created_at."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}Z"
    )


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class JobSpec:
    """What the API decided on submit."""

    job_id: str
    request_type: RequestType
    model: str
    fallbacks: tuple[str, ...]
    result_ttl_seconds: int
    request_ref: PayloadRef
    submitted_at: datetime
    # The uid of the completion-webhook endpoint the submit named (x-bf-async-webhook).
    webhook_id: str | None = None
    virtual_key_id: str | None = None
    # The virtual key's fair-share weight and the submit's priority (core/fair_share.py);
    # None when the key sets no weight / the submit asked for no priority.
    key_weight: int | None = None
    priority: int | None = None
    # The submit's request id (api/request_ids.py), answered by every poll of the job.
    request_id: str | None = None
    # Named from an Idempotency-Key (api/idempotency.py): the name may be another
    # attempt's, so a failed create never deletes the job of that name.
    idempotent: bool = False


def build_asyncjob(spec: JobSpec) -> AsyncJob:
    body = AsyncJobSpec(
        requestType=spec.request_type.value,
        model=spec.model,
        resultTTLSeconds=spec.result_ttl_seconds,
        submittedAt=format_time(spec.submitted_at),
        requestRef=spec.request_ref.to_dict(),
    )
    if spec.fallbacks:
        body["fallbacks"] = list(spec.fallbacks)
    if spec.webhook_id:
        body["webhookId"] = spec.webhook_id
    if spec.virtual_key_id:
        body["virtualKeyId"] = spec.virtual_key_id
    if spec.key_weight is not None:
        body["keyWeight"] = spec.key_weight
    if spec.priority is not None:
        body["priority"] = spec.priority
    if spec.request_id:
        body["requestId"] = spec.request_id
    return AsyncJob(
        apiVersion=resources.API_VERSION,
        kind=resources.KIND,
        metadata=ObjectMeta(
            name=spec.job_id,
            labels={
                resources.LABEL_MANAGED_BY: resources.MANAGED_BY,
                # Which operator replica runs it: each one watches its own shards only.
                shards.LABEL: str(shards.shard_of(spec.job_id)),
            },
        ),
        spec=body,
    )


@dataclass(frozen=True)
class JobView:
    """The facts a poll answers from; small enough to cache for every job."""

    job_id: str
    uid: str
    request_type: str
    phase: Phase
    created_at: str
    virtual_key_id: str | None
    completed_at: str | None = None
    expires_at: datetime | None = None
    status_code: int | None = None
    error: dict[str, Any] | None = None
    result_ref: PayloadRef | None = None
    resource_version: str = ""
    # Bytes of its request and result bodies, counted against the store's quota.
    stored_bytes: int = 0
    # The submit's request id; None for a job created before jobs recorded one.
    request_id: str | None = None
    model: str = ""
    # SHA-256 of the stored request: an idempotent submit's replay is compared by it.
    request_sha256: str = ""
    # Tokens the provider reported (status.usage, written by the operator with the
    # terminal status) and the provider that answered: a key's token budget counts them.
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # What the budget counts: the reported total, or prompt + completion when larger.
    total_tokens: int = 0
    provider: str = ""

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> JobView:
        """The view of an AsyncJob; raises KeyError, ValueError or TypeError for a
        mangled object."""
        job = as_asyncjob(obj)
        metadata = job["metadata"]
        spec = job.get("spec")
        status = status_of(job)
        expires = status.get("expiresAt")
        stored_result = status.get("resultRef")
        result_ref = PayloadRef.from_dict(stored_result) if stored_result else None
        request_ref = spec.get("requestRef") if spec else None
        request_size = int(request_ref["size"]) if request_ref else 0
        completed = status.get("completionTime")
        usage = status.get("usage") or {}
        return cls(
            job_id=metadata["name"],
            uid=metadata.get("uid", ""),
            request_type=spec.get("requestType", "") if spec else "",
            phase=Phase(phase_of(job)),
            created_at=_seconds_to_millis(submitted_text(job)),
            virtual_key_id=spec.get("virtualKeyId") if spec else None,
            completed_at=_seconds_to_millis(completed) if completed else None,
            expires_at=parse_time(expires) if expires else None,
            status_code=status.get("statusCode"),
            error=status.get("error"),
            result_ref=result_ref,
            resource_version=metadata.get("resourceVersion", ""),
            stored_bytes=request_size + (result_ref.size if result_ref else 0),
            request_id=spec.get("requestId") if spec else None,
            model=spec.get("model", "") if spec else "",
            request_sha256=str(request_ref.get("sha256", "")) if request_ref else "",
            prompt_tokens=_count(usage.get("promptTokens")),
            completion_tokens=_count(usage.get("completionTokens")),
            total_tokens=max(
                _count(usage.get("totalTokens")),
                _count(usage.get("promptTokens")) + _count(usage.get("completionTokens")),
            ),
            provider=str(status.get("provider", "")),
        )

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at


def _count(value: object) -> int:
    """A token count from the status; anything but a non-negative int counts 0."""
    return value if isinstance(value, int) and value > 0 else 0


def _seconds_to_millis(text: str) -> str:
    """Re-prints a timestamp in the API's form: UTC, milliseconds, `Z`.

    The API writes submittedAt that way itself, but an AsyncJob applied with kubectl may
    carry whole seconds or an offset; a poll answers the contract's form all the same.
    """
    return format_time(parse_time(text)) if text else ""
