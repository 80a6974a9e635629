"""The API follows the providers file: new names are accepted, a broken file changes
nothing, and a submit for a newly configured provider succeeds without a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from asyncjobs.api.app import create_app
from asyncjobs.api.provider_names import ProviderNames
from asyncjobs.api.settings import Settings
from asyncjobs.api.virtual_keys import KeyRing
from tests.unit.api.fakes import FakeJobStore


@pytest.mark.parametrize(
    ("content", "names", "changed"),
    [
        pytest.param(
            "providers: {local: {type: local}, groq: {type: groq}}",
            {"local", "groq"},
            True,
            id="provider-added",
        ),
        pytest.param("providers: {local: {type: local}}", {"local"}, False, id="same-names"),
        pytest.param(
            "providers: {local: {type: telepathy}}", {"local"}, False, id="invalid-keeps-names"
        ),
        pytest.param("providers: [unclosed", {"local"}, False, id="broken-yaml-keeps-names"),
    ],
)
def test_refresh(tmp_path: Path, content: str, names: set[str], changed: bool) -> None:
    path = tmp_path / "providers.yaml"
    path.write_text(content)
    followed = ProviderNames(frozenset({"local"}))
    assert followed.refresh(path) is changed
    assert followed.current == names


def test_missing_file_keeps_names(tmp_path: Path) -> None:
    followed = ProviderNames(frozenset({"local"}))
    assert followed.refresh(tmp_path / "absent.yaml") is False
    assert followed.current == {"local"}


async def test_a_provider_added_to_the_file_is_accepted_without_restart(tmp_path: Path) -> None:
    path = tmp_path / "providers.yaml"
    path.write_text("providers: {local: {type: local}}")
    settings = Settings(
        namespace="jobs",
        providers=frozenset({"local"}),
        providers_file=str(path),
        providers_reload_seconds=0.05,
    )
    body = {"model": "groq/llama", "messages": [{"role": "user", "content": "hi"}]}
    app = create_app(settings, store=FakeJobStore(), keys=KeyRing())
    async with TestClient(TestServer(app)) as client:
        refused = await client.post("/v1/async/chat/completions", json=body)
        assert refused.status == 400
        path.write_text("providers: {local: {type: local}, groq: {type: groq}}")
        for _ in range(100):
            answer = await client.post("/v1/async/chat/completions", json=body)
            if answer.status == 202:
                break
            await asyncio.sleep(0.05)
        assert answer.status == 202
