"""Exec credential plugins, run for real (a small script run by the test's interpreter):
what the plugin is given, when it runs again, what its failures say, and how the client
renews a credential that expired or that the apiserver refused."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from asyncjobs.core.credentials import (
    Credential,
    CredentialError,
    ExecCredentials,
    ExecPlugin,
    StaticCredentials,
    parse_exec_credential,
)
from asyncjobs.core.kube import KubeClient, KubeConfig, KubeError
from tests.support.exec_plugin import V1, V1BETA1, ExecPluginScript

SECRET = "s3cr3t-token-never-shown"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def exec_source(
    script: ExecPluginScript,
    api_version: str = V1,
    *args: str,
    clock: FakeClock | None = None,
    **entry: object,
) -> ExecCredentials:
    plugin = ExecPlugin.from_kubeconfig(
        script.exec_entry(api_version, *args, **entry), script.state, {"server": "https://h"}
    )
    return ExecCredentials(plugin, clock=clock) if clock else ExecCredentials(plugin)


@pytest.fixture
def script(tmp_path: Path) -> ExecPluginScript:
    return ExecPluginScript.create(tmp_path / "plugin", "first", "second", "third")


@pytest.mark.parametrize("api_version", [V1, V1BETA1])
async def test_plugin_gets_args_env_and_exec_info_and_no_terminal(
    script: ExecPluginScript, api_version: str
) -> None:
    source = exec_source(
        script,
        api_version,
        "--region",
        "eu west",
        env=[{"name": "PLUGIN_GREETING", "value": "hello"}],
        provideClusterInfo=True,
    )
    assert (await source.current()).token == "first"
    [call] = script.calls()
    assert call["args"] == ["--region", "eu west"]  # kept apart, never re-split
    assert call["env"] == "hello"
    assert call["info"] == {
        "apiVersion": api_version,
        "kind": "ExecCredential",
        "spec": {"interactive": False, "cluster": {"server": "https://h"}},
    }
    assert (call["stdin"], call["stdin_tty"]) == ("", False)


async def test_credential_is_reused_until_shortly_before_it_expires(
    script: ExecPluginScript,
) -> None:
    clock = FakeClock()
    clock.now = datetime.now(UTC)  # the plugin stamps expiry from the real clock
    script.set("lifetime", "3600")
    source = exec_source(script, clock=clock)
    first = await source.current()
    assert first.token == "first"
    assert first.renew_at is not None
    # An hour-long token is renewed a minute before it expires.
    expected = clock.now.replace(microsecond=0) + timedelta(seconds=3600 - 60)
    assert abs(first.renew_at - expected) <= timedelta(seconds=2)
    assert await source.current() is first
    clock.now = first.renew_at - timedelta(seconds=1)
    assert await source.current() is first
    clock.now = first.renew_at
    assert (await source.current()).token == "second"
    assert script.runs == 2


def test_short_lived_credentials_renew_at_nine_tenths_of_their_life() -> None:
    plugin = ExecPlugin(command="p", api_version=V1)
    output = json.dumps(
        {
            "apiVersion": V1,
            "kind": "ExecCredential",
            "status": {"token": "t", "expirationTimestamp": "2026-01-01T00:00:10.5+00:00"},
        }
    ).encode()
    credential = parse_exec_credential(output, plugin, NOW)
    assert credential.renew_at == NOW + timedelta(seconds=10.5 * 0.9)


async def test_concurrent_callers_share_one_plugin_run(script: ExecPluginScript) -> None:
    source = exec_source(script)
    credentials = await asyncio.gather(*(source.current() for _ in range(20)))
    assert {c.token for c in credentials} == {"first"}
    assert script.runs == 1


async def test_renewing_a_refused_credential_runs_the_plugin_once(
    script: ExecPluginScript,
) -> None:
    source = exec_source(script)
    refused = await source.current()
    renewed = await asyncio.gather(*(source.renew(refused) for _ in range(5)))
    assert {c.token for c in renewed} == {"second"}
    # A request that still held the first credential gets the newer one, no new run.
    assert (await source.renew(refused)).token == "second"
    assert script.runs == 2


async def test_plugin_client_certificate_is_used(script: ExecPluginScript) -> None:
    script.set("tokens", "")
    script.set("clientCertificateData", "-----BEGIN CERTIFICATE-----\n")
    script.set("clientKeyData", "-----BEGIN PRIVATE KEY-----\n")
    credential = await exec_source(script).current()
    assert credential.token is None
    assert credential.cert_data == b"-----BEGIN CERTIFICATE-----\n"
    assert credential.key_data == b"-----BEGIN PRIVATE KEY-----\n"


async def test_token_from_plugin_keeps_the_kubeconfig_client_certificate(
    script: ExecPluginScript,
) -> None:
    plugin = ExecPlugin.from_kubeconfig(script.exec_entry(), script.state, None)
    source = ExecCredentials(plugin, Credential(cert_file="/c.crt", key_file="/c.key"))
    credential = await source.current()
    assert (credential.token, credential.cert_file, credential.key_file) == (
        "first",
        "/c.crt",
        "/c.key",
    )


async def test_missing_plugin_names_it_and_its_install_hint(tmp_path: Path) -> None:
    plugin = ExecPlugin.from_kubeconfig(
        {
            "apiVersion": V1,
            "command": "no-such-plugin-anywhere",
            "interactiveMode": "Never",
            "installHint": "brew install no-such-plugin",
        },
        tmp_path,
        None,
    )
    with pytest.raises(
        CredentialError, match="'no-such-plugin-anywhere' was not found: brew install"
    ):
        await ExecCredentials(plugin).current()


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"fail": "token expired, run aws sso login"}, "exited with code 3: token expired"),
        ({"stdout": f'{{"token": "{SECRET}"'}, "printed no valid JSON"),
        ({"stdout": json.dumps({"kind": "Secret", "token": SECRET})}, "printed no Exec"),
        ({"api_version": V1BETA1}, "answered apiVersion"),
        ({"tokens": ""}, "neither a token nor a client certificate"),
        ({"clientCertificateData": SECRET}, "only one of clientCertificateData"),
        (
            {"stdout": json.dumps({"apiVersion": V1, "kind": "ExecCredential"})},
            "without a status",
        ),
        (
            {
                "stdout": json.dumps(
                    {
                        "apiVersion": V1,
                        "kind": "ExecCredential",
                        "status": {"token": SECRET, "expirationTimestamp": "tomorrow"},
                    }
                )
            },
            "not RFC 3339",
        ),
    ],
)
async def test_plugin_failures_are_clear_and_never_show_the_output(
    script: ExecPluginScript, files: dict[str, str], message: str
) -> None:
    for name, value in files.items():
        script.set(name, value)
    with pytest.raises(CredentialError, match=message) as raised:
        await exec_source(script).current()
    assert SECRET not in str(raised.value)
    assert "plugin.py" in str(raised.value) or "python" in str(raised.value)


async def test_a_hanging_plugin_is_stopped(script: ExecPluginScript) -> None:
    script.set("sleep", "30")
    plugin = ExecPlugin.from_kubeconfig(script.exec_entry(), script.state, None)
    plugin = replace(plugin, timeout_seconds=0.5)
    with pytest.raises(CredentialError, match=r"did not answer within 0\.5s"):
        await ExecCredentials(plugin).current()


async def test_callers_waiting_on_a_failing_run_share_its_error(
    script: ExecPluginScript,
) -> None:
    script.set("fail", "no network")
    source = exec_source(script)
    results = await asyncio.gather(*(source.current() for _ in range(10)), return_exceptions=True)
    assert all(isinstance(r, CredentialError) for r in results)
    assert script.runs == 1
    script.set("fail", None)
    assert (await source.current()).token == "second"


class Apiserver:
    """Accepts only the listed bearer tokens; counts what it saw."""

    def __init__(self, *accepted: str) -> None:
        self.accepted = set(accepted)
        self.seen: list[str] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.seen.append(token)
        if token not in self.accepted:
            return web.json_response(
                {"kind": "Status", "reason": "Unauthorized", "message": "Unauthorized"},
                status=401,
            )
        if request.query.get("watch") == "true":
            response = web.StreamResponse()
            await response.prepare(request)
            await response.write(b'{"type":"ADDED","object":{"kind":"ConfigMap"}}\n')
            return response
        return web.json_response({"items": []})


@pytest.fixture
async def apiserver() -> AsyncIterator[tuple[Apiserver, str]]:
    fake = Apiserver("second")
    app = web.Application()
    app.router.add_get("/api/v1/configmaps", fake.handle)
    async with TestServer(app) as server:
        yield fake, str(server.make_url("")).rstrip("/")


async def test_client_renews_a_refused_token_and_retries_once(
    script: ExecPluginScript, apiserver: tuple[Apiserver, str]
) -> None:
    fake, url = apiserver
    async with KubeClient(KubeConfig(server=url, credentials=exec_source(script))) as client:
        assert await client.list("/api/v1/configmaps") == {"items": []}
        assert await client.list("/api/v1/configmaps") == {"items": []}
    assert fake.seen == ["first", "second", "second"]
    assert script.runs == 2


async def test_client_gives_up_after_one_renewal(
    script: ExecPluginScript, apiserver: tuple[Apiserver, str]
) -> None:
    fake, url = apiserver
    fake.accepted = {"fourth"}
    async with KubeClient(KubeConfig(server=url, credentials=exec_source(script))) as client:
        with pytest.raises(KubeError) as raised:
            await client.list("/api/v1/configmaps")
    assert raised.value.status == 401
    assert fake.seen == ["first", "second"]


async def test_static_token_refused_is_not_retried(apiserver: tuple[Apiserver, str]) -> None:
    fake, url = apiserver
    config = KubeConfig(server=url, credentials=StaticCredentials(Credential(token="wrong")))
    async with KubeClient(config) as client:
        with pytest.raises(KubeError, match="401 Unauthorized"):
            await client.list("/api/v1/configmaps")
    assert fake.seen == ["wrong"]


async def test_watch_renews_a_refused_token(
    script: ExecPluginScript, apiserver: tuple[Apiserver, str]
) -> None:
    fake, url = apiserver
    async with KubeClient(KubeConfig(server=url, credentials=exec_source(script))) as client:
        events = [e async for e in client.watch("/api/v1/configmaps", resource_version="1")]
    assert events == [{"type": "ADDED", "object": {"kind": "ConfigMap"}}]
    assert fake.seen == ["first", "second"]


async def test_failing_plugin_is_a_transient_kube_error(
    script: ExecPluginScript, apiserver: tuple[Apiserver, str]
) -> None:
    fake, url = apiserver
    script.set("fail", "cannot reach the identity provider")
    async with KubeClient(KubeConfig(server=url, credentials=exec_source(script))) as client:
        with pytest.raises(KubeError, match="identity provider") as raised:
            await client.list("/api/v1/configmaps")
    assert raised.value.reason == "CredentialsUnavailable"
    assert raised.value.transient
    assert fake.seen == []
