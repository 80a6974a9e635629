"""The `asyncjobs-api` console script: settings from the command line, then serve.

The gateway token, when used, comes from a file (a mounted Secret) or an environment
variable filled from a Secret, never from the command line where `ps` would show it.

The server runs on uvloop: measured on this service it takes about a third less CPU per
request than asyncio's own loop, both for answering HTTP and for the TLS round trips to
the apiserver that every submit makes (bench/README.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import uvloop
from aiohttp import web

from asyncjobs.api.app import create_app
from asyncjobs.api.clock import utc_now
from asyncjobs.api.idempotency import DEFAULT_WINDOW_SECONDS
from asyncjobs.api.kube_backend import KubeBackend
from asyncjobs.api.quota import Limits, SubmitRate
from asyncjobs.api.result_cache import DEFAULT_BUDGET_BYTES
from asyncjobs.api.settings import (
    BACKEND_DEFAULTS,
    DEFAULT_MAX_PENDING_JOBS,
    DEFAULT_RESULT_TTL,
    Settings,
)
from asyncjobs.core import payload_stores, provider_config
from asyncjobs.core.kube import load_config
from asyncjobs.core.reflector import DEFAULT_PAGE_SIZE

TOKEN_FILE_ENV = "ASYNCJOBS_GATEWAY_TOKEN_FILE"  # noqa: S105 - a variable name
TOKEN_ENV = "ASYNCJOBS_GATEWAY_TOKEN"  # noqa: S105 - a variable name


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="asyncjobs-api", description="Bifrost-compatible async inference API"
    )
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or in-cluster)")
    parser.add_argument("--namespace", help="namespace of the jobs (default: the config's)")
    parser.add_argument(
        "--keys-namespace",
        help="namespace of the virtual-key Secrets, the only one where the API lists Secrets "
        "(default: the jobs' namespace; the chart uses a namespace of their own, so the API "
        "never lists the Secrets that hold request and result bodies)",
    )
    parser.add_argument("--host", default="0.0.0.0")  # noqa: S104 - a server in a pod
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--providers-config", help="providers YAML (default: just `local`)")
    parser.add_argument(
        "--providers-reload-seconds",
        type=float,
        default=10.0,
        help="how often the providers file is checked for new provider names",
    )
    parser.add_argument(
        "--max-request-bytes",
        type=int,
        help="largest accepted request body; larger submits answer 413 "
        "(default: 4 MiB with the secrets backend, 25 MiB with s3)",
    )
    parser.add_argument(
        "--max-result-ttl",
        type=int,
        help="longest result TTL a client may ask for, in seconds; longer asks are cut "
        "(default: one day with the secrets backend, Bifrost's maximum with s3)",
    )
    parser.add_argument(
        "--max-stored-jobs",
        type=int,
        help="jobs the namespace may hold before submits answer 429; 0: no limit "
        "(default: 10000 with the secrets backend, no limit with s3)",
    )
    parser.add_argument(
        "--max-pending-jobs",
        type=int,
        default=DEFAULT_MAX_PENDING_JOBS,
        help="jobs not yet terminal before submits answer 429 (the operator keeps about 12 KB "
        "per waiting job); 0: no limit",
    )
    parser.add_argument(
        "--max-pending-jobs-per-key",
        type=int,
        default=0,
        help="jobs not yet terminal per virtual key before its submits answer 429; 0: no limit",
    )
    parser.add_argument(
        "--submits-per-minute-per-key",
        type=int,
        default=0,
        help="submits per minute each virtual key may make in this replica before 429 with "
        "Retry-After (a key's Secret may set its own submitsPerMinute); 0: no limit",
    )
    parser.add_argument(
        "--submit-burst-per-key",
        type=int,
        default=0,
        help="submits a virtual key may make at once within its rate; 0: one second's worth",
    )
    parser.add_argument(
        "--max-stored-bytes",
        type=int,
        help="bytes of stored bodies the namespace may hold before submits answer 429; "
        "0: no limit (default: 512 MiB with the secrets backend, no limit with s3)",
    )
    parser.add_argument(
        "--default-result-ttl",
        type=int,
        default=DEFAULT_RESULT_TTL,
        help="seconds a result is kept when the submit does not say",
    )
    parser.add_argument(
        "--gateway-token-file",
        default=os.environ.get(TOKEN_FILE_ENV),
        help=f"file holding the gateway API token (or ${TOKEN_FILE_ENV} / ${TOKEN_ENV})",
    )
    parser.add_argument(
        "--require-virtual-key",
        action="store_true",
        help="every request must carry a known virtual key (Bifrost's enforce_governance_header): "
        "none answers 401 virtual_key_required",
    )
    parser.add_argument(
        "--result-cache-bytes",
        type=int,
        default=DEFAULT_BUDGET_BYTES,
        help="memory for recently read results, so repeated polls skip the store (0: off)",
    )
    parser.add_argument(
        "--list-page-size",
        type=int,
        default=DEFAULT_PAGE_SIZE,
        help="objects per page when the job cache lists AsyncJobs (at start, after a 410)",
    )
    parser.add_argument(
        "--idempotency-window-seconds",
        type=int,
        default=DEFAULT_WINDOW_SECONDS,
        help="how long an Idempotency-Key answers with the job it made (at least 1)",
    )
    parser.add_argument("--log-level", default="INFO")
    payload_stores.add_arguments(parser)
    return parser.parse_args(argv)


def gateway_token(token_file: str | None) -> str | None:
    if token_file:
        return Path(token_file).read_text().strip() or None
    return os.environ.get(TOKEN_ENV) or None


def submit_rate(args: argparse.Namespace) -> SubmitRate | None:
    """The default submit rate of every virtual key; None: no limit."""
    if args.submits_per_minute_per_key <= 0:
        return None
    return SubmitRate(args.submits_per_minute_per_key, args.submit_burst_per_key or None)


def _given(flag: int | None, default: int | None) -> int | None:
    """A limit flag: unset takes the backend's default, 0 means no limit."""
    if flag is None:
        return default
    return flag or None


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stdout,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    config = load_config(args.kubeconfig)
    defaults = BACKEND_DEFAULTS[args.payload_backend]
    settings = Settings(
        namespace=args.namespace or config.namespace,
        providers=provider_config.load(args.providers_config).names,
        providers_file=args.providers_config,
        providers_reload_seconds=args.providers_reload_seconds,
        max_request_bytes=args.max_request_bytes or defaults.max_request_bytes,
        max_result_ttl=args.max_result_ttl or defaults.max_result_ttl,
        quota=Limits(
            max_jobs=_given(args.max_stored_jobs, defaults.max_jobs),
            max_stored_bytes=_given(args.max_stored_bytes, defaults.max_stored_bytes),
            max_pending_jobs=args.max_pending_jobs or None,
            max_pending_per_key=args.max_pending_jobs_per_key or None,
            submit_rate_per_key=submit_rate(args),
        ),
        default_result_ttl=args.default_result_ttl,
        gateway_token=gateway_token(args.gateway_token_file),
        require_virtual_key=args.require_virtual_key,
        result_cache_bytes=args.result_cache_bytes,
        payload_backend=args.payload_backend,
        idempotency_window=timedelta(seconds=max(1, args.idempotency_window_seconds)),
    )
    backend = KubeBackend(
        config,
        settings.namespace,
        utc_now,
        keys_namespace=args.keys_namespace or settings.namespace,
        list_page_size=args.list_page_size,
        open_payloads=lambda client: payload_stores.open_store(args, client, settings.namespace),
    )
    app = create_app(
        settings,
        store=backend.store,
        keys=backend.keys,
        webhooks=backend.webhooks,
        clock=utc_now,
        cleanup_ctx=[backend.run],
    )
    # Our middleware writes the access log; aiohttp's own would duplicate it.
    web.run_app(
        app,
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
