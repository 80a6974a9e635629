"""BifrostError keeps the contract's key order and omits empty keys (spec §4)."""

from __future__ import annotations

import json

from asyncjobs.core.errors import BifrostError, ExtraFields


def test_gateway_error_has_the_minimal_shape() -> None:
    error = BifrostError(message="job not found or expired", status_code=404).to_dict()
    assert json.dumps(error) == (
        '{"is_bifrost_error": false, "status_code": 404, '
        '"error": {"message": "job not found or expired"}, "extra_fields": {}}'
    )


def test_provider_error_keeps_every_field_in_contract_order() -> None:
    error = BifrostError(
        message="Rate limit reached",
        status_code=429,
        type="requests",
        code="rate_limit",
        param="model",
        extra_fields=ExtraFields("openai", "gpt-4o", "chat_completion"),
    ).to_dict()
    assert list(error) == ["is_bifrost_error", "status_code", "error", "extra_fields"]
    assert list(error["error"]) == ["type", "code", "message", "param"]
    assert error["extra_fields"] == {
        "provider": "openai",
        "model_requested": "gpt-4o",
        "request_type": "chat_completion",
    }


def test_empty_message_is_still_present() -> None:
    assert BifrostError(message="").to_dict()["error"] == {"message": ""}
