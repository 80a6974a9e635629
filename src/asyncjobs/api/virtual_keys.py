"""Virtual keys (spec §5): which header carries one, and which id a key belongs to.

Keys are Kubernetes Secrets labelled `asyncjobs.dev/virtual-key` in the keys namespace
(`--keys-namespace`; the chart gives them a namespace of their own, where the API may
list and watch Secrets and nothing else is kept, so that it need not list the jobs'
Secrets, which hold every request and result):

    data.sha256  the hex SHA-256 of the key (preferred: the Secret then never holds
                 the key, so whoever may read Secrets there learns nothing usable)
    data.key     or the key itself, e.g. sk-bf-…
    data.id      the id jobs record (optional; the Secret's name when absent)
    data.submitsPerMinute
                 this key's own submit rate (optional; a whole number, 0 for no
                 limit); without it the API's default applies (api/quota.py)
    data.allowedProviders, allowedModels, maxPendingJobs, tokenBudget,
    tokenBudgetPeriod
                 what the key may do (optional; key_governance.py)
    data.weight  this key's fair share of the operator's call slots against other keys
                 (optional; a whole number from 1 to 1000, default 1), copied onto
                 each job it submits (core/fair_share.py)

The API keeps only SHA-256 digests of keys in memory, so a heap dump or a debug print
cannot leak one, and an AsyncJob records only the id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from asyncjobs.api.errors import ApiError
from asyncjobs.api.key_governance import Governance, governance_from_secret
from asyncjobs.core import fair_share
from asyncjobs.core.kube import KubeObject

log = logging.getLogger(__name__)

PREFIX = "sk-bf-"
# The CRD caps spec.virtualKeyId at 128 characters.
MAX_ID_LENGTH = 128
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

# Headers that count as a virtual key only when their value has the sk-bf- prefix.
_PREFIXED_HEADERS = ("x-api-key", "x-goog-api-key")


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def header_text(headers: Mapping[str, str], name: str) -> str:
    """A credential header's value ("" when absent); ApiError(400) unless it is UTF-8.

    aiohttp hands over header bytes that are not UTF-8 as lone surrogates, which no key
    or token can equal and which cannot be encoded to be hashed or compared.
    """
    value = headers.get(name, "")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise ApiError(400, f"invalid {name} header: not valid UTF-8") from None
    return value


def from_headers(headers: Mapping[str, str]) -> str | None:
    """The virtual key a request carries, or None (spec §2)."""
    explicit = header_text(headers, "x-bf-vk").strip()
    if explicit:
        return explicit
    authorization = header_text(headers, "Authorization")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip().lower().startswith(PREFIX):
        return value.strip()
    for name in _PREFIXED_HEADERS:
        value = header_text(headers, name).strip()
        if value.lower().startswith(PREFIX):
            return value
    return None


@dataclass(frozen=True)
class KeyEntry:
    secret_name: str
    key_id: str
    digest: str
    # The key's own submit rate (0: none); None: the API's default.
    submits_per_minute: int | None = None
    # Its providers, models, backlog cap and token budget (key_governance.py).
    governance: Governance = field(default_factory=Governance)
    # The key's fair-share weight; None: the default (1).
    weight: int | None = None


def entry_from_secret(secret: KubeObject) -> KeyEntry | None:
    """Reads a virtual-key Secret; None (with a warning naming the Secret) if unusable."""
    name = secret.get("metadata", {}).get("name", "")
    data = secret.get("data") or {}
    try:
        key = base64.b64decode(data.get("key", ""), validate=True).decode().strip()
        hashed = base64.b64decode(data.get("sha256", ""), validate=True).decode().strip()
        key_id = base64.b64decode(data.get("id", ""), validate=True).decode().strip() or name
    except (binascii.Error, UnicodeDecodeError):
        log.warning("virtual-key secret %s is not valid base64/utf-8; ignored", name)
        return None
    key_digest = hashed.lower() if hashed else (digest(key) if key else "")
    if not _SHA256_HEX.fullmatch(key_digest) or len(key_id) > MAX_ID_LENGTH:
        log.warning(
            "virtual-key secret %s has no key, no 64-hex sha256 or an id over 128 chars; ignored",
            name,
        )
        return None
    return KeyEntry(
        name,
        key_id,
        key_digest,
        _submits_per_minute(name, data),
        governance=governance_from_secret(name, data),
        weight=_weight(name, data),
    )


def _weight(name: str, data: Mapping[str, str]) -> int | None:
    """The Secret's weight; a value that is not a whole number from 1 to 1000 is ignored
    with a warning (the key weighs the default 1)."""
    raw = data.get("weight")
    if raw is None:
        return None
    try:
        weight = fair_share.parse_weight(base64.b64decode(raw, validate=True).decode())
    except (binascii.Error, UnicodeDecodeError):
        weight = None
    if weight is None:
        log.warning("virtual-key secret %s: weight is not a whole number from 1 to 1000", name)
    return weight


def _submits_per_minute(name: str, data: Mapping[str, str]) -> int | None:
    """The Secret's submitsPerMinute; a value that is not a whole number ≥ 0 is ignored
    with a warning, so the default limit applies (never none)."""
    raw = data.get("submitsPerMinute")
    if raw is None:
        return None
    try:
        text = base64.b64decode(raw, validate=True).decode().strip()
    except (binascii.Error, UnicodeDecodeError):
        text = ""
    if not text.isdigit():
        log.warning("virtual-key secret %s: submitsPerMinute is not a whole number", name)
        return None
    return int(text)


class KeyRing:
    """Digest → id for every known virtual key; filled by a watch or directly in tests."""

    def __init__(self, entries: Iterable[KeyEntry] = (), *, synced: bool = True) -> None:
        self._by_secret: dict[str, KeyEntry] = {}
        self._by_digest: dict[str, str] = {}
        self._rates: dict[str, int] = {}
        self._rules: dict[str, Governance] = {}
        self._weights: dict[str, int] = {}
        # False until a watch has applied its first list; /readyz waits for it.
        self.synced = synced
        self.replace(entries)

    def replace(self, entries: Iterable[KeyEntry]) -> None:
        self._by_secret = {entry.secret_name: entry for entry in entries}
        self._reindex()

    def put(self, entry: KeyEntry) -> None:
        self._by_secret[entry.secret_name] = entry
        self._reindex()

    def remove(self, secret_name: str) -> None:
        if self._by_secret.pop(secret_name, None) is not None:
            self._reindex()

    def _reindex(self) -> None:
        # Keys change rarely; rebuilding the small index keeps lookups a single dict hit.
        self._by_digest = {entry.digest: entry.key_id for entry in self._by_secret.values()}
        self._rates = {
            entry.key_id: entry.submits_per_minute
            for entry in self._by_secret.values()
            if entry.submits_per_minute is not None
        }
        self._rules = {entry.key_id: entry.governance for entry in self._by_secret.values()}
        self._weights = {
            entry.key_id: entry.weight
            for entry in self._by_secret.values()
            if entry.weight is not None
        }

    def resolve(self, key: str) -> str | None:
        """The id of a key, or None when no Secret defines it."""
        return self._by_digest.get(digest(key))

    def submits_per_minute(self, key_id: str) -> int | None:
        """The key's own submit rate from its Secret (0: no limit), None when it sets none."""
        return self._rates.get(key_id)

    def governance(self, key_id: str) -> Governance:
        """The key's rules from its Secret (restricting nothing when it sets none)."""
        return self._rules.get(key_id, _UNRESTRICTED)

    def key_ids(self) -> list[str]:
        """The ids of every known key (bounded: keys are made by administrators)."""
        return sorted({entry.key_id for entry in self._by_secret.values()})

    def weight(self, key_id: str) -> int | None:
        """The key's fair-share weight from its Secret, None when it sets none."""
        return self._weights.get(key_id)

    def __len__(self) -> int:
        return len(self._by_digest)


_UNRESTRICTED = Governance()


def token_matches(presented: str | None, expected: str) -> bool:
    """Constant-time comparison for the gateway token."""
    return presented is not None and hmac.compare_digest(presented.encode(), expected.encode())
