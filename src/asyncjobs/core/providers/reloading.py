"""Providers that follow their configuration file without a restart.

The chart mounts the providers YAML from a ConfigMap; Kubernetes swaps the file in place
when the ConfigMap changes. `ProvidersReloader` polls the file's content hash, builds a
new ProviderSet when it changes, and swaps it in atomically. Calls already running keep
the providers they started with; the old set is closed once its last call ends, so a
reload never cuts a request off. A file that does not parse, or names a Secret that
cannot be read, leaves the running set in place and is logged (without any key).

Provider keys live in Secrets the file names, and a rotated key must not need a
restart: each poll also reads the referenced Secrets again (a GET by name each, so the
operator needs no list or watch on Secrets) and compares a SHA-256 over their values
with the running set's; a changed key rebuilds the set the same way a changed file
does. Only the hash is kept, never a copy of the keys. A Secret that cannot be read on
a poll (the apiserver away, the Secret being recreated) keeps the running set and is
read again on the next poll.

The reloader is a Mapping of provider name to Provider, like ProviderSet, so the
operator can hand it to whatever takes its providers today; `on_reload` tells the
operator about new limits (concurrency, rate) to apply to its own limiters.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError
from yaml import YAMLError

from asyncjobs.core import provider_config
from asyncjobs.core.provider_config import ProvidersFile
from asyncjobs.core.providers.base import Provider, ProviderError, ProviderRequest, ProviderResult
from asyncjobs.core.providers.registry import (
    ProviderConfigError,
    ProviderLimits,
    ProviderSet,
    SecretReader,
    build_providers,
)

log = logging.getLogger(__name__)

Builder = Callable[[ProvidersFile, SecretReader], Awaitable[ProviderSet]]


@dataclass
class _Generation:
    """One built ProviderSet and the calls still running on it."""

    providers: ProviderSet
    digest: str
    config: ProvidersFile
    # SHA-256 over the provider keys it was built with (see key_fingerprint).
    keys: str
    in_flight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    # Set once the set, replaced while calls were running on it, waits for them to end.
    draining: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()


class _Routed:
    """A provider name bound to whichever generation is current when a call starts."""

    def __init__(self, reloader: ProvidersReloader, name: str) -> None:
        self.name = name
        self._reloader = reloader

    async def call(self, request: ProviderRequest) -> ProviderResult:
        generation = self._reloader._current
        provider = generation.providers.get(self.name)
        if provider is None:
            raise ProviderError(
                f"provider {self.name} is no longer configured",
                status_code=None,
                retryable=False,
                error_type="configuration_error",
            )
        generation.in_flight += 1
        generation.idle.clear()
        try:
            return await provider.call(request)
        finally:
            generation.in_flight -= 1
            if generation.in_flight == 0:
                generation.idle.set()

    async def close(self) -> None:
        """The reloader owns the real providers and closes them."""


class ProvidersReloader(Mapping[str, Provider]):
    def __init__(
        self,
        path: str | Path,
        read_secret: SecretReader,
        *,
        interval_seconds: float = 10.0,
        on_reload: Callable[[ProviderSet], None] | None = None,
        build: Builder = build_providers,
    ) -> None:
        self.path = Path(path)
        self._read_secret = read_secret
        self._interval = interval_seconds
        self._on_reload = on_reload
        self._build = build
        self._generation: _Generation | None = None
        self._failed_digest: str | None = None
        # The last reason a reload was refused, logged once rather than on every poll.
        self._complaint: str | None = None
        self._retiring: dict[asyncio.Task[None], _Generation] = {}
        self._poller: asyncio.Task[None] | None = None

    # -- the Mapping the operator reads ---------------------------------------------------

    @property
    def _current(self) -> _Generation:
        if self._generation is None:
            raise RuntimeError("ProvidersReloader.start() has not been awaited")
        return self._generation

    @property
    def current(self) -> ProviderSet:
        return self._current.providers

    @property
    def limits(self) -> dict[str, ProviderLimits]:
        return self.current.limits

    @property
    def max_in_flight(self) -> int:
        return self.current.max_in_flight

    def __getitem__(self, name: str) -> Provider:
        if name not in self.current:
            raise KeyError(name)
        return _Routed(self, name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.current)

    def __len__(self) -> int:
        return len(self.current)

    # -- loading ----------------------------------------------------------------------------

    async def start(self, *, poll: bool = True) -> None:
        """Builds the first set (its errors propagate: a bad start is fatal) and starts polling."""
        content = await asyncio.to_thread(self.path.read_bytes)
        config = provider_config.parse(content)
        keys = await key_fingerprint(config, self._read_secret)
        providers = await self._build(config, self._read_secret)
        self._generation = _Generation(providers, _digest(content), config, keys)
        if poll:
            self._poller = asyncio.create_task(self._poll(), name="providers-reloader")

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.check()
            except Exception:
                # A poll must never end the loop; the next one tries again.
                log.exception("checking %s failed", self.path)

    async def check(self) -> bool:
        """One look at the file and the key Secrets it names; True when a new set was
        swapped in."""
        try:
            content = await asyncio.to_thread(self.path.read_bytes)
        except OSError as error:
            log.warning("cannot read %s (%s); keeping the providers", self.path, error)
            return False
        digest = _digest(content)
        current = self._current
        if digest == self._failed_digest:
            return False
        if digest == current.digest:
            config = current.config
        else:
            try:
                config = provider_config.parse(content)
            except (YAMLError, ValidationError) as error:
                # Messages name Secrets and fields, never key values (keys are not in the file).
                self._failed_digest = digest
                log.error("not reloading %s: %s", self.path, error)
                return False
        try:
            keys = await key_fingerprint(config, self._read_secret)
            if digest == current.digest and keys == current.keys:
                self._complaint = None
                return False
            providers = await self._build(config, self._read_secret)
        except ProviderConfigError as error:
            # Perhaps a Secret being replaced: keep the running set and look again next
            # poll, saying so once.
            if str(error) != self._complaint:
                self._complaint = str(error)
                log.error("not reloading %s: %s", self.path, error)
            return False
        self._complaint = None
        self._generation = _Generation(providers, digest, config, keys)
        self._failed_digest = None
        what = "a rotated provider key" if digest == current.digest else "a changed file"
        log.info("reloaded providers (%s): %s", what, ", ".join(sorted(providers)))
        self._retire(current)
        if self._on_reload is not None:
            self._on_reload(providers)
        return True

    def _retire(self, generation: _Generation) -> None:
        task = asyncio.create_task(_close_when_idle(generation), name="providers-retire")
        self._retiring[task] = generation
        task.add_done_callback(self._retired)

    def _retired(self, task: asyncio.Task[None]) -> None:
        del self._retiring[task]

    async def draining(self, providers: ProviderSet) -> None:
        """Returns once `providers`, replaced while calls were running on it, waits for
        them to end before it closes: the point a test awaits to see it kept open."""
        for generation in self._retiring.values():
            if generation.providers is providers:
                await generation.draining.wait()
                return
        raise LookupError("not a replaced provider set that is still open")

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        if self._retiring:
            await asyncio.gather(*self._retiring)
        if self._generation is not None:
            await self._generation.providers.close()
            self._generation = None


async def _close_when_idle(generation: _Generation) -> None:
    if generation.in_flight:
        generation.draining.set()
        await generation.idle.wait()
    await generation.providers.close()


def _digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


async def key_fingerprint(config: ProvidersFile, read_secret: SecretReader) -> str:
    """A SHA-256 over every provider key the configuration names, read as a build reads
    them; raises ProviderConfigError (naming the Secret, never a value) when one cannot
    be read."""
    hashed = hashlib.sha256()
    refs = sorted(
        {
            (key.secret_ref.name, key.secret_ref.key)
            for p in config.providers.values()
            for key in p.keys
        }
    )
    for name, key in refs:
        try:
            value = (await read_secret(name, key)).strip()
        except Exception as error:
            where = f"key {key!r} of Secret {name!r}"
            raise ProviderConfigError(f"{where} cannot be read ({type(error).__name__})") from error
        for part in (name, key, value):
            hashed.update(part.encode())
            hashed.update(b"\0")
    return hashed.hexdigest()
