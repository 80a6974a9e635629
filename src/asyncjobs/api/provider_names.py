"""The provider names the API accepts as `provider/`, kept in step with the providers file.

The operator reloads the providers file without a restart; the API must accept a newly
configured provider at the same moment, or clients see 400s for a provider that works.
Only the names matter here, so the file is re-parsed when its content changes and a
file that fails to parse leaves the last good names in place.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path

import yaml

from asyncjobs.core import provider_config

log = logging.getLogger("asyncjobs.api.providers")


class ProviderNames:
    """The current names; `follow` keeps them current from a file."""

    def __init__(self, names: frozenset[str]) -> None:
        self.current = names
        self._digest: str | None = None

    def refresh(self, path: Path) -> bool:
        """Re-reads the file if its content changed; True when the names changed."""
        try:
            content = path.read_bytes()
        except OSError as exc:
            log.warning(
                "providers file %s unreadable (%s); keeping %d names",
                path,
                type(exc).__name__,
                len(self.current),
            )
            return False
        digest = hashlib.sha256(content).hexdigest()
        if digest == self._digest:
            return False
        self._digest = digest
        try:
            names = provider_config.parse(content).names
        except (ValueError, yaml.YAMLError) as exc:
            log.warning(
                "providers file %s invalid (%s); keeping the last names", path, type(exc).__name__
            )
            return False
        changed = names != self.current
        if changed:
            log.info("provider names now %s", ", ".join(sorted(names)))
        self.current = names
        return changed

    async def follow(self, path: Path, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.refresh(path)
