"""Credentials for the apiserver, including those that expire while a process runs.

A kubeconfig user is either static (a token, a token file, a client certificate) or an
exec credential plugin (`users[].user.exec`), which is how EKS, GKE, AKS and OIDC logins
hand out short-lived tokens: the plugin prints an `ExecCredential` whose status holds a
token or a client certificate and, usually, an `expirationTimestamp`. The protocol is
client-go's (client.authentication.k8s.io/v1 and v1beta1), run without a terminal.

Both kinds are a `CredentialSource`: `current()` answers the credential to use now, run
again shortly before it expires, and `renew(stale)` replaces one the apiserver refused
(401). Callers waiting at the same moment share one run of the plugin. Error messages
name the plugin and what went wrong, never its output (the output is the credential).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

EXEC_API_VERSIONS = (
    "client.authentication.k8s.io/v1",
    "client.authentication.k8s.io/v1beta1",
)
INTERACTIVE_MODES = ("Never", "IfAvailable", "Always")
# The extension a cluster entry may carry for its plugins (spec.cluster.config).
EXEC_EXTENSION = "client.authentication.k8s.io/exec"

# Renew this long before expiry (at most a tenth of the credential's lifetime), so a
# request never leaves with a token that expires on the way.
RENEW_BEFORE = timedelta(seconds=60)
PLUGIN_TIMEOUT_SECONDS = 60.0
_STDERR_TAIL = 400

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class CredentialError(Exception):
    """No credential could be had (an exec plugin failed); the message says why."""


@dataclass(frozen=True)
class Credential:
    """What one request authenticates with. Secrets stay out of repr."""

    token: str | None = field(default=None, repr=False)
    cert_file: str | None = None
    key_file: str | None = None
    cert_data: bytes | None = field(default=None, repr=False)  # PEM
    key_data: bytes | None = field(default=None, repr=False)  # PEM
    # When to ask for a new one (before it expires); None: it does not expire.
    renew_at: datetime | None = None

    @property
    def has_client_certificate(self) -> bool:
        return bool(self.cert_file or self.cert_data)


class CredentialSource(Protocol):
    async def current(self) -> Credential:
        """The credential to use now."""
        ...

    async def renew(self, stale: Credential) -> Credential:
        """A replacement for `stale`, which the apiserver refused; `stale` itself (or an
        equal one) when there is nothing newer to offer."""
        ...


class StaticCredentials:
    """A token, a token file or a client certificate from the kubeconfig.

    A token file is read on each use: projected ServiceAccount tokens rotate.
    """

    def __init__(self, base: Credential | None = None, token_file: Path | None = None) -> None:
        self._base = base or Credential()
        self._token_file = token_file

    async def current(self) -> Credential:
        if self._token_file is None:
            return self._base
        token = self._token_file.read_text().strip()
        if token != self._base.token:
            self._base = replace(self._base, token=token)
        return self._base

    async def renew(self, stale: Credential) -> Credential:
        return await self.current()


@dataclass(frozen=True)
class ExecPlugin:
    """One `users[].user.exec` entry, validated."""

    command: str
    api_version: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    interactive_mode: str = "IfAvailable"
    install_hint: str | None = None
    # spec.cluster of KUBERNETES_EXEC_INFO, present when provideClusterInfo is true.
    cluster: Mapping[str, Any] | None = field(default=None, compare=False)
    timeout_seconds: float = PLUGIN_TIMEOUT_SECONDS

    @property
    def name(self) -> str:
        return Path(self.command).name

    @classmethod
    def from_kubeconfig(
        cls, spec: Mapping[str, Any], base: Path, cluster: Mapping[str, Any] | None
    ) -> ExecPlugin:
        """From the exec entry of a kubeconfig in directory `base`; `cluster` is what the
        plugin gets as spec.cluster if it asks for it (provideClusterInfo)."""
        command = spec.get("command")
        if not command or not isinstance(command, str):
            raise ValueError("exec credential plugin: `command` is missing")
        api_version = spec.get("apiVersion")
        if api_version not in EXEC_API_VERSIONS:
            raise ValueError(
                f"exec credential plugin {command!r}: apiVersion {api_version!r} is not "
                f"supported (use one of {', '.join(EXEC_API_VERSIONS)})"
            )
        mode = spec.get("interactiveMode") or "IfAvailable"
        if mode not in INTERACTIVE_MODES:
            raise ValueError(
                f"exec credential plugin {command!r}: interactiveMode {mode!r} is not one of "
                f"{', '.join(INTERACTIVE_MODES)}"
            )
        if mode == "Always":
            raise ValueError(
                f"exec credential plugin {command!r} needs a terminal (interactiveMode "
                "Always), which a service never has; log in once with kubectl, or use a "
                "kubeconfig whose plugin runs unattended"
            )
        # Like kubectl: a relative path with a separator is relative to the kubeconfig.
        if os.sep in command and not os.path.isabs(command):
            command = str(base / command)
        args = spec.get("args") or []
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise ValueError(f"exec credential plugin {command!r}: `args` must be strings")
        env = []
        for item in spec.get("env") or []:
            if not isinstance(item, Mapping) or "name" not in item or "value" not in item:
                raise ValueError(
                    f"exec credential plugin {command!r}: each `env` entry needs name and value"
                )
            env.append((str(item["name"]), str(item["value"])))
        return cls(
            command=command,
            api_version=api_version,
            args=tuple(args),
            env=tuple(env),
            interactive_mode=mode,
            install_hint=spec.get("installHint") or None,
            cluster=cluster if spec.get("provideClusterInfo") else None,
        )

    def exec_info(self) -> str:
        """KUBERNETES_EXEC_INFO: what the plugin may know about its caller."""
        spec: dict[str, Any] = {"interactive": False}
        if self.cluster is not None:
            spec["cluster"] = dict(self.cluster)
        return json.dumps({"apiVersion": self.api_version, "kind": "ExecCredential", "spec": spec})

    async def run(self) -> bytes:
        """The plugin's standard output; CredentialError when it cannot be had."""
        environment = {**os.environ, **dict(self.env), "KUBERNETES_EXEC_INFO": self.exec_info()}
        try:
            process = await asyncio.create_subprocess_exec(
                self.command,
                *self.args,
                env=environment,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except FileNotFoundError:
            hint = f": {self.install_hint.strip()}" if self.install_hint else ""
            raise CredentialError(
                f"exec credential plugin {self.command!r} was not found{hint}"
            ) from None
        except PermissionError:
            raise CredentialError(
                f"exec credential plugin {self.command!r} is not executable"
            ) from None
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), self.timeout_seconds)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise CredentialError(
                f"exec credential plugin {self.name!r} did not answer within "
                f"{self.timeout_seconds:g}s"
            ) from None
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            raise
        if process.returncode != 0:
            detail = stderr.decode(errors="replace").strip()[-_STDERR_TAIL:]
            raise CredentialError(
                f"exec credential plugin {self.name!r} exited with code {process.returncode}"
                + (f": {detail}" if detail else "")
            )
        return stdout


