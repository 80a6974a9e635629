"""Every provider type end to end: a client talks only to the API, the operator calls the
provider's fake server in that provider's own wire format, and the poll answers in the
unified (OpenAI-shaped) result. One API and one operator serve the whole module, so each
test costs a few jobs, not two process start-ups; the fakes check what they receive
(path, query, headers, body), and each test asserts the provider's own wire details.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from asyncjobs.core import resources
from asyncjobs.core.kube import KubeClient, KubeError, load_config
from asyncjobs.core.request_types import RequestType
from tests.fakes.anthropic_fake import AnthropicDialect
from tests.fakes.azure_fake import AzureDialect
from tests.fakes.cohere_fake import CohereDialect
from tests.fakes.gemini_fake import GeminiDialect
from tests.fakes.mistral_fake import MistralDialect
from tests.fakes.wire_server import Dialect, FakeProviderServer, Step
from tests.integration.operator_support import FakeOpenAI, Operator, write_providers
from tests.integration.test_e2e import Client
from tests.support.procs import ManagedProcess, free_port, python_module

# One key per provider, each in its own Secret, so a test sees which key was sent where.
KEYS = {
    name: f"key-{name}-e2e"
    for name in ("anthropic", "gemini", "azure", "mistral", "cohere", "groq", "openai")
}
AZURE_DEPLOYMENTS = {"gpt-e2e": "prod-gpt", "emb-e2e": "prod-emb"}


class WireFakes:
    """The non-OpenAI fakes on an event loop of their own, in a thread.

    The module's processes outlive any one test's event loop, and so must the servers
    they call; a thread with its own loop gives them that life span.
    """

    def __init__(self, dialects: dict[str, Dialect]) -> None:
        self.servers = {
            name: FakeProviderServer(dialect, api_keys={KEYS[name]})
            for name, dialect in dialects.items()
        }
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="wire-fakes", daemon=True)

    def _serve(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as error:  # reported to the test thread by __enter__
            self._failure = error
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        for server in self.servers.values():
            await server.start()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            for server in self.servers.values():
                await server.stop()

    def url(self, name: str) -> str:
        return self.servers[name].url

    def script(self, name: str, model: str, *steps: Step) -> None:
        """Queues steps on the fakes' own loop, before any later request can arrive."""
        assert self._loop is not None

        async def add() -> None:
            self.servers[name].script(model, *steps)

        asyncio.run_coroutine_threadsafe(add(), self._loop).result(timeout=5)

    def requests(self, name: str, model: str) -> list[dict[str, Any]]:
        return [r for r in list(self.servers[name].observed.requests) if r.get("model") == model]

    def violations(self, name: str) -> list[str]:
        return list(self.servers[name].observed.violations)

    def __enter__(self) -> WireFakes:
        self._thread.start()
        assert self._ready.wait(timeout=30), "the fake servers did not start"
        if self._failure is not None:
            raise RuntimeError("the fake servers failed to start") from self._failure
        return self

    def __exit__(self, *_: object) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)


@dataclass
class Stack:
    api: str
    namespace: str
    wire: WireFakes
    openai: FakeOpenAI

    def sent(self, provider: str, model: str) -> dict[str, Any]:
        """The one request the provider's fake received for `model`, checked clean."""
        if provider in ("groq", "openai"):
            stats = self.openai.stats()
            received = [r for r in stats["requests"] if r.get("model") == model]
            violations = stats["violations"]
        else:
            received = self.wire.requests(provider, model)
            violations = self.wire.violations(provider)
        assert violations == [], violations
        assert len(received) == 1, received
        assert received[0]["status"] == 200, received[0]
        assert received[0]["key"] == KEYS[provider]
        return received[0]


async def _create_namespace_and_keys(kubeconfig: str, namespace: str) -> None:
    async with KubeClient(load_config(kubeconfig)) as kube:
        await kube.create(
            resources.namespaces_path(),
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        )
        for provider, key in KEYS.items():
            await kube.create(
                resources.secrets_path(namespace),
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": f"{provider}-key"},
                    "stringData": {"api-key": key},
                },
            )


async def _delete_namespace(kubeconfig: str, namespace: str) -> None:
    async with KubeClient(load_config(kubeconfig)) as kube:
        try:
            await kube.delete(resources.namespaces_path(namespace))
        except KubeError as error:
            if error.status != 404:
                raise


