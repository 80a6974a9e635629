"""What a poll answers when a completed job's stored result cannot be read back.

A Completed job whose result Secret is missing, or holds bytes that do not match the
size and SHA-256 of its `resultRef`, can never answer its result. Rather than answer 500
on every poll until it expires, the job becomes a failed job (spec §3: HTTP 200, status
`failed`, a BifrostError), and the AsyncJob records it (phase Failed, reason
ResultUnreadable) so every replica, the operator and `kubectl` agree.

`judge` decides from the object as the apiserver returned it and the time; it does no
I/O, so the store only carries the decision out and the rules are tested by tables.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asyncjobs.core import lifecycle
from asyncjobs.core.conditions import Reason
from asyncjobs.core.jobs import JobView, Phase
from asyncjobs.core.kube import KubeObject

REASON = Reason.RESULT_UNREADABLE


class Cause(enum.StrEnum):
    """Why the result could not be read; also the metric's `reason` label."""

    MISSING = "missing"
    CORRUPT = "corrupt"


# What the client reads in the failed job's BifrostError, and the Event's message.
MESSAGES = {
    Cause.MISSING: "the job's stored result is missing",
    Cause.CORRUPT: "the job's stored result does not match its size and checksum",
}


@dataclass(frozen=True)
class Gone:
    """The job is deleted, being deleted or expired: the poll answers 404 as before."""


@dataclass(frozen=True)
class Changed:
    """The job is no longer the one that was read (another writer got there first, or
    its result reference moved): answer from this state, reading its result again."""

    view: JobView


@dataclass(frozen=True)
class Fail:
    """Fail the job: `patch` goes to the status subresource, preconditioned on the
    version judged; `view` is the job as that patch leaves it."""

    view: JobView
    patch: KubeObject
    message: str


Judgment = Gone | Changed | Fail


def judge(obj: KubeObject, read: JobView, cause: Cause, now: datetime) -> Judgment:
    """The judgment on `obj` (the job as it is now) after reading the result that the
    view `read` referenced failed for `cause`."""
    metadata = obj.get("metadata") or {}
    if metadata.get("deletionTimestamp") or (read.uid and metadata.get("uid") != read.uid):
        return Gone()
    try:
        current = JobView.from_object(obj)
        job = lifecycle.Job.from_object(obj, lifecycle.Policy())
    except (KeyError, ValueError, TypeError):
        return Gone()  # a mangled object polls as unknown, as the cache treats it
    if current.expired(now):
        return Gone()
    if current.phase is not Phase.COMPLETED or current.result_ref != read.result_ref:
        return Changed(current)
    message = MESSAGES[cause]
    step = lifecycle.result_unreadable(job, now, message)
    patch: KubeObject = {"status": step.status}
    if metadata.get("resourceVersion"):
        patch["metadata"] = {"resourceVersion": metadata["resourceVersion"]}
    failed = {**obj, "status": merge_patched(obj.get("status") or {}, step.status)}
    return Fail(JobView.from_object(failed), patch, message)


def merge_patched(target: Any, patch: Any) -> Any:
    """`target` with a JSON merge patch applied (RFC 7386): what the apiserver stores."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patched(result.get(key), value)
    return result
