"""Standard Kubernetes conditions on an AsyncJob, and the stable reasons they carry.

Kept apart from the state machine so its rules stay visible: a condition's
`lastTransitionTime` moves only when its status flips (a new reason or message on the
same status keeps the old time), and reasons are CamelCase constants that dashboards and
alerts may match on, so they never change spelling.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any, cast

from asyncjobs.core.model import Condition


class ConditionType(enum.StrEnum):
    PROCESSING = "Processing"
    COMPLETE = "Complete"
    FAILED = "Failed"


class Reason(enum.StrEnum):
    CLAIMED = "Claimed"
    RESUMED = "ResumedAfterRestart"
    RETRYING = "Retrying"
    FALLING_BACK = "FallingBack"
    SUCCEEDED = "Succeeded"
    PROVIDER_ERROR = "ProviderError"
    BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    REQUEST_NOT_FOUND = "RequestNotFound"
    REQUEST_INVALID = "RequestInvalid"
    PROVIDER_NOT_CONFIGURED = "ProviderNotConfigured"
    RESULT_UNREADABLE = "ResultUnreadable"
    INTERRUPTION_LIMIT_EXCEEDED = "InterruptionLimitExceeded"
    REQUEST_NOT_OWNED = "RequestNotOwned"
    # The provider refused calls (429, or cooling down after failures) until after the
    # job's deadline: the job fails at once rather than wait for a 504.
    PROVIDER_OVERLOADED = "ProviderOverloaded"
    # Cancelled through the API or `kubectl annotate` (core/cancel.py).
    CANCELLED = "Cancelled"


def set_condition(
    conditions: Iterable[Mapping[str, Any]],
    type_: ConditionType,
    status: bool,
    reason: Reason,
    message: str,
    now: str,
    generation: int | None,
) -> list[Condition]:
    """The conditions with one of them set; the others are kept as they are."""
    wanted = "True" if status else "False"
    result: list[Condition] = []
    found = False
    for condition in conditions:
        if condition.get("type") != type_.value:
            result.append(cast(Condition, dict(condition)))
            continue
        found = True
        flipped = condition.get("status") != wanted
        since = now if flipped else condition.get("lastTransitionTime", now)
        result.append(_condition(type_, wanted, reason, message, since, generation))
    if not found:
        result.append(_condition(type_, wanted, reason, message, now, generation))
    return result


def _condition(
    type_: ConditionType,
    status: str,
    reason: Reason,
    message: str,
    since: str,
    generation: int | None,
) -> Condition:
    condition = Condition(
        type=type_.value,
        status=status,
        reason=reason.value,
        message=message,
        lastTransitionTime=since,
    )
    if generation is not None:
        condition["observedGeneration"] = generation
    return condition