def providers_file(path: Path, wire: WireFakes, openai: FakeOpenAI) -> Path:
    def entry(provider: str, base_url: str, **extra: Any) -> dict[str, Any]:
        return {
            "type": provider,
            "baseURL": base_url,
            "timeoutSeconds": 10,
            "keys": [{"secretRef": {"name": f"{provider}-key"}}],
            **extra,
        }

    return write_providers(
        path,
        {
            "providers": {
                "anthropic": entry("anthropic", wire.url("anthropic") + "/v1"),
                "gemini": entry("gemini", wire.url("gemini") + "/v1beta"),
                "azure": entry("azure", wire.url("azure"), deployments=AZURE_DEPLOYMENTS),
                "mistral": entry("mistral", wire.url("mistral") + "/v1"),
                "cohere": entry("cohere", wire.url("cohere")),
                "groq": entry("groq", openai.base_url),
                "openai": entry("openai", openai.base_url),
            },
            "limits": {"maxInFlight": 32},
        },
    )


@pytest.fixture(scope="module")
def stack(kubeconfig_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The fakes, the operator and the API, in a namespace of the module's own (the
    per-test `namespace` fixture would end before the module's processes do)."""
    base = tmp_path_factory.mktemp("providers-e2e")
    logs = base / "logs"
    namespace = f"t-{uuid.uuid4().hex[:10]}"
    asyncio.run(_create_namespace_and_keys(kubeconfig_path, namespace))
    dialects: dict[str, Dialect] = {
        "anthropic": AnthropicDialect(),
        "gemini": GeminiDialect(),
        "azure": AzureDialect(deployments=set(AZURE_DEPLOYMENTS.values())),
        "mistral": MistralDialect(),
        "cohere": CohereDialect(),
    }
    try:
        with WireFakes(dialects) as wire, FakeOpenAI(logs) as openai:
            openai.config(api_keys=[KEYS["groq"], KEYS["openai"]])
            providers = providers_file(base / "providers.yaml", wire, openai)
            # Short backoff: the fallback test waits out Anthropic's retries.
            operator = Operator(
                kubeconfig_path, namespace, providers, logs, "--backoff-base-seconds", "0.05"
            )
            port = free_port()
            argv = python_module(
                "asyncjobs.api.main",
                *("--kubeconfig", kubeconfig_path, "--namespace", namespace),
                *("--providers-config", str(providers), "--host", "127.0.0.1"),
                *("--port", str(port)),
            )
            with ManagedProcess("api", argv, log_dir=logs) as api:
                try:
                    operator.start()
                    api.wait_http_ok(f"http://127.0.0.1:{port}/readyz", timeout=60)
                    yield Stack(f"http://127.0.0.1:{port}", namespace, wire, openai)
                finally:
                    operator.stop()
    finally:
        asyncio.run(_delete_namespace(kubeconfig_path, namespace))


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[Client]:
    async with aiohttp.ClientSession() as session:
        yield Client(stack.api, session)


# --- the unified shapes -----------------------------------------------------------------


def chat_shape(result: dict[str, Any]) -> None:
    assert result["object"] == "chat.completion"
    (choice,) = result["choices"]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)
    assert choice["message"]["content"]
    assert choice["finish_reason"] == "stop"
    usage = result["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0


def embedding_shape(result: dict[str, Any]) -> None:
    assert result["object"] == "list"
    assert [item["index"] for item in result["data"]] == [0, 1]  # both inputs, in order
    for item in result["data"]:
        assert item["object"] == "embedding"
        assert item["embedding"]
        assert all(isinstance(x, float) for x in item["embedding"])


def rerank_shape(result: dict[str, Any]) -> None:
    ranked = result["results"]
    assert sorted(item["index"] for item in ranked) == [0, 1]
    scores = [item["relevance_score"] for item in ranked]
    assert scores == sorted(scores, reverse=True)
    assert ranked[0]["index"] == 1  # the Paris document answers the Paris query


def ocr_shape(result: dict[str, Any]) -> None:
    assert result["pages"]
    assert all("markdown" in page for page in result["pages"])


@dataclass(frozen=True)
class Case:
    """One request through the API: what the client sends, and what must come of it."""

    request_type: RequestType
    model: str  # provider/model as the client writes it
    body: dict[str, Any]
    shape: Callable[[dict[str, Any]], None]
    # Checks the request the provider's fake received (its own wire format).
    wire: Callable[[dict[str, Any]], None]

    @property
    def seen_as(self) -> str:
        """The model as the fake records it: Azure knows deployments, not model names."""
        return AZURE_DEPLOYMENTS.get(self.provider_model, self.provider_model)

    @property
    def provider(self) -> str:
        return self.model.partition("/")[0]

    @property
    def provider_model(self) -> str:
        return self.model.partition("/")[2]


CHAT = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is the capital of France?"},
    ],
    "temperature": 0.2,
    "max_tokens": 50,
}
TWO_INPUTS = {"input": ["first text", "second text"]}
RERANK = {
    "query": "capital of france",
    "documents": [{"text": "Berlin is in Germany"}, {"text": "Paris is the capital of France"}],
    "top_n": 2,
}
OCR = {"document": {"type": "document_url", "document_url": "https://example.com/doc.pdf"}}


