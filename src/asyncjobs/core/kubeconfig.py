"""Where the apiserver is and who we are to it, read the way kubectl reads it.

`load_config` takes an explicit kubeconfig, else $KUBECONFIG (a list of files, merged
as kubectl merges them: the first file to name a cluster, user or context wins, and so
does the first current-context), else the in-cluster ServiceAccount, else
~/.kube/config. Paths in a file are relative to that file. Users may be tokens, token
files, client certificates or exec credential plugins (credentials.py).

Certificates and keys given inline stay in memory: one is written to a private
temporary file only for the moment an SSL context loads it (Python's ssl cannot load a
client certificate from memory), and removed at once.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from asyncjobs.core.credentials import (
    EXEC_EXTENSION,
    Credential,
    CredentialSource,
    ExecCredentials,
    ExecPlugin,
    StaticCredentials,
)

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class KubeConfig:
    """Where the apiserver is, how to trust it, and where credentials come from."""

    server: str
    namespace: str = "default"
    ca_file: str | None = None
    ca_data: bytes | None = None  # PEM
    insecure: bool = False
    credentials: CredentialSource = field(default_factory=StaticCredentials, compare=False)

    def ssl_context(self, credential: Credential) -> ssl.SSLContext:
        context = ssl.create_default_context(
            cafile=self.ca_file, cadata=self.ca_data.decode() if self.ca_data else None
        )
        if credential.has_client_certificate:
            _load_client_certificate(context, credential)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


def _load_client_certificate(context: ssl.SSLContext, credential: Credential) -> None:
    with tempfile.TemporaryDirectory(prefix="asyncjobs-tls-") as private:  # mode 0700
        cert, key = credential.cert_file, credential.key_file
        if credential.cert_data is not None:
            cert = _private_file(Path(private) / "client.crt", credential.cert_data)
        if credential.key_data is not None:
            key = _private_file(Path(private) / "client.key", credential.key_data)
        assert cert is not None
        context.load_cert_chain(cert, key)


def _private_file(path: Path, data: bytes) -> str:
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
        out.write(data)
    return str(path)


@dataclass
class _Entry:
    """A named kubeconfig entry and the directory its relative paths start from."""

    value: Mapping[str, Any]
    base: Path


@dataclass
class _Merged:
    clusters: dict[str, _Entry] = field(default_factory=dict)
    users: dict[str, _Entry] = field(default_factory=dict)
    contexts: dict[str, _Entry] = field(default_factory=dict)
    current_context: str | None = None


def _merge(paths: Sequence[Path]) -> _Merged:
    merged = _Merged()
    for path in paths:
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, Mapping):
            raise ValueError(f"kubeconfig {path} is not a mapping")
        base = path.resolve().parent
        for key, section, inner in (
            ("clusters", merged.clusters, "cluster"),
            ("users", merged.users, "user"),
            ("contexts", merged.contexts, "context"),
        ):
            for item in raw.get(key) or []:
                if isinstance(item, Mapping) and item.get("name") not in section:
                    section[item["name"]] = _Entry(item.get(inner) or {}, base)
        merged.current_context = merged.current_context or raw.get("current-context") or None
    return merged


def load_kubeconfig(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], context: str | None = None
) -> KubeConfig:
    """One kubeconfig file, or several merged as kubectl merges $KUBECONFIG."""
    paths = [Path(path)] if isinstance(path, str | os.PathLike) else [Path(p) for p in path]
    shown = os.pathsep.join(map(str, paths))
    merged = _merge(paths)
    name = context or merged.current_context
    if name not in merged.contexts:
        raise ValueError(f"kubeconfig {shown} has no context {name!r}")
    ctx = merged.contexts[name].value
    cluster_entry = merged.clusters.get(ctx.get("cluster", ""))
    if cluster_entry is None or not cluster_entry.value.get("server"):
        raise ValueError(f"kubeconfig {shown}: context {name!r} names no cluster with a server")
    cluster, cluster_base = cluster_entry.value, cluster_entry.base
    # As in client-go, inline data wins over a file.
    ca_file, ca_data = _path_or_data(cluster, "certificate-authority", cluster_base)
    user_entry = merged.users.get(ctx.get("user", "")) or _Entry({}, cluster_base)
    server = str(cluster["server"]).rstrip("/")
    user = user_entry.value
    plugin = None
    if user.get("exec"):
        asks = bool(user["exec"].get("provideClusterInfo"))
        info = _cluster_info(server, ca_file, ca_data, cluster) if asks else None
        plugin = ExecPlugin.from_kubeconfig(user["exec"], user_entry.base, info)
    return KubeConfig(
        server=server,
        namespace=ctx.get("namespace") or "default",
        ca_file=ca_file,
        ca_data=ca_data,
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        credentials=_credentials(user, user_entry.base, plugin),
    )


def _credentials(
    user: Mapping[str, Any], base: Path, plugin: ExecPlugin | None
) -> CredentialSource:
    if user.get("auth-provider"):
        provider = (user["auth-provider"] or {}).get("name", "?")
        raise ValueError(
            f"kubeconfig user uses auth-provider {provider!r}, which kubectl itself no longer "
            "supports; use its exec credential plugin instead (gke-gcloud-auth-plugin, "
            "kubelogin, kubectl oidc-login)"
        )
    cert_file, cert_data = _path_or_data(user, "client-certificate", base)
    key_file, key_data = _path_or_data(user, "client-key", base)
    static = Credential(
        token=user.get("token") or None,
        cert_file=cert_file,
        key_file=key_file,
        cert_data=cert_data,
        key_data=key_data,
    )
    if plugin is not None:
        return ExecCredentials(plugin, static)
    token_file = Path(base / user["tokenFile"]) if user.get("tokenFile") else None
    return StaticCredentials(static, token_file)


def _path_or_data(
    entry: Mapping[str, Any], key: str, base: Path
) -> tuple[str | None, bytes | None]:
    """`key-data` (base64, kept in memory) or else the file `key` names."""
    if entry.get(f"{key}-data"):
        return None, base64.b64decode(entry[f"{key}-data"])
    if entry.get(key):
        return str(base / entry[key]), None
    return None, None


def _cluster_info(
    server: str, ca_file: str | None, ca_data: bytes | None, cluster: Mapping[str, Any]
) -> dict[str, Any]:
    """spec.cluster for a plugin with provideClusterInfo (client-go's Cluster type)."""
    info: dict[str, Any] = {"server": server}
    if ca_data is None and ca_file is not None and Path(ca_file).is_file():
        ca_data = Path(ca_file).read_bytes()
    if ca_data is not None:
        info["certificate-authority-data"] = base64.b64encode(ca_data).decode()
    for key in ("tls-server-name", "insecure-skip-tls-verify", "proxy-url", "disable-compression"):
        if cluster.get(key):
            info[key] = cluster[key]
    for extension in cluster.get("extensions") or []:
        if isinstance(extension, Mapping) and extension.get("name") == EXEC_EXTENSION:
            info["config"] = extension.get("extension")
    return info


def load_incluster_config() -> KubeConfig:
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if ":" in host:
        host = f"[{host}]"
    return KubeConfig(
        server=f"https://{host}:{port}",
        namespace=(SERVICE_ACCOUNT_DIR / "namespace").read_text().strip(),
        ca_file=str(SERVICE_ACCOUNT_DIR / "ca.crt"),
        credentials=StaticCredentials(token_file=SERVICE_ACCOUNT_DIR / "token"),
    )


def load_config(kubeconfig: str | None = None) -> KubeConfig:
    """The explicit kubeconfig, else $KUBECONFIG, else in-cluster, else ~/.kube/config.

    Either may be a list of files (os.pathsep between them), merged as kubectl does."""
    listed = [p for p in (kubeconfig or os.environ.get("KUBECONFIG", "")).split(os.pathsep) if p]
    if listed:
        # kubectl skips the files of a list that do not exist.
        existing = [p for p in listed if Path(p).exists()] or listed[:1]
        return load_kubeconfig(existing)
    if "KUBERNETES_SERVICE_HOST" in os.environ:
        return load_incluster_config()
    return load_kubeconfig(Path.home() / ".kube" / "config")
