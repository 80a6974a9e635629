"""The API's settings: everything a deployment may change, in one frozen value.

main.py builds it from the command line; tests build it directly. Views read it from
the application, never from globals, so two apps in one process do not interfere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from asyncjobs.api.idempotency import DEFAULT_WINDOW_SECONDS
from asyncjobs.api.quota import Limits
from asyncjobs.api.result_cache import DEFAULT_BUDGET_BYTES
from asyncjobs.core.payloads import S3, SECRETS, Backend

DEFAULT_MAX_REQUEST_BYTES = 25 * 1024 * 1024
DEFAULT_RESULT_TTL = 3600
# Jobs not yet terminal before submits answer 429: the operator holds about 12 KB per
# waiting job, so 20,000 is ~240 MiB, inside its default memory limit.
DEFAULT_MAX_PENDING_JOBS = 20_000
# Bifrost's own cap on the TTL header: the largest Go duration, in seconds.
MAX_RESULT_TTL = (2**63 - 1) // 1_000_000_000


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
    # When set, every inference request must carry a virtual key (Bifrost's
    # enforce_governance_header): none → 401 virtual_key_required, an unknown one → the
    # contract's "virtual key not found", and polls check the key even on jobs
    # submitted without one.
    require_virtual_key: bool = False
    # Memory for recently read results (result_cache.py); 0 reads the store every poll.
    result_cache_bytes: int = DEFAULT_BUDGET_BYTES
    # Where bodies are stored (core/payloads.py); names the references of new jobs.
    payload_backend: Backend = SECRETS
    # The longest result TTL a client may ask for; longer asks are cut to it.
    max_result_ttl: int = MAX_RESULT_TTL
    # What the namespace may hold before submits answer 429 (api/quota.py).
    quota: Limits = field(default_factory=Limits)
    # How long an Idempotency-Key names the job it made (api/idempotency.py).
    idempotency_window: timedelta = timedelta(seconds=DEFAULT_WINDOW_SECONDS)


@dataclass(frozen=True)
class BackendDefaults:
    """Limits that depend on where bodies are stored. With `secrets` every byte goes to
    etcd (whose whole database is a few GiB for the entire cluster), so bodies are
    smaller, results are kept at most a day, and the namespace holds a bounded amount;
    an object store takes Bifrost's own limits. Each is a flag (main.py) as well."""

    max_request_bytes: int
    max_result_ttl: int
    max_jobs: int | None
    max_stored_bytes: int | None


BACKEND_DEFAULTS = {
    SECRETS: BackendDefaults(
        max_request_bytes=4 * 1024 * 1024,
        max_result_ttl=24 * 3600,
        max_jobs=10_000,
        max_stored_bytes=512 * 1024 * 1024,
    ),
    S3: BackendDefaults(
        max_request_bytes=DEFAULT_MAX_REQUEST_BYTES,
        max_result_ttl=MAX_RESULT_TTL,
        max_jobs=None,
        max_stored_bytes=None,
    ),
}
