"""The providers follow their configuration file; running calls finish on the old set."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from asyncjobs.core.provider_config import ProvidersFile
from asyncjobs.core.providers.base import ProviderError, ProviderRequest, ProviderResult
from asyncjobs.core.providers.registry import ProviderSet, SecretReader
from asyncjobs.core.providers.reloading import ProvidersReloader
from asyncjobs.core.request_types import RequestType

from .samples import sample_request


class GatedProvider:
    """Answers only when its gate opens, and remembers whether it was closed."""

    def __init__(self, name: str, generation: int) -> None:
        self.name = name
        self.generation = generation
        self.gate = asyncio.Event()
        self.gate.set()
        self.started = asyncio.Event()
        self.closed_event = asyncio.Event()
        self.closed = False

    async def call(self, request: ProviderRequest) -> ProviderResult:
        self.started.set()
        await self.gate.wait()
        if self.closed:
            raise AssertionError("called after close")
        return ProviderResult({"generation": self.generation})

    async def close(self) -> None:
        self.closed = True
        self.closed_event.set()


class Builds:
    """A build function that makes GatedProviders and keeps every set it built."""

    def __init__(self) -> None:
        self.sets: list[dict[str, GatedProvider]] = []

    async def __call__(self, config: ProvidersFile, read_secret: SecretReader) -> ProviderSet:
        built = {name: GatedProvider(name, len(self.sets)) for name in config.providers}
        self.sets.append(built)
        return ProviderSet(dict(built), config)


async def no_secrets(name: str, key: str) -> str:
    raise AssertionError("no secret expected")


def write(path: Path, providers: dict[str, Any], max_in_flight: int = 10) -> None:
    config = {"providers": providers, "limits": {"maxInFlight": max_in_flight}}
    path.write_text(yaml.safe_dump(config))


def write_raw(path: Path, text: str) -> None:
    path.write_text(text)


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "providers.yaml"
    write(path, {"a": {"type": "local"}})
    return path


async def test_a_changed_file_swaps_in_a_new_set_and_reports_it(config_path: Path) -> None:
    builds = Builds()
    reloaded: list[ProviderSet] = []
    reloader = ProvidersReloader(config_path, no_secrets, build=builds, on_reload=reloaded.append)
    await reloader.start(poll=False)
    try:
        assert set(reloader) == {"a"}
        assert not await reloader.check()  # unchanged: nothing rebuilt
        write(config_path, {"a": {"type": "local"}, "b": {"type": "local", "maxConcurrency": 3}})
        assert await reloader.check()
        assert set(reloader) == {"a", "b"}
        assert reloader.limits["b"].max_concurrency == 3
        assert reloaded == [reloader.current]
        result = await reloader["a"].call(sample_request(RequestType.EMBEDDING))
        assert result.body == {"generation": 1}
        await asyncio.wait_for(_closed(builds.sets[0]["a"]), 5)  # idle: closed at once
    finally:
        await reloader.close()
    assert builds.sets[1]["a"].closed


async def test_a_running_call_finishes_on_the_old_set_before_it_closes(config_path: Path) -> None:
    builds = Builds()
    reloader = ProvidersReloader(config_path, no_secrets, build=builds)
    await reloader.start(poll=False)
    try:
        old_set, old = reloader.current, builds.sets[0]["a"]
        old.gate.clear()
        running = asyncio.create_task(reloader["a"].call(sample_request(RequestType.EMBEDDING)))
        await old.started.wait()
        write(config_path, {"a": {"type": "local", "latencyMs": 1}})
        assert await reloader.check()
        new_call = await reloader["a"].call(sample_request(RequestType.EMBEDDING))
        assert new_call.body == {"generation": 1}
        await asyncio.wait_for(reloader.draining(old_set), 5)
        assert not old.closed  # still serving the running call
        old.gate.set()
        assert (await running).body == {"generation": 0}
        await asyncio.wait_for(_closed(old), 5)
    finally:
        await reloader.close()


async def _closed(provider: GatedProvider) -> None:
    await provider.closed_event.wait()


async def test_a_broken_file_keeps_the_running_set(
    config_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    builds = Builds()
    reloader = ProvidersReloader(config_path, no_secrets, build=builds)
    await reloader.start(poll=False)
    try:
        write_raw(config_path, "providers: {a: {type: nonesuch}}")
        with caplog.at_level(logging.ERROR):
            assert not await reloader.check()
        assert "not reloading" in caplog.text
        assert not await reloader.check()  # the same broken content is not rebuilt again
        assert len(builds.sets) == 1
        assert set(reloader) == {"a"}
        write(config_path, {"c": {"type": "local"}})
        assert await reloader.check()
        assert set(reloader) == {"c"}
    finally:
        await reloader.close()


async def test_a_removed_provider_is_gone_for_new_calls(config_path: Path) -> None:
    reloader = ProvidersReloader(config_path, no_secrets, build=Builds())
    await reloader.start(poll=False)
    try:
        held = reloader["a"]
        write(config_path, {"z": {"type": "local"}})
        assert await reloader.check()
        assert reloader.get("a") is None
        with pytest.raises(ProviderError) as caught:
            await held.call(sample_request(RequestType.EMBEDDING))
        assert caught.value.message == "provider a is no longer configured"
        assert caught.value.retryable is False
    finally:
        await reloader.close()


async def test_polling_picks_up_a_change_by_itself(config_path: Path) -> None:
    seen = asyncio.Event()
    reloader = ProvidersReloader(
        config_path,
        no_secrets,
        interval_seconds=0.02,
        build=Builds(),
        on_reload=lambda _: seen.set(),
    )
    await reloader.start()
    try:
        write(config_path, {"a": {"type": "local"}}, max_in_flight=99)
        await asyncio.wait_for(seen.wait(), 10)
        assert reloader.max_in_flight == 99
    finally:
        await reloader.close()


async def test_real_providers_are_built_and_closed(config_path: Path) -> None:
    reloader = ProvidersReloader(config_path, no_secrets)
    await reloader.start(poll=False)
    try:
        result = await reloader["a"].call(sample_request(RequestType.EMBEDDING, model="m"))
        assert result.body["object"] == "list"
    finally:
        await reloader.close()


class RotatingSecrets:
    """Key Secrets whose values a test changes; counts reads, can fail them."""

    def __init__(self, **values: str) -> None:
        self.values = dict(values)
        self.reads = 0
        self.failing = False

    async def __call__(self, name: str, key: str) -> str:
        self.reads += 1
        if self.failing:
            raise ConnectionError("apiserver away")
        return self.values[name]


def with_key(path: Path) -> None:
    write(
        path,
        {
            "openai": {
                "type": "openai",
                "baseURL": "http://127.0.0.1:9/v1",
                "keys": [{"secretRef": {"name": "openai-key"}}],
            }
        },
    )


async def test_a_rotated_key_secret_swaps_in_a_new_set_with_the_same_file(
    config_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with_key(config_path)
    secrets = RotatingSecrets(**{"openai-key": "sk-old"})
    builds = Builds()
    reloaded: list[ProviderSet] = []
    reloader = ProvidersReloader(config_path, secrets, build=builds, on_reload=reloaded.append)
    await reloader.start(poll=False)
    try:
        assert not await reloader.check()  # same file, same key: nothing rebuilt
        assert len(builds.sets) == 1
        secrets.values["openai-key"] = "sk-new"
        with caplog.at_level(logging.INFO):
            assert await reloader.check()
        assert len(builds.sets) == 2
        assert reloaded == [reloader.current]
        assert "a rotated provider key" in caplog.text
        assert "sk-new" not in caplog.text
        assert "sk-old" not in caplog.text
        assert not await reloader.check()  # and only once
        # A Secret that cannot be read keeps the running set, logged once, and is read
        # again on the next poll.
        secrets.failing = True
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            assert not await reloader.check()
            assert not await reloader.check()
        assert caplog.text.count("cannot be read (ConnectionError)") == 1
        assert len(builds.sets) == 2
        secrets.failing = False
        secrets.values["openai-key"] = "sk-newer"
        assert await reloader.check()
        assert len(builds.sets) == 3
    finally:
        await reloader.close()
