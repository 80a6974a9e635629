"""The API's settings: everything a deployment may change, in one frozen value.

main.py builds it from the command line; tests build it directly. Views read it from
the application, never from globals, so two apps in one process do not interfere.
"""

from __future__ import annotations

from dataclasses import dataclass

from asyncjobs.api.result_cache import DEFAULT_BUDGET_BYTES

DEFAULT_MAX_REQUEST_BYTES = 25 * 1024 * 1024
DEFAULT_RESULT_TTL = 3600


@dataclass(frozen=True)
class Settings:
    namespace: str
    # The provider names accepted as the `provider/` prefix of a model.
    providers: frozenset[str] = frozenset({"local"})
    # The file those names came from; followed so a reload there is accepted here too.
    providers_file: str | None = None
    providers_reload_seconds: float = 10.0
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    default_result_ttl: int = DEFAULT_RESULT_TTL
    # When set, every inference route needs it as `Authorization: Bearer <token>` or
    # `x-api-key: <token>` (a virtual key then goes in another of the accepted headers).
    gateway_token: str | None = None
    # Memory for recently read results (result_cache.py); 0 reads the store every poll.
    result_cache_bytes: int = DEFAULT_BUDGET_BYTES
