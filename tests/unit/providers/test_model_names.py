"""Model names never steer a request elsewhere: refused where they reach a URL, inert
where they only travel in the body.

Gemini puts the model in the path (`models/{model}:generateContent`) and Azure the
deployment (`/openai/deployments/{deployment}/...`), so a name with `..`, `/`, `?`, `#`,
an encoded dot or a control character could climb out of the intended prefix and carry
the operator's key to another endpoint. Those names fail with a 400 that is not retried
and names the rule; the other providers send the model only in the body, so their URL
stays the same whatever the name.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from asyncjobs.core import lifecycle
from asyncjobs.core.conditions import Reason
from asyncjobs.core.jobs import Phase, format_time
from asyncjobs.core.lifecycle import Job, Policy, WriteStatus
from asyncjobs.core.providers.anthropic import AnthropicWire
from asyncjobs.core.providers.azure import AzureWire
from asyncjobs.core.providers.base import ProviderError
from asyncjobs.core.providers.cohere import CohereWire
from asyncjobs.core.providers.gemini import GeminiWire
from asyncjobs.core.providers.keys import ApiKey
from asyncjobs.core.providers.mistral import MistralWire
from asyncjobs.core.providers.openai_wire import OpenAIWire
from asyncjobs.core.providers.transport import HttpProvider, WireFormat
from asyncjobs.core.request_types import RequestType
from tests.fakes.azure_fake import AzureDialect
from tests.fakes.gemini_fake import GeminiDialect
from tests.fakes.wire_server import FakeProviderServer

from .samples import sample_request
from .support import NOW, FirstKeyFirst

KEY = "key-good"

# Names that would leave the intended path if they reached a URL unchecked.
HOSTILE = [
    "tunedModels/../../v1/files",
    "models/../files/x",
    "..",
    ".",
    "../files",
    "a/b",
    "models/a/b",
    "%2e%2e",
    "models/%2E%2E",
    "%2f",
    "gemini-pro?alt=media",
    "gemini-pro#frag",
    "gemini-pro\r\nX-Injected: 1",
    "gemini\x00pro",
    "gemini\tpro",
    "gemini pro",
    "",
    "models/",
    "tunedModels/",
    "x" * 200,
]


@pytest.fixture
async def gemini_fake() -> AsyncIterator[FakeProviderServer]:
    async with FakeProviderServer(GeminiDialect(), api_keys={KEY}) as server:
        yield server


@pytest.fixture
async def azure_fake() -> AsyncIterator[FakeProviderServer]:
    dialect = AzureDialect(api_version="2024-10-21", deployments={"prod-gpt"})
    async with FakeProviderServer(dialect, api_keys={KEY}) as server:
        yield server


def provider(name: str, wire: WireFormat) -> HttpProvider:
    return HttpProvider(
        name, wire, keys=[ApiKey(KEY)], timeout_seconds=10, rng=FirstKeyFirst(), clock=lambda: NOW
    )


def assert_refused(error: ProviderError, provider_name: str, what: str) -> None:
    assert error.status_code == 400
    assert error.retryable is False
    assert error.error_type == "invalid_request_error"
    assert error.code == "invalid_model_name"
    assert error.param == "model"
    assert error.message.startswith(f"invalid {what} name for provider {provider_name}: ")
    # The name is quoted with escapes, so control characters cannot forge log lines.
    assert not {"\r", "\n", "\x00"} & set(error.message)


@pytest.mark.parametrize("model", HOSTILE)
@pytest.mark.parametrize("request_type", [RequestType.CHAT_COMPLETION, RequestType.EMBEDDING])
async def test_gemini_refuses_a_model_name_that_would_leave_the_model_path(
    gemini_fake: FakeProviderServer, model: str, request_type: RequestType
) -> None:
    gemini = provider("gemini", GeminiWire(base_url=gemini_fake.url + "/v1beta"))
    try:
        with pytest.raises(ProviderError) as raised:
            await gemini.call(sample_request(request_type, model=model))
    finally:
        await gemini.close()
    assert_refused(raised.value, "gemini", "model")
    assert "models/<id> or tunedModels/<id>" in raised.value.message
    assert gemini_fake.stats()["count"] == 0  # nothing left the operator


@pytest.mark.parametrize(
    ("model", "path"),
    [
        ("gemini-2.0-flash", "/v1beta/models/gemini-2.0-flash:generateContent"),
        ("models/gemini-1.5-pro-002", "/v1beta/models/gemini-1.5-pro-002:generateContent"),
        ("gemini-2.5-flash-preview-05-20",
         "/v1beta/models/gemini-2.5-flash-preview-05-20:generateContent"),
        ("tunedModels/my-tuned-model-1", "/v1beta/tunedModels/my-tuned-model-1:generateContent"),
        ("gemini-exp_1206", "/v1beta/models/gemini-exp_1206:generateContent"),
    ],
)  # fmt: skip
def test_gemini_accepts_model_ids_and_resource_names(model: str, path: str) -> None:
    call = GeminiWire(base_url="https://g.example/v1beta/").build(
        sample_request(RequestType.CHAT_COMPLETION, model=model)
    )
    assert call.url == "https://g.example" + path


def test_gemini_embedding_names_the_validated_resource_in_its_body() -> None:
    call = GeminiWire().build(sample_request(RequestType.EMBEDDING, model="tunedModels/emb-1"))
    assert call.url.endswith("/v1beta/tunedModels/emb-1:batchEmbedContents")
    assert {r["model"] for r in json.loads(call.body)["requests"]} == {"tunedModels/emb-1"}


AZURE_HOSTILE = [m for m in HOSTILE if not m.startswith(("models/", "tunedModels/"))]


@pytest.mark.parametrize("model", AZURE_HOSTILE)
@pytest.mark.parametrize(
    "request_type",
    [RequestType.CHAT_COMPLETION, RequestType.EMBEDDING, RequestType.RESPONSES],
)
async def test_azure_refuses_a_deployment_name_that_would_leave_the_deployment_path(
    azure_fake: FakeProviderServer, model: str, request_type: RequestType
) -> None:
    azure = provider("azure", AzureWire(base_url=azure_fake.url))
    try:
        with pytest.raises(ProviderError) as raised:
            await azure.call(sample_request(request_type, model=model))
    finally:
        await azure.close()
    assert_refused(raised.value, "azure", "deployment")
    assert azure_fake.stats()["count"] == 0


async def test_azure_refuses_a_configured_deployment_that_would_leave_the_path(
    azure_fake: FakeProviderServer,
) -> None:
    wire = AzureWire(base_url=azure_fake.url, deployments={"gpt-4o": "../admin"})
    azure = provider("azure", wire)
    try:
        with pytest.raises(ProviderError) as raised:
            await azure.call(sample_request(RequestType.CHAT_COMPLETION, model="gpt-4o"))
    finally:
        await azure.close()
    assert_refused(raised.value, "azure", "deployment")
    assert '"../admin"' in raised.value.message
    assert azure_fake.stats()["count"] == 0


@pytest.mark.parametrize(
    ("model", "deployment"),
    [("gpt-4o", "gpt-4o"), ("prod_gpt.v2", "prod_gpt.v2"), ("mapped", "prod-gpt")],
)
def test_azure_accepts_deployment_names_and_keeps_them_under_the_deployments_path(
    model: str, deployment: str
) -> None:
    wire = AzureWire(base_url="https://az.example/openai/", deployments={"mapped": "prod-gpt"})
    call = wire.build(sample_request(RequestType.CHAT_COMPLETION, model=model))
    assert call.url == (
        f"https://az.example/openai/deployments/{deployment}/chat/completions"
        "?api-version=2024-10-21"
    )


BODY_ONLY_WIRES: list[tuple[WireFormat, RequestType]] = [
    (OpenAIWire("https://api.example/v1"), RequestType.CHAT_COMPLETION),
    (OpenAIWire("https://api.example/v1"), RequestType.TRANSCRIPTION),
    (AnthropicWire(), RequestType.CHAT_COMPLETION),
    (MistralWire(), RequestType.EMBEDDING),
    (CohereWire(), RequestType.RERANK),
]


@pytest.mark.parametrize("model", HOSTILE)
@pytest.mark.parametrize(("wire", "request_type"), BODY_ONLY_WIRES)
def test_providers_that_send_the_model_in_the_body_keep_their_url_whatever_the_name(
    wire: WireFormat, request_type: RequestType, model: str
) -> None:
    plain = wire.build(sample_request(request_type, model="plain-model"))
    hostile = wire.build(sample_request(request_type, model=model))
    assert hostile.url == plain.url


async def test_a_refused_model_name_fails_the_job_with_a_400_at_once() -> None:
    gemini = provider("gemini", GeminiWire(base_url="http://127.0.0.1:9/v1beta"))
    try:
        with pytest.raises(ProviderError) as raised:
            await gemini.call(
                sample_request(RequestType.CHAT_COMPLETION, "tunedModels/../../v1/files")
            )
    finally:
        await gemini.close()
    submitted = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    policy = Policy(default_deadline_seconds=600, default_backoff_limit=3, default_ttl_seconds=60)
    job = Job.from_object(
        {
            "metadata": {"name": "j1", "uid": "u1", "generation": 1, "creationTimestamp": "x"},
            "spec": {
                "requestType": "chat_completion",
                "model": "gemini/tunedModels/../../v1/files",
                "submittedAt": format_time(submitted),
            },
            "status": {"phase": "Processing", "attempts": 1},
        },
        policy,
    )
    step = lifecycle.provider_failed(job, 0, 1, raised.value, submitted, policy)
    assert isinstance(step, WriteStatus)
    assert (step.phase, step.reason) == (Phase.FAILED, Reason.PROVIDER_ERROR)
    assert step.status["statusCode"] == 400
    assert step.status["error"]["error"]["code"] == "invalid_model_name"
    assert step.status["error"]["error"]["message"] == raised.value.message
