"""What an AsyncJob's status may say of a provider's error: its status, type, code,
param and where it came from, never its message (which can quote the prompt)."""

from __future__ import annotations

import json

from asyncjobs.core import error_summary

PROMPT = "my card number is 4111 1111 1111 1111"
PROVIDER_ERROR = {
    "is_bifrost_error": False,
    "status_code": 400,
    "error": {
        "type": "invalid_request_error",
        "code": "context_length_exceeded",
        "message": f"This model's maximum context length is 8 tokens; your prompt: {PROMPT}",
        "param": "messages",
    },
    "extra_fields": {"provider": "openai", "model_requested": "gpt-4o", "request_type": "chat"},
}


def test_the_summary_keeps_every_field_but_the_message() -> None:
    summary = error_summary.summary(PROVIDER_ERROR)
    assert PROMPT not in json.dumps(summary)
    assert summary == {
        **PROVIDER_ERROR,
        "error": {
            "type": "invalid_request_error",
            "code": "context_length_exceeded",
            "message": "openai answered 400 (invalid_request_error); the provider's message "
            "is returned only to the client that submitted the job",
            "param": "messages",
        },
    }
    assert PROMPT in PROVIDER_ERROR["error"]["message"]  # type: ignore[index]


def test_a_summary_without_type_or_status_still_reads() -> None:
    bare = {"is_bifrost_error": False, "error": {"message": PROMPT}, "extra_fields": {}}
    assert error_summary.summary(bare)["error"]["message"] == (
        "the provider answered without a status; the provider's message is returned only "
        "to the client that submitted the job"
    )


def test_only_provider_errors_are_summarised() -> None:
    gateway = {"is_bifrost_error": True, "error": {"message": "the job did not finish"}}
    assert error_summary.is_provider_error(PROVIDER_ERROR)
    assert not error_summary.is_provider_error(gateway)
    assert not error_summary.is_provider_error(None)


def test_the_stored_body_is_the_whole_error() -> None:
    assert json.loads(error_summary.stored_body(PROVIDER_ERROR)) == PROVIDER_ERROR
