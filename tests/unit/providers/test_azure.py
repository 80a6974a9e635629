"""Azure OpenAI: deployment URLs, api-version, the api-key header, Azure's error bodies."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from asyncjobs.core.providers.azure import AzureWire
from asyncjobs.core.providers.base import ProviderError
from asyncjobs.core.providers.keys import ApiKey
from asyncjobs.core.providers.transport import HttpProvider
from asyncjobs.core.request_types import RequestType
from tests.fakes.azure_fake import AzureDialect
from tests.fakes.wire_server import FakeProviderServer

from .samples import sample_request
from .support import NOW, FirstKeyFirst, dig

KEY = "azure-key-good"
DEPLOYMENTS = {"gpt-test": "prod-gpt", "emb-test": "prod-emb"}


@pytest.fixture
async def fake() -> AsyncIterator[FakeProviderServer]:
    dialect = AzureDialect(api_version="2024-10-21", deployments={"prod-gpt", "prod-emb"})
    async with FakeProviderServer(dialect, api_keys={KEY}) as server:
        yield server


def azure_for(fake: FakeProviderServer, *keys: str) -> HttpProvider:
    wire = AzureWire(base_url=fake.url + "/", deployments=DEPLOYMENTS)
    return HttpProvider(
        "azure",
        wire,
        keys=[ApiKey(key) for key in keys],
        timeout_seconds=10,
        rng=FirstKeyFirst(),
        clock=lambda: NOW,
    )


@pytest.fixture
async def azure(fake: FakeProviderServer) -> AsyncIterator[HttpProvider]:
    provider = azure_for(fake, KEY)
    yield provider
    await provider.close()


ROUND_TRIPS = [
    (RequestType.CHAT_COMPLETION, "/openai/deployments/prod-gpt/chat/completions",
     ("choices", 0, "message", "content"), "fake chat answer"),
    (RequestType.TEXT_COMPLETION, "/openai/deployments/prod-gpt/completions",
     ("choices", 0, "text"), " fake completion"),
    (RequestType.EMBEDDING, "/openai/deployments/prod-gpt/embeddings", ("data", 1, "index"), 1),
    (RequestType.RESPONSES, "/openai/responses",
     ("output", 0, "content", 0, "text"), "fake response"),
    (RequestType.SPEECH, "/openai/deployments/prod-gpt/audio/speech",
     ("content_type",), "audio/mpeg"),
    (RequestType.TRANSCRIPTION, "/openai/deployments/prod-gpt/audio/transcriptions",
     ("text",), "fake transcription"),
    (RequestType.IMAGE_GENERATION, "/openai/deployments/prod-gpt/images/generations",
     ("data", 0, "b64_json"), None),
    (RequestType.IMAGE_EDIT, "/openai/deployments/prod-gpt/images/edits",
     ("data", 0, "b64_json"), None),
]  # fmt: skip


@pytest.mark.parametrize(("request_type", "path", "where", "expected"), ROUND_TRIPS)
async def test_request_type_reaches_its_deployment_url(
    fake: FakeProviderServer,
    azure: HttpProvider,
    request_type: RequestType,
    path: str,
    where: tuple[str | int, ...],
    expected: object,
) -> None:
    result = await azure.call(sample_request(request_type, model="gpt-test"))
    value = dig(result.body, *where)
    assert value == expected if expected is not None else isinstance(value, str)
    stats = fake.stats()
    assert stats["violations"] == []
    (received,) = stats["requests"]
    assert received["path"] == path
    assert received["query"] == {"api-version": "2024-10-21"}
    assert received["headers"]["api-key"] == KEY
    assert "authorization" not in received["headers"]
    assert received["status"] == 200


async def test_responses_name_the_deployment_as_model(
    fake: FakeProviderServer, azure: HttpProvider
) -> None:
    await azure.call(sample_request(RequestType.RESPONSES, model="gpt-test"))
    assert fake.stats()["requests"][0]["json"]["model"] == "prod-gpt"


async def test_unmapped_model_is_sent_as_a_deployment_of_the_same_name(
    fake: FakeProviderServer, azure: HttpProvider
) -> None:
    with pytest.raises(ProviderError) as caught:
        await azure.call(sample_request(RequestType.CHAT_COMPLETION, model="gpt-unmapped"))
    assert fake.stats()["requests"][0]["path"].startswith("/openai/deployments/gpt-unmapped/")
    # The fake knows no such deployment: its 400 check, not a crash.
    assert caught.value.status_code == 400


@pytest.mark.parametrize(
    "request_type", [RequestType.RERANK, RequestType.OCR, RequestType.IMAGE_VARIATION]
)
async def test_unsupported_request_type_fails_cleanly_without_a_call(
    fake: FakeProviderServer, azure: HttpProvider, request_type: RequestType
) -> None:
    with pytest.raises(ProviderError) as caught:
        await azure.call(sample_request(request_type))
    error = caught.value
    assert error.message == f"unsupported request type {request_type.value} for provider azure"
    assert (error.status_code, error.retryable, error.code) == (
        400,
        False,
        "unsupported_request_type",
    )
    assert fake.stats()["count"] == 0


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ({"status": 404}, (404, False, "DeploymentNotFound", None)),
        (
            {"status": 400, "code": "content_filter", "param": "prompt", "message": "Filtered."},
            (400, False, "content_filter", "prompt"),
        ),
        ({"status": 429, "retry_after": "12"}, (429, True, "429", None)),
        ({"status": 500}, (500, True, "InternalServerError", None)),
    ],
)
async def test_azure_error_bodies_keep_code_and_param(
    fake: FakeProviderServer, step: dict[str, object], expected: tuple[object, ...]
) -> None:
    fake.script("prod-gpt", step)
    provider = azure_for(fake, KEY)
    try:
        with pytest.raises(ProviderError) as caught:
            await provider.call(sample_request(RequestType.CHAT_COMPLETION))
    finally:
        await provider.close()
    error = caught.value
    assert (error.status_code, error.retryable, error.code, error.param) == expected
    if step.get("retry_after"):
        assert error.retry_after == 12.0


async def test_rejected_and_throttled_keys_rotate(fake: FakeProviderServer) -> None:
    fake.api_keys.add("azure-key-second")
    fake.script("prod-gpt", {"status": 429})  # a rejected key never reaches the script
    provider = azure_for(fake, "azure-key-revoked", KEY, "azure-key-second")
    try:
        await provider.call(sample_request(RequestType.CHAT_COMPLETION))
    finally:
        await provider.close()
    sent = [(r["key"], r["status"]) for r in fake.stats()["requests"]]
    assert sent == [("azure-key-revoked", 401), (KEY, 429), ("azure-key-second", 200)]
