"""A provider's redirect is never followed: the key stays with the configured host.

Every provider sends its key in a header (`Authorization`, `api-key`, `x-api-key`,
`x-goog-api-key`); an HTTP client that follows a 307 sends the same headers and body to
wherever the Location points. Here a real server answers every request with a redirect
to a second real server on another port, which records what reaches it: nothing may.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from asyncjobs.core.providers import failures
from asyncjobs.core.providers.anthropic import AnthropicWire
from asyncjobs.core.providers.azure import AzureWire
from asyncjobs.core.providers.base import ProviderError
from asyncjobs.core.providers.gemini import GeminiWire
from asyncjobs.core.providers.keys import ApiKey
from asyncjobs.core.providers.openai_wire import OpenAIWire
from asyncjobs.core.providers.transport import HttpProvider, WireFormat
from asyncjobs.core.request_types import RequestType
from tests.fakes.serving import RealSocketServer

from .samples import sample_request
from .support import NOW, FirstKeyFirst

KEY = "secret-provider-key"


class Recorder(RealSocketServer):
    """The redirect's target: records every request, answers a valid chat completion."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[dict[str, str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        await self.serve(app)

    async def _handle(self, request: web.Request) -> web.Response:
        self.received.append(dict(request.headers))
        return web.json_response({"object": "chat.completion", "choices": []})


class Redirector(RealSocketServer):
    """The configured provider: answers every request with `status` to `location`."""

    def __init__(self, status: int, location: str) -> None:
        super().__init__()
        self.status = status
        self.location = location
        self.count = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        await self.serve(app)

    async def _handle(self, request: web.Request) -> web.Response:
        self.count += 1
        await request.read()
        return web.Response(
            status=self.status,
            headers={"Location": self.location},
            text="moved",
        )


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    async with Recorder() as server:
        yield server


WIRES: dict[str, tuple[Callable[[str], WireFormat], str]] = {
    "openai": (lambda url: OpenAIWire(url + "/v1"), "authorization"),
    "azure": (lambda url: AzureWire(base_url=url), "api-key"),
    "anthropic": (lambda url: AnthropicWire(base_url=url + "/v1"), "x-api-key"),
    "gemini": (lambda url: GeminiWire(base_url=url + "/v1beta"), "x-goog-api-key"),
}


async def call_through_redirect(name: str, status: int, location: str) -> tuple[Any, int]:
    make_wire, _ = WIRES[name]
    async with Redirector(status, location) as redirector:
        provider = HttpProvider(
            name,
            make_wire(redirector.url),
            keys=[ApiKey(KEY)],
            timeout_seconds=10,
            rng=FirstKeyFirst(),
            clock=lambda: NOW,
        )
        try:
            with pytest.raises(ProviderError) as raised:
                await provider.call(sample_request(RequestType.CHAT_COMPLETION, "model-1"))
        finally:
            await provider.close()
        return raised.value, redirector.count


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("name", sorted(WIRES))
async def test_redirect_to_another_host_is_not_followed_and_the_key_stays(
    recorder: Recorder, name: str, status: int
) -> None:
    location = f"{recorder.url}/collect/secret-path?token=abc"
    error, count = await call_through_redirect(name, status, location)
    assert recorder.received == []  # neither the key header nor the body left
    assert count == 1  # and the redirect is not retried either
    assert error.retryable is False
    assert error.status_code == 502
    assert error.error_type == "provider_redirect"
    assert error.code == "redirect_not_followed"
    assert error.message == (
        f"provider {name} answered HTTP {status}, a redirect to 127.0.0.1:{recorder.port}; "
        "redirects are not followed, so the key is never sent elsewhere: "
        "set the provider's baseURL to the address it redirects to"
    )
    # Only the host: the Location's path and query may carry tokens.
    assert "secret-path" not in error.message
    assert "token" not in error.message


async def test_redirect_within_the_same_host_is_not_followed_either(recorder: Recorder) -> None:
    error, count = await call_through_redirect("gemini", 307, "/v1/files?upload=1")
    assert count == 1
    within = "provider gemini answered HTTP 307, a redirect within the host;"
    assert error.message.startswith(within)
    assert "files" not in error.message


async def test_redirect_without_a_location_is_a_clear_failure() -> None:
    error, _ = await call_through_redirect("azure", 302, "")
    assert error.retryable is False
    assert error.message.startswith("provider azure answered HTTP 302, a redirect;")


@pytest.mark.parametrize(
    ("location", "shown"),
    [
        ("https://user:password@evil.example/x?token=1", "a redirect to evil.example"),
        ("http://[::1]:8080/x", "a redirect to [::1]:8080"),
        ("//evil.example/a", "a redirect to evil.example"),
        ("http://host:99999/", "a redirect to another address"),
        ("http://a b/", "a redirect to another address"),
    ],
)
def test_the_message_shows_the_redirect_host_and_nothing_else(location: str, shown: str) -> None:
    error = failures.redirected("openai", 302, location)
    assert error.message.startswith(f"provider openai answered HTTP 302, {shown}; ")
    assert "password" not in error.message
    assert "token" not in error.message
