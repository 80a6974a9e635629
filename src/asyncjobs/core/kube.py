"""A small asyncio client for the Kubernetes API over one pooled aiohttp session.

The API and the tests need a handful of verbs (get, list, create, patch, delete, watch)
on a few resource kinds; a generated client would add megabytes of models and a
deserialisation cost on every poll (kubernetes_asyncio's config loader alone imports its
whole generated client: +70 MB resident and seconds of start-up). Objects are plain
dicts, as the apiserver sends them.

Each request asks the config's credential source for the current credential, so exec
plugins' tokens are renewed before they expire; a 401 renews it and retries once.
"""

from __future__ import annotations

import functools
import io
import json
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

import aiohttp

from asyncjobs.core.credentials import Credential, CredentialError
from asyncjobs.core.kubeconfig import KubeConfig, load_config, load_kubeconfig

__all__ = [
    "KubeClient",
    "KubeConfig",
    "KubeError",
    "KubeObject",
    "ObjectClient",
    "load_config",
    "load_kubeconfig",
]

KubeObject = dict[str, Any]

LARGE_BODY = 1024 * 1024


class KubeError(Exception):
    """The apiserver answered with an error status (or could not be reached, or no
    credential could be had for it: status 0)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def transient(self) -> bool:
        """Worth retrying: unreachable, throttled, or a server-side error."""
        return self.status in (0, 429) or self.status >= 500


class ObjectClient(Protocol):
    """Reading and creating single objects: what payload storage and a job run need
    from KubeClient, so they can be tested against an in-memory apiserver."""

    async def get(self, path: str) -> KubeObject: ...

    async def create(self, path: str, body: Mapping[str, Any]) -> KubeObject: ...


class KubeClient:
    """Verbs on Kubernetes paths. Open with `async with KubeClient(config)`."""

    def __init__(self, config: KubeConfig, *, max_connections: int = 100) -> None:
        self.config = config
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        # The SSL context of the client certificate last used (exec plugins may rotate it).
        self._tls: tuple[tuple[object, ...], ssl.SSLContext | bool] | None = None

    async def __aenter__(self) -> KubeClient:
        await self.open()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._max_connections)
        self._session = aiohttp.ClientSession(
            base_url=self.config.server,
            connector=connector,
            json_serialize=lambda o: json.dumps(o, separators=(",", ":")),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("KubeClient is not open")
        return self._session

    async def _credential(self, stale: Credential | None = None) -> Credential:
        """The current credential, or with `stale` one renewed after a 401."""
        try:
            if stale is None:
                return await self.config.credentials.current()
            return await self.config.credentials.renew(stale)
        except CredentialError as error:
            raise KubeError(0, "CredentialsUnavailable", str(error)) from None

    def _ssl(self, credential: Credential) -> ssl.SSLContext | bool:
        if not self.config.server.startswith("https:"):
            return True  # plain HTTP (fake apiservers in tests): nothing to verify
        key = (credential.cert_file, credential.key_file, credential.cert_data, credential.key_data)
        if self._tls is None or self._tls[0] != key:
            # Connections are pooled per SSL context, so a rotated certificate gets new ones.
            self._tls = (key, self.config.ssl_context(credential))
        return self._tls[1]

    @staticmethod
    def _headers(credential: Credential, content_type: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if credential.token:
            headers["Authorization"] = f"Bearer {credential.token}"
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float = 30,
    ) -> KubeObject:
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        send = functools.partial(self._send, method, path, data, params, content_type, timeout)
        credential = await self._credential()
        status, text = await send(credential)
        if status == 401:
            renewed = await self._credential(stale=credential)
            if renewed != credential:
                status, text = await send(renewed)
        if status >= 400:
            raise _error_from(status, text)
        return json.loads(text) if text else {}

    async def _send(
        self,
        method: str,
        path: str,
        data: bytes | None,
        params: Mapping[str, str] | None,
        content_type: str,
        timeout: float,
        credential: Credential,
    ) -> tuple[int, str]:
        payload: bytes | io.BytesIO | None = data
        if data is not None and len(data) >= LARGE_BODY:
            # aiohttp sends a large bytes body in one blocking write; a stream does not.
            payload = io.BytesIO(data)
        try:
            async with self.session.request(
                method,
                path,
                data=payload,
                params=params,
                headers=self._headers(credential, content_type if data is not None else None),
                ssl=self._ssl(credential),
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                return response.status, await response.text()
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise KubeError(0, "Unreachable", str(exc) or type(exc).__name__) from exc

    async def get(self, path: str) -> KubeObject:
        return await self.request("GET", path)

    async def list(self, path: str, **params: str) -> KubeObject:
        return await self.request("GET", path, params=params)

    async def list_page(
        self,
        path: str,
        *,
        limit: int,
        continue_token: str = "",
        timeout: float = 30,
        **params: str,
    ) -> KubeObject:
        """One page of a paginated list: at most `limit` items, and in its metadata the
        `continue` token of the next page ("" or absent after the last). A token whose
        snapshot was compacted away answers 410, after which the list must start again."""
        query = {**params, "limit": str(limit)}
        if continue_token:
            query["continue"] = continue_token
        return await self.request("GET", path, params=query, timeout=timeout)

    async def create(self, path: str, body: Mapping[str, Any]) -> KubeObject:
        return await self.request("POST", path, body=body)

    async def merge_patch(self, path: str, patch: Mapping[str, Any]) -> KubeObject:
        return await self.request(
            "PATCH", path, body=patch, content_type="application/merge-patch+json"
        )

    async def delete(self, path: str, **params: str) -> KubeObject:
        return await self.request("DELETE", path, params=params)

    async def watch(
        self, path: str, *, resource_version: str, timeout_seconds: int = 300, **params: str
    ) -> AsyncIterator[KubeObject]:
        """Yields watch events ({type, object}) until the server closes the stream.

        An ERROR event (for example 410 Gone after compaction) is raised as KubeError so
        the caller relists.
        """
        query = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
            **params,
        }
        credential = await self._credential()
        retried = False
        try:
            while True:
                async with self.session.get(
                    path,
                    params=query,
                    headers=self._headers(credential),
                    ssl=self._ssl(credential),
                    timeout=aiohttp.ClientTimeout(total=None, sock_read=timeout_seconds + 30),
                ) as response:
                    if response.status == 401 and not retried:
                        retried = True
                        renewed = await self._credential(stale=credential)
                        if renewed != credential:
                            credential = renewed
                            continue
                    if response.status >= 400:
                        raise _error_from(response.status, await response.text())
                    async for line in response.content:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        if event.get("type") == "ERROR":
                            status = event.get("object", {})
                            raise KubeError(
                                int(status.get("code", 500)),
                                status.get("reason", "Error"),
                                status.get("message", ""),
                            )
                        yield event
                    return
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            raise KubeError(0, "Unreachable", str(exc) or type(exc).__name__) from exc


def _error_from(status: int, text: str) -> KubeError:
    try:
        parsed = json.loads(text)
    except ValueError:
        return KubeError(status, "Error", text[:500])
    return KubeError(status, parsed.get("reason", "Error"), parsed.get("message", ""))
