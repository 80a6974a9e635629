"""BifrostError: the one error shape of the API, for gateway and provider errors alike.

Key order and omission rules follow the contract (spec §4): optional keys are left out
when empty, never sent as null, and `extra_fields` is always present. The contract's
`event_id` identifies an event of a stream; async endpoints never stream, so it is
never sent and has no field here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ExtraFields:
    provider: str | None = None
    model_requested: str | None = None
    request_type: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _without_empty(
            {
                "provider": self.provider,
                "model_requested": self.model_requested,
                "request_type": self.request_type,
            }
        )


@dataclass(frozen=True)
class BifrostError:
    message: str
    status_code: int | None = None
    is_bifrost_error: bool = False
    type: str | None = None
    code: str | None = None
    param: str | None = None
    extra_fields: ExtraFields = ExtraFields()
    # The outer `type` (Bifrost's BifrostError.Type, e.g. virtual_key_required): what
    # kind of gateway refusal this is; `type` above is the inner error.type.
    outer_type: str | None = None

    def to_dict(self) -> dict[str, Any]:
        error = _without_empty(
            {
                "type": self.type,
                "code": self.code,
                "message": self.message,
                "param": self.param,
            }
        )
        error["message"] = self.message  # required even when empty
        outer: dict[str, Any] = {}
        if self.outer_type:
            outer["type"] = self.outer_type
        outer["is_bifrost_error"] = self.is_bifrost_error
        if self.status_code is not None:
            outer["status_code"] = self.status_code
        outer["error"] = _in_order(error, ("type", "code", "message", "param"))
        outer["extra_fields"] = self.extra_fields.to_dict()
        return outer


def _without_empty(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value not in (None, "")}


def _in_order(values: dict[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
    return {key: values[key] for key in order if key in values}
