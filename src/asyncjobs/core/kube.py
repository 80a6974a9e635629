"""A small asyncio client for the Kubernetes API over one pooled aiohttp session.

The API and the tests need a handful of verbs (get, list, create, patch, delete, watch)
on a few resource kinds; a generated client would add megabytes of models and a
deserialisation cost on every poll. kopf brings its own client for the operator's
watches. Objects are plain dicts, as the apiserver sends them.
"""

from __future__ import annotations

import base64
import io
import json
import os
import ssl
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

KubeObject = dict[str, Any]

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
LARGE_BODY = 1024 * 1024


class KubeError(Exception):
    """The apiserver answered with an error status (or could not be reached: status 0)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def transient(self) -> bool:
        """Worth retrying: unreachable, throttled, or a server-side error."""
        return self.status in (0, 429) or self.status >= 500


@dataclass(frozen=True)
class KubeConfig:
    """Where the apiserver is and how to authenticate to it."""

    server: str
    namespace: str = "default"
    token: str | None = None
    token_file: Path | None = None
    ca_file: str | None = None
    ca_data: bytes | None = None
    client_cert_file: str | None = None
    client_key_file: str | None = None
    insecure: bool = False
    _temp_files: list[str] = field(default_factory=list, compare=False, repr=False)

    def bearer_token(self) -> str | None:
        # Projected ServiceAccount tokens rotate, so a token file is read on each use.
        if self.token_file is not None:
            return self.token_file.read_text().strip()
        return self.token

    def ssl_context(self) -> ssl.SSLContext | bool:
        if self.insecure:
            return False
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.ca_data:
            context.load_verify_locations(cadata=self.ca_data.decode())
        if self.client_cert_file:
            context.load_cert_chain(self.client_cert_file, self.client_key_file)
        return context


def _materialise(data_b64: str, suffix: str, temps: list[str]) -> str:
    """Writes inline kubeconfig data (certificates, keys) to a private temp file."""
    handle, path = tempfile.mkstemp(suffix=suffix)
    with os.fdopen(handle, "wb") as out:
        out.write(base64.b64decode(data_b64))
    temps.append(path)
    return path


def load_kubeconfig(path: str | os.PathLike[str], context: str | None = None) -> KubeConfig:
    raw = yaml.safe_load(Path(path).read_text())
    base = Path(path).resolve().parent
    name = context or raw.get("current-context")
    contexts = {c["name"]: c["context"] for c in raw.get("contexts", [])}
    if name not in contexts:
        raise ValueError(f"kubeconfig {path} has no context {name!r}")
    ctx = contexts[name]
    cluster = {c["name"]: c["cluster"] for c in raw.get("clusters", [])}[ctx["cluster"]]
    user = {u["name"]: u.get("user") or {} for u in raw.get("users", [])}.get(
        ctx.get("user", ""), {}
    )
    temps: list[str] = []

    def file_or_data(file_key: str, data_key: str, source: Mapping[str, Any]) -> str | None:
        if source.get(file_key):
            return str(base / source[file_key])
        if source.get(data_key):
            return _materialise(source[data_key], ".pem", temps)
        return None

    token = user.get("token")
    token_file = Path(base / user["tokenFile"]) if user.get("tokenFile") else None
    return KubeConfig(
        server=cluster["server"].rstrip("/"),
        namespace=ctx.get("namespace", "default"),
        token=token,
        token_file=token_file,
        ca_file=file_or_data("certificate-authority", "certificate-authority-data", cluster),
        client_cert_file=file_or_data("client-certificate", "client-certificate-data", user),
        client_key_file=file_or_data("client-key", "client-key-data", user),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        _temp_files=temps,
    )


def load_incluster_config() -> KubeConfig:
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if ":" in host:
        host = f"[{host}]"
    return KubeConfig(
        server=f"https://{host}:{port}",
        namespace=(SERVICE_ACCOUNT_DIR / "namespace").read_text().strip(),
        token_file=SERVICE_ACCOUNT_DIR / "token",
        ca_file=str(SERVICE_ACCOUNT_DIR / "ca.crt"),
    )


def load_config(kubeconfig: str | None = None) -> KubeConfig:
    """The explicit kubeconfig, else $KUBECONFIG, else in-cluster, else ~/.kube/config."""
    path = kubeconfig or os.environ.get("KUBECONFIG")
    if path:
        return load_kubeconfig(path.split(os.pathsep)[0])
    if "KUBERNETES_SERVICE_HOST" in os.environ:
        return load_incluster_config()
    return load_kubeconfig(Path.home() / ".kube" / "config")


class KubeClient:
    """Verbs on Kubernetes paths. Open with `async with KubeClient(config)`."""

    def __init__(self, config: KubeConfig, *, max_connections: int = 100) -> None:
        self.config = config
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> KubeClient:
        await self.open()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._max_connections, ssl=self.config.ssl_context())
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

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        token = self.config.bearer_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
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
        data: bytes | io.BytesIO | None = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
            if len(data) >= LARGE_BODY:
                # aiohttp sends a large bytes body in one blocking write; a stream does not.
                data = io.BytesIO(data)
        try:
            async with self.session.request(
                method,
                path,
                data=data,
                params=params,
                headers=self._headers(content_type if data is not None else None),
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                text = await response.text()
                if response.status >= 400:
                    raise _error_from(response.status, text)
                return json.loads(text) if text else {}
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise KubeError(0, "Unreachable", str(exc) or type(exc).__name__) from exc

    async def get(self, path: str) -> KubeObject:
        return await self.request("GET", path)

    async def list(self, path: str, **params: str) -> KubeObject:
        return await self.request("GET", path, params=params)

    async def create(self, path: str, body: KubeObject) -> KubeObject:
        return await self.request("POST", path, body=body)

    async def merge_patch(self, path: str, patch: KubeObject) -> KubeObject:
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
        try:
            async with self.session.get(
                path,
                params=query,
                headers=self._headers(),
                timeout=aiohttp.ClientTimeout(total=None, sock_read=timeout_seconds + 30),
            ) as response:
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
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            raise KubeError(0, "Unreachable", str(exc) or type(exc).__name__) from exc


def _error_from(status: int, text: str) -> KubeError:
    try:
        parsed = json.loads(text)
    except ValueError:
        return KubeError(status, "Error", text[:500])
    return KubeError(status, parsed.get("reason", "Error"), parsed.get("message", ""))