def parse_exec_credential(
    output: bytes, plugin: ExecPlugin, now: datetime, base: Credential | None = None
) -> Credential:
    """The credential in a plugin's ExecCredential; `base` holds the kubeconfig's own client
    certificate, used when the plugin gives a token only."""
    name = plugin.name
    try:
        answer = json.loads(output)
    except ValueError:
        # Never quote the output: it is, or holds, the credential.
        raise CredentialError(
            f"exec credential plugin {name!r} printed no valid JSON ({len(output)} bytes)"
        ) from None
    if not isinstance(answer, dict) or answer.get("kind") != "ExecCredential":
        raise CredentialError(f"exec credential plugin {name!r} printed no ExecCredential")
    if answer.get("apiVersion") != plugin.api_version:
        raise CredentialError(
            f"exec credential plugin {name!r} answered apiVersion "
            f"{answer.get('apiVersion')!r}, not the {plugin.api_version!r} it was asked for"
        )
    status = answer.get("status")
    if not isinstance(status, dict):
        raise CredentialError(f"exec credential plugin {name!r} answered without a status")
    token = status.get("token") or None
    cert = status.get("clientCertificateData") or None
    key = status.get("clientKeyData") or None
    if bool(cert) != bool(key):
        raise CredentialError(
            f"exec credential plugin {name!r} answered only one of clientCertificateData "
            "and clientKeyData"
        )
    if not token and not cert:
        raise CredentialError(
            f"exec credential plugin {name!r} answered neither a token nor a client certificate"
        )
    renew_at = None
    expires = status.get("expirationTimestamp")
    if expires:
        try:
            expires_at = datetime.fromisoformat(str(expires))
        except ValueError:
            raise CredentialError(
                f"exec credential plugin {name!r} answered an expirationTimestamp that is "
                f"not RFC 3339: {expires!r}"
            ) from None
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)
        renew_at = expires_at - min(RENEW_BEFORE, max(expires_at - now, timedelta(0)) / 10)
    base = base or Credential()
    if cert:
        return Credential(
            token=token, cert_data=str(cert).encode(), key_data=str(key).encode(), renew_at=renew_at
        )
    return replace(base, token=token, renew_at=renew_at)


class ExecCredentials:
    """Credentials from an exec plugin, run when first needed, again shortly before they
    expire, and again when the apiserver refuses them."""

    def __init__(
        self,
        plugin: ExecPlugin,
        base: Credential | None = None,
        clock: Clock = _utcnow,
    ) -> None:
        self.plugin = plugin
        self._base = base
        self._clock = clock
        self._cached: Credential | None = None
        self._error: CredentialError | None = None
        self._runs = 0
        self._lock = asyncio.Lock()

    @property
    def runs(self) -> int:
        """How often the plugin has run."""
        return self._runs

    def _due(self, credential: Credential) -> bool:
        return credential.renew_at is not None and self._clock() >= credential.renew_at

    async def current(self) -> Credential:
        cached = self._cached
        if cached is not None and not self._due(cached):
            return cached
        return await self._refresh(cached)

    async def renew(self, stale: Credential) -> Credential:
        return await self._refresh(stale)

    async def _refresh(self, stale: Credential | None) -> Credential:
        runs_seen = self._runs
        async with self._lock:
            cached = self._cached
            if self._runs != runs_seen:
                # The plugin ran while this caller waited: share its outcome.
                if self._error is not None or cached is None:
                    raise CredentialError(str(self._error))
                return cached
            if cached is not None and cached is not stale and not self._due(cached):
                return cached
            try:
                output = await self.plugin.run()
                credential = parse_exec_credential(output, self.plugin, self._clock(), self._base)
            except CredentialError as error:
                self._error = error
                self._runs += 1  # counted once finished, so callers waiting meanwhile see it
                raise
            self._cached, self._error = credential, None
            self._runs += 1
            return credential
