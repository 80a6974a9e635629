"""A fake provider server for any wire format: real HTTP on port 0, checks, scripts.

The OpenAI fake (openai_server) predates this module and keeps its own API; the other
wire formats (Anthropic, Gemini, Azure, Mistral, Cohere) share this server and differ
only in a `Dialect`: how the key arrives, which paths exist, what a real server would
reject (the checks), what it answers, and what its error bodies look like. Each request
is recorded (path, query, headers, JSON body, key, status) so tests assert what was
sent; scripted steps per model make it fail the way the real provider fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from tests.fakes.serving import RealSocketServer

# (content type, body)
Answer = tuple[str, bytes]


@dataclass
class Incoming:
    """What the fake received, in a form the dialects and the tests read easily."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    content_type: str
    json: Any = None
    form: dict[str, Any] | None = (
        None  # {"fields": {name: [values]}, "files": {name: [(fn, data)]}}
    )


@dataclass
class Route:
    """The dialect's reading of one request: the model, what is wrong, what to answer."""

    model: str | None
    problems: list[str]
    answer: Callable[[], Answer]


class Dialect(Protocol):
    def key(self, incoming: Incoming) -> str | None: ...

    def route(self, incoming: Incoming) -> Route | None:
        """None: no such endpoint (404)."""
        ...

    def error_body(self, status: int, step: Step) -> Answer:
        """The provider's own error body for a status (step may override its parts)."""
        ...


@dataclass
class Step:
    """What the fake does with one request for a scripted model."""

    status: int = 200
    retry_after: str | None = None
    message: str | None = None
    type: str | None = None
    code: str | None = None
    param: str | None = None
    body: Any = None  # a complete error body (dict: JSON, str: raw text) replacing the default
    hang: bool = False
    latency_ms: float = 0.0
    rejected_key: bool = False  # set by the server when the key is not accepted

    @classmethod
    def of(cls, raw: Step | dict[str, Any]) -> Step:
        return raw if isinstance(raw, Step) else cls(**raw)


@dataclass
class Observations:
    requests: list[dict[str, Any]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0


class FakeProviderServer(RealSocketServer):
    def __init__(
        self,
        dialect: Dialect,
        *,
        api_keys: Iterable[str] = (),
        latency_ms: float = 0.0,
        hang_seconds: float = 300.0,
    ) -> None:
        self.dialect = dialect
        self.api_keys = set(api_keys)
        self.latency_ms = latency_ms
        self.hang_seconds = hang_seconds
        self.observed = Observations()
        self._scripts: dict[str, deque[Step]] = defaultdict(deque)
        super().__init__()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, model: str, *steps: Step | dict[str, Any]) -> None:
        self._scripts[model].extend(Step.of(step) for step in steps)

    def stats(self) -> dict[str, Any]:
        return {
            "count": len(self.observed.requests),
            "max_in_flight": self.observed.max_in_flight,
            "requests": self.observed.requests,
            "violations": self.observed.violations,
        }

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        await self.serve(app)

    async def _handle(self, request: web.Request) -> web.Response:
        self.observed.in_flight += 1
        self.observed.max_in_flight = max(self.observed.max_in_flight, self.observed.in_flight)
        try:
            return await self._serve(request)
        finally:
            self.observed.in_flight -= 1

    async def _serve(self, request: web.Request) -> web.Response:
        incoming = await _read(request)
        key = self.dialect.key(incoming)
        record: dict[str, Any] = {
            "method": incoming.method,
            "path": incoming.path,
            "query": incoming.query,
            "headers": incoming.headers,
            "key": key,
            "json": incoming.json,
            "form": incoming.form,
        }
        self.observed.requests.append(record)
        route = self.dialect.route(incoming)
        if route is None:
            return self._reject(
                record, 404, [f"no such endpoint: {incoming.method} {incoming.path}"]
            )
        record["model"] = route.model
        if route.problems:
            return self._reject(record, 400, route.problems)
        if self.api_keys and key not in self.api_keys:
            # Most providers answer 401; Gemini answers 400 API_KEY_INVALID.
            status = getattr(self.dialect, "rejected_key_status", 401)
            return self._error(record, status, Step(status, rejected_key=True))
        queue = self._scripts.get(route.model or "")
        step = queue.popleft() if queue else Step()
        await self._pause((self.latency_ms + step.latency_ms) / 1000)
        if step.hang:
            await self._pause(self.hang_seconds)
            return self._respond(record, 504, ("text/plain", b"hung request released"))
        if step.status >= 300:
            return self._error(record, step.status, step)
        return self._respond(record, 200, route.answer())

    def _reject(self, record: dict[str, Any], status: int, problems: list[str]) -> web.Response:
        record["violations"] = problems
        self.observed.violations.extend(f"{record['path']}: {p}" for p in problems)
        return self._error(record, status, Step(status, message="; ".join(problems)))

    def _error(self, record: dict[str, Any], status: int, step: Step) -> web.Response:
        if isinstance(step.body, str):
            answer: Answer = ("text/html", step.body.encode())
        elif step.body is not None:
            answer = ("application/json", json.dumps(step.body).encode())
        else:
            answer = self.dialect.error_body(status, step)
        headers = {"Retry-After": step.retry_after} if step.retry_after else None
        return self._respond(record, status, answer, headers)

    def _respond(
        self,
        record: dict[str, Any],
        status: int,
        answer: Answer,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        record["status"] = status
        content_type, body = answer
        response = web.Response(status=status, body=body, headers=headers)
        response.content_type = content_type.split(";")[0]
        return response

    async def _pause(self, seconds: float) -> None:
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), seconds)


async def _read(request: web.Request) -> Incoming:
    incoming = Incoming(
        method=request.method,
        path=request.path,
        query=dict(request.query),
        headers={k.lower(): v for k, v in request.headers.items()},
        content_type=request.content_type,
    )
    if request.content_type == "multipart/form-data":
        fields: dict[str, list[str]] = {}
        files: dict[str, list[tuple[str, bytes]]] = {}
        for name, value in (await request.post()).items():
            if isinstance(value, web.FileField):
                files.setdefault(name, []).append((value.filename, value.file.read()))
            else:
                fields.setdefault(name, []).append(str(value))
        incoming.form = {"fields": fields, "files": files}
        return incoming
    raw = await request.read()
    if raw:
        try:
            incoming.json = json.loads(raw)
        except ValueError:
            incoming.json = None
    return incoming


def json_answer(value: Any) -> Answer:
    return "application/json", json.dumps(value).encode()


def bearer(incoming: Incoming) -> str | None:
    scheme, _, token = incoming.headers.get("authorization", "").partition(" ")
    return token if scheme == "Bearer" and token else None


def required(body: Any, *names: str) -> list[str]:
    if not isinstance(body, dict):
        return ["the body must be a JSON object"]
    return [f"{name} is required" for name in names if body.get(name) in (None, "", [], {})]


def forbidden(body: Any, *names: str, why: str) -> list[str]:
    if not isinstance(body, dict):
        return []
    return [f"{name} {why}" for name in names if name in body]
