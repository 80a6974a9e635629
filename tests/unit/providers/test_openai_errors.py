"""Failures of an OpenAI-compatible server map to ProviderError rows the policy can act on."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from asyncjobs.core.providers.base import ProviderError
from asyncjobs.core.providers.keys import ApiKey
from asyncjobs.core.providers.openai_compat import OpenAICompatProvider
from asyncjobs.core.providers.openai_errors import error_from_response, parse_retry_after
from asyncjobs.core.request_types import RequestType
from tests.fakes.openai_server import FakeOpenAIServer
from tests.support.procs import free_port

from .conftest import GOOD_KEY
from .samples import sample_request

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
IN_30_SECONDS = format_datetime(NOW + timedelta(seconds=30), usegmt=True)


class FirstKeyFirst(random.Random):
    """Makes key_order keep the configured order (earlier keys draw higher)."""

    def __init__(self) -> None:
        super().__init__()
        self._next = 1.0

    def random(self) -> float:
        self._next /= 2
        return self._next


def provider_for(
    fake: FakeOpenAIServer, *keys: str, timeout_seconds: float = 10
) -> OpenAICompatProvider:
    return OpenAICompatProvider(
        "openai",
        base_url=fake.base_url,
        keys=[ApiKey(key) for key in keys],
        timeout_seconds=timeout_seconds,
        rng=FirstKeyFirst(),
        clock=lambda: NOW,
    )


async def failure_of(provider: OpenAICompatProvider) -> ProviderError:
    try:
        with pytest.raises(ProviderError) as caught:
            await provider.call(sample_request(RequestType.CHAT_COMPLETION))
    finally:
        await provider.close()
    return caught.value


# step scripted on the fake -> (status_code, retryable, retry_after, type, code, param, message)
SCRIPTED_FAILURES: list[tuple[str, dict[str, Any], tuple[Any, ...]]] = [
    (
        "400 keeps type, code, param and message",
        {"status": 400, "type": "invalid_request_error", "code": "invalid_value",
         "param": "messages[0].role", "message": "Invalid value: 'robot'."},
        (400, False, None, "invalid_request_error", "invalid_value", "messages[0].role",
         "Invalid value: 'robot'."),
    ),
    (
        "404 unknown model fails at once",
        {"status": 404},
        (404, False, None, "invalid_request_error", "model_not_found", None,
         "The model does not exist."),
    ),
    (
        "429 with Retry-After in seconds",
        {"status": 429, "retry_after": "7"},
        (429, True, 7.0, "requests", "rate_limit_exceeded", None,
         "Rate limit reached for requests."),
    ),
    (
        "429 with Retry-After as an HTTP date",
        {"status": 429, "retry_after": IN_30_SECONDS},
        (429, True, 30.0, "requests", "rate_limit_exceeded", None,
         "Rate limit reached for requests."),
    ),
    (
        "500 is retryable",
        {"status": 500},
        (500, True, None, "server_error", None, None,
         "The server had an error while processing your request."),
    ),
    (
        "502 with an HTML body keeps the text",
        {"status": 502, "raw_body": "<html>Bad Gateway</html>"},
        (502, True, None, None, None, None, "<html>Bad Gateway</html>"),
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("step", "expected"),
    [row[1:] for row in SCRIPTED_FAILURES],
    ids=[row[0] for row in SCRIPTED_FAILURES],
)
async def test_scripted_failure_maps_to_provider_error(
    fake: FakeOpenAIServer, step: dict[str, Any], expected: tuple[Any, ...]
) -> None:
    fake.script("gpt-test", step)
    error = await failure_of(provider_for(fake, GOOD_KEY))
    actual = (
        error.status_code,
        error.retryable,
        error.retry_after,
        error.error_type,
        error.code,
        error.param,
        error.message,
    )
    assert actual == expected


async def test_timeout_is_retryable_without_status(fake: FakeOpenAIServer) -> None:
    fake.script("gpt-test", {"hang": True})
    error = await failure_of(provider_for(fake, GOOD_KEY, timeout_seconds=0.3))
    assert (error.status_code, error.retryable) == (None, True)
    assert "did not answer within 0.3 seconds" in error.message


async def test_connection_refused_is_retryable_without_status() -> None:
    provider = OpenAICompatProvider(
        "openai", base_url=f"http://127.0.0.1:{free_port()}/v1", keys=[ApiKey("k")]
    )
    error = await failure_of(provider)
    assert (error.status_code, error.retryable) == (None, True)
    assert (error.message, error.error_type) == ("provider openai unreachable", "connection_error")


async def test_an_unreachable_provider_names_no_address_to_clients(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    internal = "vllm.ml-serving.svc.cluster.local"
    provider = OpenAICompatProvider(
        "vllm", base_url=f"http://{internal}:{port}/v1", keys=[ApiKey("k")]
    )
    error = await failure_of(provider)
    assert error.message == "provider vllm unreachable"
    assert internal not in error.message
    assert "127.0.0.1" not in error.message
    # The operator's own log keeps the detail for whoever runs it.
    assert any(internal in record.getMessage() for record in caplog.records)


async def test_rejected_key_is_skipped_for_the_next_one(fake: FakeOpenAIServer) -> None:
    provider = provider_for(fake, "sk-revoked", GOOD_KEY)
    try:
        result = await provider.call(sample_request(RequestType.CHAT_COMPLETION))
    finally:
        await provider.close()
    assert result.body["object"] == "chat.completion"
    sent = [(r["key"], r["status"]) for r in fake.stats()["requests"]]
    assert sent == [("sk-revoked", 401), (GOOD_KEY, 200)]


async def test_throttled_key_is_skipped_for_the_next_one(fake: FakeOpenAIServer) -> None:
    fake.api_keys.add("sk-second")
    fake.script("gpt-test", {"status": 429, "retry_after": "5"})
    provider = provider_for(fake, GOOD_KEY, "sk-second")
    try:
        await provider.call(sample_request(RequestType.CHAT_COMPLETION))
    finally:
        await provider.close()
    sent = [(r["key"], r["status"]) for r in fake.stats()["requests"]]
    assert sent == [(GOOD_KEY, 429), ("sk-second", 200)]


async def test_when_every_key_is_throttled_the_last_retry_after_is_kept(
    fake: FakeOpenAIServer,
) -> None:
    fake.api_keys.add("sk-second")
    fake.script(
        "gpt-test", {"status": 429, "retry_after": "5"}, {"status": 429, "retry_after": "9"}
    )
    error = await failure_of(provider_for(fake, GOOD_KEY, "sk-second"))
    assert (error.status_code, error.retryable, error.retry_after) == (429, True, 9.0)
    assert fake.stats()["count"] == 2


async def test_when_every_key_is_rejected_the_call_fails_with_401(
    fake: FakeOpenAIServer,
) -> None:
    error = await failure_of(provider_for(fake, "sk-old", "sk-older"))
    assert (error.status_code, error.retryable, error.code) == (401, False, "invalid_api_key")
    assert [r["key"] for r in fake.stats()["requests"]] == ["sk-old", "sk-older"]


async def test_other_errors_do_not_try_another_key(fake: FakeOpenAIServer) -> None:
    fake.api_keys.add("sk-second")
    fake.script("gpt-test", {"status": 500})
    error = await failure_of(provider_for(fake, GOOD_KEY, "sk-second"))
    assert error.status_code == 500
    assert fake.stats()["count"] == 1


async def test_no_key_for_the_model_fails_without_calling(fake: FakeOpenAIServer) -> None:
    provider = OpenAICompatProvider(
        "openai", base_url=fake.base_url, keys=[ApiKey(GOOD_KEY, models=("o3",))]
    )
    error = await failure_of(provider)
    assert (error.status_code, error.retryable) == (None, False)
    assert error.message == "no API key of provider openai is configured for model gpt-test"
    assert fake.stats()["count"] == 0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "12"}, 12.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after": IN_30_SECONDS}, 30.0),
        ({"retry-after": format_datetime(NOW - timedelta(seconds=5), usegmt=True)}, 0.0),
        ({"retry-after-ms": "250", "retry-after": "12"}, 0.25),
        ({"retry-after": "-3"}, None),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers, NOW) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"error": {"message": "m", "type": "t", "code": 42, "param": null}}', ("m", "t", "42")),
        (b'{"error": "flat message", "type": "t"}', ("flat message", "t", None)),
        (b'{"detail": "not found"}', ("not found", None, None)),
        (b'{"unrelated": 1}', ("provider answered HTTP 418", None, None)),
        (b"", ("provider answered HTTP 418", None, None)),
    ],
)
def test_error_bodies_of_compatible_servers(body: bytes, expected: tuple[Any, ...]) -> None:
    error = error_from_response(418, {}, body, NOW)
    assert (error.message, error.error_type, error.code) == expected
    assert error.retryable is False
