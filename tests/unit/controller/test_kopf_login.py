"""kopf logs in with the operator's own credentials, and renews them each time it asks
again (its last ones expired or were refused)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import kopf
import pytest

from asyncjobs.controller import kopf_setup
from asyncjobs.core.credentials import Credential, ExecCredentials, ExecPlugin
from asyncjobs.core.kube import KubeConfig
from tests.support.exec_plugin import ExecPluginScript


def test_connection_carries_the_credential_and_when_to_renew_it() -> None:
    renew_at = datetime(2026, 1, 1, tzinfo=UTC)
    config = KubeConfig(server="https://h", namespace="jobs", ca_data=b"-----BEGIN CA")
    info = kopf_setup.connection(
        config,
        Credential(token="t", cert_data=b"cert", key_data=b"key", renew_at=renew_at),
    )
    assert info.as_http_headers() == {"Authorization": "Bearer t"}
    assert (info.server, info.ca_data, info.default_namespace) == (
        "https://h",
        b"-----BEGIN CA",
        "jobs",
    )
    assert (info.certificate_data, info.private_key_data) == (b"cert", b"key")
    assert info.expiration == renew_at


def test_connection_without_a_token_sends_no_authorization() -> None:
    info = kopf_setup.connection(
        KubeConfig(server="https://h"), Credential(cert_file="/c", key_file="/k")
    )
    assert info.as_http_headers() == {}
    assert (info.certificate_path, info.private_key_path, info.expiration) == ("/c", "/k", None)


async def test_every_later_login_renews_the_credential(tmp_path: Path) -> None:
    script = ExecPluginScript.create(tmp_path, "first", "second")
    plugin = ExecPlugin.from_kubeconfig(script.exec_entry(), tmp_path, None)
    login = kopf_setup.login_handler(
        KubeConfig(server="https://h", credentials=ExecCredentials(plugin))
    )
    assert (await login()).token == "first"
    assert (await login()).token == "second"
    assert script.runs == 2


async def test_a_failing_plugin_is_a_temporary_login_error(tmp_path: Path) -> None:
    script = ExecPluginScript.create(tmp_path, "never-shown")
    script.set("fail", "expired SSO session")
    plugin = ExecPlugin.from_kubeconfig(script.exec_entry(), tmp_path, None)
    login = kopf_setup.login_handler(
        KubeConfig(server="https://h", credentials=ExecCredentials(plugin))
    )
    with pytest.raises(kopf.TemporaryError, match="expired SSO session") as raised:
        await login()
    assert raised.value.delay == 5
