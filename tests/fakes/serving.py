"""The socket side every fake provider server shares: serve an aiohttp app on a real
port, and stop it so that handlers sleeping or hanging on purpose wake at once."""

from __future__ import annotations

import asyncio
from typing import Self

from aiohttp import web


class RealSocketServer:
    """Base of the fakes; a subclass builds its app in `start` and calls `serve`."""

    def __init__(self) -> None:
        self.port = 0
        # Set on stop: scripted latency and hangs wait on it instead of sleeping blindly.
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        raise NotImplementedError

    async def serve(self, app: web.Application, host: str = "127.0.0.1", port: int = 0) -> None:
        self._closing = asyncio.Event()
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()
