"""Sends one webhook delivery attempt: the thin network side of the deliverer.

Every attempt goes through a connector whose resolver judges the addresses at connect
time (webhook_guard.py); redirects are never followed (a 3xx is the attempt's answer);
each attempt has the endpoint's timeout; at most MAX_IN_FLIGHT attempts per endpoint run
at once. The answer's body is never read beyond what closing needs, and never logged.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from asyncjobs.controller import webhook_guard

MAX_IN_FLIGHT = 10


@dataclass(frozen=True)
class Sent:
    """An attempt's answer: its status code, or None and why there was none."""

    status_code: int | None
    latency_ms: int
    error: str | None = None


class Sender:
    def __init__(self) -> None:
        self._sessions: dict[bool, aiohttp.ClientSession] = {}
        self._in_flight: defaultdict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(MAX_IN_FLIGHT)
        )

    def _session(self, allow_private_network: bool) -> aiohttp.ClientSession:
        session = self._sessions.get(allow_private_network)
        if session is None:
            session = aiohttp.ClientSession(
                connector=webhook_guard.connector(allow_private_network),
                # No cookie jar: deliveries to one endpoint must not carry another's.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            self._sessions[allow_private_network] = session
        return session

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()

    async def send(
        self,
        endpoint_id: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        timeout_seconds: float,
        allow_private_network: bool,
    ) -> Sent:
        refused = webhook_guard.literal_refused(urlsplit(url).hostname or "", allow_private_network)
        if refused is not None:
            return Sent(None, 0, refused)
        async with self._in_flight[endpoint_id]:
            started = time.monotonic()
            try:
                async with self._session(allow_private_network).post(
                    url,
                    data=body,
                    headers=dict(headers),
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=timeout_seconds),
                ) as response:
                    status = response.status
            except TimeoutError:
                return Sent(None, _since(started), "timed out")
            except aiohttp.ClientConnectorError as error:
                if isinstance(error.os_error, webhook_guard.AddressRefused):
                    return Sent(None, _since(started), str(error.os_error))
                return Sent(None, _since(started), "could not connect")
            except aiohttp.ClientError as error:
                return Sent(None, _since(started), type(error).__name__)
            return Sent(status, _since(started))


def _since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
