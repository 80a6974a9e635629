"""Loading a kubeconfig: tokens, token files, inline and file certificates, exec
credential plugins, and several files merged as kubectl merges $KUBECONFIG."""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from asyncjobs.core.credentials import Credential, ExecCredentials, StaticCredentials
from asyncjobs.core.kube import KubeConfig, load_config, load_kubeconfig
from tests.support.exec_plugin import V1, V1BETA1, ExecPluginScript


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def client_pem(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """A self-signed certificate and its key, PEM."""
    directory = tmp_path_factory.mktemp("pki")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=test",
            "-keyout",
            str(directory / "k.pem"),
            "-out",
            str(directory / "c.pem"),
        ],
        check=True,
        capture_output=True,
    )
    return (directory / "c.pem").read_bytes(), (directory / "k.pem").read_bytes()


def write_config(path: Path, cluster: dict[str, Any], user: dict[str, Any]) -> Path:
    path.write_text(
        json.dumps(
            {
                "clusters": [{"name": "c", "cluster": cluster}],
                "users": [{"name": "u", "user": user}],
                "contexts": [
                    {"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "ns"}}
                ],
                "current-context": "x",
            }
        )
    )
    return path


async def test_token_and_relative_ca_file(tmp_path: Path) -> None:
    config = load_kubeconfig(
        write_config(
            tmp_path / "config",
            {"server": "https://127.0.0.1:6443/", "certificate-authority": "ca.crt"},
            {"token": "abc"},
        )
    )
    assert config.server == "https://127.0.0.1:6443"
    assert config.namespace == "ns"
    assert (await config.credentials.current()).token == "abc"
    assert config.ca_file == str(tmp_path / "ca.crt")


async def test_token_file_is_read_on_each_use(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    config = load_kubeconfig(
        write_config(tmp_path / "config", {"server": "https://h"}, {"tokenFile": str(token)})
    )
    assert (await config.credentials.current()).token == "first"
    token.write_text("rotated")
    assert (await config.credentials.current()).token == "rotated"


async def test_inline_client_certificate_stays_in_memory_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client_pem: tuple[bytes, bytes]
) -> None:
    cert, key = client_pem
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    config = load_kubeconfig(
        write_config(
            tmp_path / "config",
            {"server": "https://h", "certificate-authority-data": b64(cert)},
            {"client-certificate-data": b64(cert), "client-key-data": b64(key)},
        )
    )
    credential = await config.credentials.current()
    assert (credential.cert_data, credential.key_data) == (cert, key)
    assert config.ca_data == cert
    assert config.ssl_context(credential).verify_mode == ssl.CERT_REQUIRED
    assert list(temp.iterdir()) == []  # the key was on disk only while it was loaded


async def test_client_certificate_files_are_relative_to_the_kubeconfig(tmp_path: Path) -> None:
    config = load_kubeconfig(
        write_config(
            tmp_path / "config",
            {"server": "https://h"},
            {"client-certificate": "pki/c.crt", "client-key": "pki/c.key"},
        )
    )
    credential = await config.credentials.current()
    assert credential.cert_file == str(tmp_path / "pki/c.crt")
    assert credential.key_file == str(tmp_path / "pki/c.key")


def test_insecure_cluster_skips_verification(tmp_path: Path) -> None:
    config = load_kubeconfig(
        write_config(
            tmp_path / "config", {"server": "https://h", "insecure-skip-tls-verify": True}, {}
        )
    )
    context = config.ssl_context(Credential())
    assert (context.check_hostname, context.verify_mode) == (False, ssl.CERT_NONE)


def test_environment_kubeconfig_wins_over_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path / "config", {"server": "https://from-env"}, {})
    monkeypatch.setenv("KUBECONFIG", str(path))
    assert load_config().server == "https://from-env"


def test_missing_context_is_a_clear_error(tmp_path: Path) -> None:
    path = write_config(tmp_path / "config", {"server": "https://h"}, {})
    with pytest.raises(ValueError, match="has no context 'other'"):
        load_kubeconfig(path, context="other")


def write_kubeconfig(path: Path, current: str | None, **sections: list[dict[str, Any]]) -> Path:
    raw: dict[str, Any] = {key: value for key, value in sections.items()}
    if current is not None:
        raw["current-context"] = current
    path.write_text(json.dumps(raw))
    return path


def context(name: str, cluster: str, user: str) -> dict[str, Any]:
    return {"name": name, "context": {"cluster": cluster, "user": user}}


async def test_kubeconfig_list_merges_as_kubectl_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write_kubeconfig(
        tmp_path / "a" / "config",
        None,  # sets no current-context: the next file's counts
        clusters=[{"name": "shared", "cluster": {"server": "https://first"}}],
        users=[{"name": "me", "user": {"tokenFile": "token"}}],
    )
    second = write_kubeconfig(
        tmp_path / "b" / "config",
        "cloud",
        clusters=[
            {"name": "shared", "cluster": {"server": "https://second-loses"}},
            {"name": "own", "cluster": {"server": "https://own", "certificate-authority": "ca"}},
        ],
        users=[{"name": "me", "user": {"token": "second-loses"}}],
        contexts=[context("cloud", "shared", "me"), context("other", "own", "me")],
    )
    (tmp_path / "a" / "token").write_text("from-first-dir")
    missing = tmp_path / "absent"
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join(map(str, (missing, first, second))))
    config = load_config()
    assert config.server == "https://first"
    assert (await config.credentials.current()).token == "from-first-dir"
    other = load_kubeconfig([first, second], context="other")
    assert other.ca_file == str(tmp_path / "b" / "ca")


