"""What an AsyncJob's status may say about a provider's error.

A provider's error message can quote the request: a prompt too long for the model, a
field that failed moderation, a filename. The AsyncJob is readable by anyone with the
`view` role on the jobs namespace, so its status keeps a summary instead: the provider's
status, error type, code and param, which tell what went wrong without quoting anything.
The whole error is stored with the job's bodies (the payload store, kind "error") and
reaches only the client that submitted the job, through the API, as Bifrost returns it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeGuard

# The payload kind of a stored provider error: `<job>-error-<call>` (never "result", so a
# resumed job can never take it for a stored answer).
ERROR_KIND = "error"
CONTENT_TYPE = "application/json"


def is_provider_error(error: Mapping[str, Any] | None) -> TypeGuard[Mapping[str, Any]]:
    """Errors a provider wrote (BifrostError with is_bifrost_error false); the gateway's
    own messages (deadline, overload, bad configuration) quote nothing of the request."""
    return error is not None and error.get("is_bifrost_error") is False


def summary(error: Mapping[str, Any]) -> dict[str, Any]:
    """The error with its message replaced by one built from its non-content fields."""
    inner = dict(error.get("error") or {})
    extra = error.get("extra_fields") or {}
    provider = extra.get("provider") or "the provider"
    said = f"{provider} answered {error.get('status_code') or 'without a status'}"
    kind = inner.get("type") or inner.get("code")
    if kind:
        said += f" ({kind})"
    inner["message"] = (
        f"{said}; the provider's message is returned only to the client that submitted the job"
    )
    return {**error, "error": inner}


def stored_body(error: Mapping[str, Any]) -> bytes:
    return json.dumps(error, separators=(",", ":"), ensure_ascii=False).encode()
