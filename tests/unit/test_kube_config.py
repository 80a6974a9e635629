"""Loading a kubeconfig: tokens, token files, inline and file certificates."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from asyncjobs.core.kube import load_config, load_kubeconfig


def write_config(path: Path, cluster: dict[str, object], user: dict[str, object]) -> Path:
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


def test_token_and_relative_ca_file(tmp_path: Path) -> None:
    config = load_kubeconfig(
        write_config(
            tmp_path / "config",
            {"server": "https://127.0.0.1:6443/", "certificate-authority": "ca.crt"},
            {"token": "abc"},
        )
    )
    assert config.server == "https://127.0.0.1:6443"
    assert config.namespace == "ns"
    assert config.bearer_token() == "abc"
    assert config.ca_file == str(tmp_path / "ca.crt")


def test_token_file_is_read_on_each_use(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    config = load_kubeconfig(
        write_config(tmp_path / "config", {"server": "https://h"}, {"tokenFile": str(token)})
    )
    assert config.bearer_token() == "first"
    token.write_text("rotated")
    assert config.bearer_token() == "rotated"


def test_inline_client_certificate_is_written_to_a_private_file(tmp_path: Path) -> None:
    data = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n").decode()
    config = load_kubeconfig(
        write_config(
            tmp_path / "config",
            {"server": "https://h"},
            {"client-certificate-data": data, "client-key-data": data},
        )
    )
    assert config.client_cert_file is not None
    assert Path(config.client_cert_file).read_bytes() == b"-----BEGIN CERTIFICATE-----\n"


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