def anthropic_chat(sent: dict[str, Any]) -> None:
    assert sent["path"] == "/v1/messages"
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent["headers"]
    body = sent["json"]
    assert body["model"] == "claude-e2e"
    assert body["system"] == "Be brief."  # beside the turns, not one of them
    assert [m["role"] for m in body["messages"]] == ["user"]
    assert body["max_tokens"] == 50


def gemini_chat(sent: dict[str, Any]) -> None:
    assert sent["path"] == "/v1beta/models/gemini-e2e:generateContent"
    assert sent["query"] == {}  # the key travels in x-goog-api-key, never in the URL
    body = sent["json"]
    assert body["systemInstruction"]["parts"] == [{"text": "Be brief."}]
    assert body["generationConfig"]["temperature"] == 0.2
    assert body["generationConfig"]["maxOutputTokens"] == 50


def gemini_embed(sent: dict[str, Any]) -> None:
    assert sent["path"] == "/v1beta/models/embed-e2e:batchEmbedContents"
    texts = [r["content"]["parts"][0]["text"] for r in sent["json"]["requests"]]
    assert texts == ["first text", "second text"]


def azure(path: str) -> Callable[[dict[str, Any]], None]:
    def check(sent: dict[str, Any]) -> None:
        assert sent["path"] == path  # the client's model name mapped to its deployment
        assert sent["query"] == {"api-version": "2024-10-21"}
        assert "authorization" not in sent["headers"]

    return check


def mistral(path: str) -> Callable[[dict[str, Any]], None]:
    def check(sent: dict[str, Any]) -> None:
        assert sent["path"] == path
        assert sent["headers"]["authorization"] == f"Bearer {KEYS['mistral']}"
        if path == "/v1/chat/completions":
            assert sent["json"]["max_tokens"] == 50  # Mistral keeps the old name
            assert "max_completion_tokens" not in sent["json"]

    return check


def cohere(path: str) -> Callable[[dict[str, Any]], None]:
    def check(sent: dict[str, Any]) -> None:
        assert sent["path"] == path
        body = sent["json"]
        if path == "/v2/embed":
            assert body["texts"] == ["first text", "second text"]
            assert body["input_type"] == "search_document"
        if path == "/v2/rerank":
            assert body["documents"] == [d["text"] for d in RERANK["documents"]]

    return check


def groq_chat(sent: dict[str, Any]) -> None:
    assert sent["path"] == "/v1/chat/completions"
    assert sent["json"]["model"] == "llama-e2e"  # without the gateway's prefix
    assert sent["json"]["max_completion_tokens"] == 50
    assert "max_tokens" not in sent["json"]


