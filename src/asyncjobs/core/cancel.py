"""Cancelling a job: how it is asked for, and how a cancelled job reads.

A cancel is asked for with an annotation on the AsyncJob, which the API's cancel route
sets and anyone may set with `kubectl annotate`. An annotation rather than a spec field:
the spec stays immutable (one CEL rule, no exception for one field), the request needs
no schema change, and setting it twice is harmless. The operator that owns the job sees
the change on its watch and ends the job at once (core/lifecycle.py `cancelled`).

A cancelled job is `failed` to a client that knows Bifrost's four statuses: status code
499 (a request withdrawn by its client: nginx's "client closed request", and the HTTP
code Google's APIs give gRPC's CANCELLED), so no client retries it as a server failure
(5xx) or reads it as a conflict (409); its error's type is `cancelled`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ANNOTATION = "asyncjobs.dev/cancel-requested"
STATUS_CODE = 499
ERROR_TYPE = "cancelled"
MESSAGE = "the job was cancelled"


def requested(metadata: Mapping[str, Any]) -> bool:
    """Whether the object's metadata asks for a cancel (the annotation set to "true")."""
    annotations = metadata.get("annotations") or {}
    return str(annotations.get(ANNOTATION, "")).strip().lower() == "true"


def request_patch() -> dict[str, Any]:
    """The merge patch that asks for a cancel."""
    return {"metadata": {"annotations": {ANNOTATION: "true"}}}


def is_cancelled(status_code: int | None, error: Mapping[str, Any] | None) -> bool:
    """Whether a failed job's status code and error say it was cancelled (the gateway's
    own error, so a provider's answer cannot pass for one)."""
    if status_code != STATUS_CODE or not error or error.get("is_bifrost_error") is not True:
        return False
    inner = error.get("error")
    return isinstance(inner, Mapping) and inner.get("type") == ERROR_TYPE