def test_auth_provider_users_get_a_clear_error(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "config", {"server": "https://h"}, {"auth-provider": {"name": "gcp"}}
    )
    with pytest.raises(ValueError, match=r"auth-provider 'gcp'.*exec credential plugin"):
        load_kubeconfig(path)


def test_exec_user_is_parsed_with_args_env_and_a_path_relative_to_the_kubeconfig(
    tmp_path: Path,
) -> None:
    exec_entry = {
        "apiVersion": V1BETA1,
        "command": "./bin/get-token",
        "args": ["--cluster", "my cluster"],
        "env": [{"name": "AWS_PROFILE", "value": "prod"}],
        "installHint": "install get-token",
    }
    config = load_kubeconfig(
        write_config(tmp_path / "config", {"server": "https://h"}, {"exec": exec_entry})
    )
    assert isinstance(config.credentials, ExecCredentials)
    plugin = config.credentials.plugin
    assert plugin.command == str(tmp_path / "bin" / "get-token")
    assert plugin.args == ("--cluster", "my cluster")
    assert plugin.env == (("AWS_PROFILE", "prod"),)
    assert plugin.interactive_mode == "IfAvailable"  # v1beta1's default
    assert plugin.install_hint == "install get-token"
    assert plugin.cluster is None  # provideClusterInfo not asked for


def test_exec_command_without_a_separator_is_looked_up_on_path(tmp_path: Path) -> None:
    exec_entry = {"apiVersion": V1, "command": "aws", "interactiveMode": "Never"}
    config = load_kubeconfig(
        write_config(tmp_path / "config", {"server": "https://h"}, {"exec": exec_entry})
    )
    assert isinstance(config.credentials, ExecCredentials)
    assert config.credentials.plugin.command == "aws"


def test_exec_plugin_with_provide_cluster_info_gets_the_cluster(
    tmp_path: Path, client_pem: tuple[bytes, bytes]
) -> None:
    (tmp_path / "ca.crt").write_bytes(client_pem[0])
    cluster = {
        "server": "https://h:6443/",
        "certificate-authority": "ca.crt",
        "tls-server-name": "kubernetes",
        "extensions": [
            {"name": "client.authentication.k8s.io/exec", "extension": {"audience": "x"}},
            {"name": "something-else", "extension": {"ignored": True}},
        ],
    }
    exec_entry = {
        "apiVersion": V1,
        "command": "p",
        "interactiveMode": "Never",
        "provideClusterInfo": True,
    }
    config = load_kubeconfig(write_config(tmp_path / "config", cluster, {"exec": exec_entry}))
    assert isinstance(config.credentials, ExecCredentials)
    info = json.loads(config.credentials.plugin.exec_info())
    assert info == {
        "apiVersion": V1,
        "kind": "ExecCredential",
        "spec": {
            "interactive": False,
            "cluster": {
                "server": "https://h:6443",
                "certificate-authority-data": b64(client_pem[0]),
                "tls-server-name": "kubernetes",
                "config": {"audience": "x"},
            },
        },
    }


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"apiVersion": V1}, "`command` is missing"),
        ({"apiVersion": "client.authentication.k8s.io/v1alpha1", "command": "p"}, "not supported"),
        ({"apiVersion": V1, "command": "p", "interactiveMode": "Always"}, "needs a terminal"),
        ({"apiVersion": V1, "command": "p", "interactiveMode": "Sometimes"}, "is not one of"),
        ({"apiVersion": V1, "command": "p", "args": "--flag"}, "`args` must be strings"),
        ({"apiVersion": V1, "command": "p", "env": [{"name": "A"}]}, "needs name and value"),
    ],
)
def test_malformed_exec_entries_are_clear_errors(
    tmp_path: Path, entry: dict[str, Any], message: str
) -> None:
    path = write_config(tmp_path / "config", {"server": "https://h"}, {"exec": entry})
    with pytest.raises(ValueError, match=message):
        load_kubeconfig(path)


async def test_exec_kubeconfig_runs_the_plugin_when_a_credential_is_first_needed(
    tmp_path: Path,
) -> None:
    plugin = ExecPluginScript.create(tmp_path / "plugin", "t0ken")
    path = write_config(tmp_path / "config", {"server": "https://h"}, {"exec": plugin.exec_entry()})
    config = load_kubeconfig(path)
    assert plugin.runs == 0
    assert (await config.credentials.current()).token == "t0ken"
    assert plugin.runs == 1


async def test_a_config_without_a_user_sends_no_credentials() -> None:
    config = KubeConfig(server="https://h")
    assert isinstance(config.credentials, StaticCredentials)
    assert await config.credentials.current() == Credential()