CASES: dict[str, list[Case]] = {
    "anthropic": [
        Case(RequestType.CHAT_COMPLETION, "anthropic/claude-e2e", CHAT, chat_shape, anthropic_chat)
    ],
    "gemini": [
        Case(RequestType.CHAT_COMPLETION, "gemini/gemini-e2e", CHAT, chat_shape, gemini_chat),
        Case(RequestType.EMBEDDING, "gemini/embed-e2e", TWO_INPUTS, embedding_shape, gemini_embed),
    ],
    "azure": [
        Case(
            RequestType.CHAT_COMPLETION,
            "azure/gpt-e2e",
            CHAT,
            chat_shape,
            azure("/openai/deployments/prod-gpt/chat/completions"),
        ),
        Case(
            RequestType.EMBEDDING,
            "azure/emb-e2e",
            TWO_INPUTS,
            embedding_shape,
            azure("/openai/deployments/prod-emb/embeddings"),
        ),
    ],
    "mistral": [
        Case(
            RequestType.CHAT_COMPLETION,
            "mistral/mistral-e2e",
            CHAT,
            chat_shape,
            mistral("/v1/chat/completions"),
        ),
        Case(
            RequestType.EMBEDDING,
            "mistral/mistral-embed-e2e",
            TWO_INPUTS,
            embedding_shape,
            mistral("/v1/embeddings"),
        ),
        Case(RequestType.OCR, "mistral/mistral-ocr-e2e", OCR, ocr_shape, mistral("/v1/ocr")),
    ],
    "cohere": [
        Case(
            RequestType.CHAT_COMPLETION, "cohere/command-e2e", CHAT, chat_shape, cohere("/v2/chat")
        ),
        Case(
            RequestType.EMBEDDING,
            "cohere/embed-e2e",
            TWO_INPUTS,
            embedding_shape,
            cohere("/v2/embed"),
        ),
        Case(RequestType.RERANK, "cohere/rerank-e2e", RERANK, rerank_shape, cohere("/v2/rerank")),
    ],
    "groq": [Case(RequestType.CHAT_COMPLETION, "groq/llama-e2e", CHAT, chat_shape, groq_chat)],
}


async def submit(client: Client, request_type: RequestType, body: dict[str, Any]) -> str:
    return await client.submit(request_type, json.dumps(body).encode(), "application/json")


@pytest.mark.parametrize("provider", sorted(CASES))
async def test_each_request_type_of_the_provider_round_trips_in_its_own_wire_format(
    stack: Stack, client: Client, provider: str
) -> None:
    cases = CASES[provider]
    # Submit them all, then poll: the provider's request types run side by side.
    ids = [await submit(client, c.request_type, {"model": c.model, **c.body}) for c in cases]
    for case, job_id in zip(cases, ids, strict=True):
        document = await client.poll(case.request_type, job_id)
        assert document["status"] == "completed", (case.model, document.get("error"))
        assert document["status_code"] == 200
        result = document["result"]
        case.shape(result)
        assert result["extra_fields"]["provider"] == provider
        assert result["extra_fields"]["model_requested"] == case.provider_model
        assert result["extra_fields"]["request_type"] == case.request_type.value
        case.wire(stack.sent(provider, case.seen_as))


async def test_an_overloaded_anthropic_falls_back_to_openai_and_records_it(
    stack: Stack, client: Client, kube: KubeClient
) -> None:
    overloaded = Step(529, retry_after="0")
    # More 529s than the retries allowed: every try on Anthropic is overloaded.
    stack.wire.script("anthropic", "claude-busy", *[overloaded] * 10)
    body = {
        "model": "anthropic/claude-busy",
        "fallbacks": ["openai/gpt-fallback-e2e"],
        "messages": [{"role": "user", "content": "hello"}],
    }
    job_id = await submit(client, RequestType.CHAT_COMPLETION, body)
    document = await client.poll(RequestType.CHAT_COMPLETION, job_id)
    assert document["status"] == "completed", document.get("error")
    chat_shape(document["result"])
    assert document["result"]["extra_fields"]["provider"] == "openai"
    assert document["result"]["extra_fields"]["model_requested"] == "gpt-fallback-e2e"
    job = await kube.get(resources.asyncjobs_path(stack.namespace, job_id))
    assert job["status"]["provider"] == "openai"
    assert job["status"]["modelUsed"] == "openai/gpt-fallback-e2e"
    # Anthropic was tried 1 + backoffLimit times (the operator's default of 3), each 529.
    tried = stack.wire.requests("anthropic", "claude-busy")
    assert [r["status"] for r in tried] == [529] * 4
    assert job["status"]["attempts"] == len(tried) + 1
    stack.sent("openai", "gpt-fallback-e2e")
