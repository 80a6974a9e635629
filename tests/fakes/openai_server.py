"""A fake OpenAI-compatible server: real HTTP on a real socket, scriptable per test.

Provider and operator tests need an upstream that speaks the real wire format, checks
what it is sent (openai_checks), answers realistic bodies (openai_answers), and can be
told to fail: latency, 429 with Retry-After, 4xx and 5xx error bodies, a hang that only
a client timeout ends. It also observes what a test wants to assert: every request it
received and the highest number of requests in flight at once.

In-process: `async with FakeOpenAIServer() as fake:` then `fake.base_url`,
`fake.script(model, ...)`, `fake.stats()`. From another process, run
`python -m tests.fakes.openai_server --port 0` (it prints its port on the first line)
and use the control API:

- `POST /_fake/script` `{"model": "m", "steps": [{"status": 429, "retry_after": "1"}, ...]}`
  queues steps for that model; each request for it takes the next step, and once the
  queue is empty requests succeed. Step keys: `status`, `retry_after`, `type`, `code`,
  `message`, `param`, `raw_body` (a non-JSON error body), `hang` (true: answer only when
  the server stops), `latency_ms`.
- `POST /_fake/config` `{"latency_ms": 100, "api_keys": ["sk-a"]}`: latency for every
  request; when api_keys is non-empty, any other key gets 401 invalid_api_key.
  `{"storm_seconds": 4, "storm_retry_after": "1"}`: a 429 storm, every request for
  any model answered 429 (with that Retry-After) for the next 4 seconds.
- `POST /_fake/reset`: forget scripts, requests and counters.
- `GET /_fake/stats`: `{"count", "in_flight", "max_in_flight", "disconnected", "requests",
  "violations"}`; `disconnected` counts requests whose client closed the connection
  before the answer (an abandoned call: a cancelled job's).
  Each request carries `started` and, once answered, `answered`: CLOCK_MONOTONIC seconds,
  comparable with `time.monotonic()` in any process on the host (bench/chaos.py tells
  from them which calls were in flight when it killed the operator).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import time
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.serving import RealSocketServer

from . import openai_answers, openai_checks

DEFAULT_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", "service_unavailable", "The engine is currently overloaded."),
}


@dataclass
class Step:
    """What the fake does with one request for a scripted model."""

    status: int = 200
    retry_after: str | None = None
    type: str | None = None
    code: str | None = None
    message: str | None = None
    param: str | None = None
    raw_body: str | None = None
    hang: bool = False
    latency_ms: float = 0.0

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Step:
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown step keys: {sorted(unknown)}")
        return cls(**raw)

    def error_body(self) -> bytes:
        if self.raw_body is not None:
            return self.raw_body.encode()
        kind, code, message = DEFAULT_ERRORS.get(self.status, ("api_error", None, "Error."))
        error = {
            "message": self.message or message,
            "type": self.type or kind,
            "param": self.param,
            "code": self.code or code,
        }
        return json.dumps({"error": error}).encode()


@dataclass
class Observations:
    requests: list[dict[str, Any]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    disconnected: int = 0


class FakeOpenAIServer(RealSocketServer):
    def __init__(
        self,
        *,
        latency_ms: float = 0.0,
        api_keys: Iterable[str] = (),
        forbidden_model_prefixes: Iterable[str] = ("openai/",),
        hang_seconds: float = 300.0,
    ) -> None:
        self.latency_ms = latency_ms
        self.api_keys = set(api_keys)
        self.forbidden_model_prefixes = tuple(forbidden_model_prefixes)
        self.hang_seconds = hang_seconds
        self.observed = Observations()
        self._scripts: dict[str, deque[Step]] = defaultdict(deque)
        # A 429 storm: every request is throttled until this CLOCK_MONOTONIC time.
        self.storm_until = 0.0
        self.storm_retry_after: str | None = None
        super().__init__()

    # -- in-process API -------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, model: str, *steps: Step | dict[str, Any]) -> None:
        for step in steps:
            self._scripts[model].append(step if isinstance(step, Step) else Step.from_dict(step))

    def reset(self) -> None:
        self._scripts.clear()
        self.observed = Observations()

    def stats(self) -> dict[str, Any]:
        return {
            "count": len(self.observed.requests),
            "in_flight": self.observed.in_flight,
            "max_in_flight": self.observed.max_in_flight,
            "disconnected": self.observed.disconnected,
            "requests": self.observed.requests,
            "violations": self.observed.violations,
        }

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/_fake/script", self._control_script)
        app.router.add_post("/_fake/config", self._control_config)
        app.router.add_post("/_fake/reset", self._control_reset)
        app.router.add_get("/_fake/stats", self._control_stats)
        app.router.add_route("*", "/{tail:.*}", self._provider)
        await self.serve(app, host, port)

    # -- the provider side ----------------------------------------------------------

    async def _provider(self, request: web.Request) -> web.StreamResponse:
        self.observed.in_flight += 1
        self.observed.max_in_flight = max(self.observed.max_in_flight, self.observed.in_flight)
        try:
            return await self._serve(request)
        finally:
            self.observed.in_flight -= 1
            # The handler is not cancelled when its client goes away; the connection is
            # found closed once it is done.
            if request.transport is None or request.transport.is_closing():
                self.observed.disconnected += 1

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        authorization = request.headers.get("Authorization")
        key = authorization.partition(" ")[2] if authorization else None
        record: dict[str, Any] = {
            "method": request.method,
            "path": path,
            "key": key,
            "started": time.monotonic(),
        }
        self.observed.requests.append(record)
        problems = openai_checks.check_authorization(authorization)
        if request.method != "POST" or path not in (
            openai_checks.JSON_PATHS | openai_checks.FORM_PATHS
        ):
            return self._reject(record, 404, [f"no such endpoint: {request.method} {path}"])
        if path in openai_checks.JSON_PATHS:
            model, body_problems, answer = await self._read_json(request, record)
        else:
            model, body_problems, answer = await self._read_form(request, record)
        problems += body_problems
        if problems:
            return self._reject(record, 400, problems)
        if self.api_keys and key not in self.api_keys:
            return self._respond(record, 401, "application/json", Step(401).error_body())
        if time.monotonic() < self.storm_until:
            step = Step(429, retry_after=self.storm_retry_after)
        else:
            step = self._scripts[model].popleft() if self._scripts.get(model) else Step()
        await self._pause((self.latency_ms + step.latency_ms) / 1000)
        if step.hang:
            await self._pause(self.hang_seconds)
            return self._respond(record, 504, "text/plain", b"hung request released")
        if step.status >= 300:
            headers = {"Retry-After": step.retry_after} if step.retry_after else {}
            content_type = "text/html" if step.raw_body is not None else "application/json"
            return self._respond(record, step.status, content_type, step.error_body(), headers)
        content_type, body = answer()
        return self._respond(record, 200, content_type, body)

    async def _read_json(self, request: web.Request, record: dict[str, Any]) -> Any:
        if request.content_type != "application/json":
            return (
                None,
                [f"Content-Type must be application/json, not {request.content_type}"],
                None,
            )
        try:
            body = json.loads(await request.read())
        except ValueError as error:
            return None, [f"body is not JSON: {error}"], None
        record["json"] = body
        model = body.get("model") if isinstance(body, dict) else None
        record["model"] = model
        problems = openai_checks.check_json(request.path, body, self.forbidden_model_prefixes)
        builder = openai_answers.JSON_ANSWERS[request.path]
        return model, problems, lambda: builder(body)

    async def _read_form(self, request: web.Request, record: dict[str, Any]) -> Any:
        if request.content_type != "multipart/form-data":
            return (
                None,
                [f"Content-Type must be multipart/form-data, not {request.content_type}"],
                None,
            )
        form = openai_checks.ReceivedForm()
        for name, value in (await request.post()).items():
            if isinstance(value, web.FileField):
                form.files.setdefault(name, []).append((value.filename, value.file.read()))
            else:
                form.fields.setdefault(name, []).append(str(value))
        record["form"] = {
            "fields": form.fields,
            "files": {
                name: [{"filename": filename, "size": len(data)} for filename, data in parts]
                for name, parts in form.files.items()
            },
        }
        model = (form.fields.get("model") or [None])[0]
        record["model"] = model
        problems = openai_checks.check_form(request.path, form, self.forbidden_model_prefixes)
        return model, problems, lambda: openai_answers.form_answer(request.path, form)

    async def _pause(self, seconds: float) -> None:
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), seconds)

    def _reject(self, record: dict[str, Any], status: int, problems: list[str]) -> web.Response:
        record["violations"] = problems
        self.observed.violations.extend(f"{record['path']}: {p}" for p in problems)
        step = Step(
            status,
            type="invalid_request_error",
            code="fake_check_failed",
            message="; ".join(problems),
        )
        return self._respond(record, status, "application/json", step.error_body())

    def _respond(
        self,
        record: dict[str, Any],
        status: int,
        content_type: str,
        body: bytes,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        record["status"] = status
        record["answered"] = time.monotonic()
        response = web.Response(status=status, body=body, headers=headers)
        response.content_type = content_type.split(";")[0]
        return response

    # -- the control API ------------------------------------------------------------

    async def _control_script(self, request: web.Request) -> web.Response:
        raw = await request.json()
        try:
            self.script(raw["model"], *raw.get("steps", []))
        except (KeyError, TypeError, ValueError) as error:
            return web.json_response({"error": str(error)}, status=400)
        return web.json_response({"queued": len(self._scripts[raw["model"]])})

    async def _control_config(self, request: web.Request) -> web.Response:
        raw = await request.json()
        if "latency_ms" in raw:
            self.latency_ms = float(raw["latency_ms"])
        if "api_keys" in raw:
            self.api_keys = set(raw["api_keys"] or ())
        if "storm_seconds" in raw:
            self.storm_until = time.monotonic() + float(raw["storm_seconds"])
            self.storm_retry_after = raw.get("storm_retry_after")
        return web.json_response({"latency_ms": self.latency_ms, "api_keys": len(self.api_keys)})

    async def _control_reset(self, _: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"reset": True})

    async def _control_stats(self, _: web.Request) -> web.Response:
        return web.json_response(self.stats())


async def _serve_forever(args: argparse.Namespace) -> None:
    fake = FakeOpenAIServer(latency_ms=args.latency_ms, api_keys=args.api_key or ())
    await fake.start(args.host, args.port)
    print(fake.port, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await fake.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible server for tests")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--api-key", action="append", help="accepted key (repeatable)")
    asyncio.run(_serve_forever(parser.parse_args()))


if __name__ == "__main__":
    main()
