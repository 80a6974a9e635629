"""Choosing and opening the payload store, the same way in the API and the operator.

Both processes take the same flags (environment variables in the chart), so they
cannot disagree about where bodies live. S3 credentials are never flags: botocore
reads them from the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY from a
Secret) or from the pod's workload identity.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from asyncjobs.core.kube import ObjectClient
from asyncjobs.core.payloads import BACKENDS, S3, PayloadStore
from asyncjobs.core.s3_payloads import S3Settings, open_s3_payloads
from asyncjobs.core.secret_payloads import SecretPayloads

ENV_PREFIX = "ASYNCJOBS_"


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(ENV_PREFIX + name, default)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The payload store's flags; each defaults to its ASYNCJOBS_* variable."""
    group = parser.add_argument_group("payload store")
    group.add_argument(
        "--payload-backend",
        choices=BACKENDS,
        default=_env("PAYLOADS", "secrets"),
        help="where request and result bodies live ($ASYNCJOBS_PAYLOADS; default secrets)",
    )
    group.add_argument("--s3-bucket", default=_env("S3_BUCKET"), help="($ASYNCJOBS_S3_BUCKET)")
    group.add_argument(
        "--s3-endpoint",
        default=_env("S3_ENDPOINT"),
        help="S3 endpoint URL; unset for AWS itself ($ASYNCJOBS_S3_ENDPOINT)",
    )
    group.add_argument(
        "--s3-region", default=_env("S3_REGION", "us-east-1"), help="($ASYNCJOBS_S3_REGION)"
    )
    group.add_argument(
        "--s3-prefix",
        default=_env("S3_PREFIX"),
        help="key prefix of every object (default: asyncjobs/<namespace>/; $ASYNCJOBS_S3_PREFIX)",
    )
    group.add_argument(
        "--s3-path-style",
        action=argparse.BooleanOptionalAction,
        default=_env("S3_PATH_STYLE", "false") == "true",
        help="path-style URLs, for stores without bucket DNS names ($ASYNCJOBS_S3_PATH_STYLE)",
    )


def s3_settings(args: argparse.Namespace, namespace: str) -> S3Settings:
    if not args.s3_bucket:
        raise SystemExit("--payload-backend s3 needs --s3-bucket (or $ASYNCJOBS_S3_BUCKET)")
    prefix = args.s3_prefix if args.s3_prefix is not None else f"asyncjobs/{namespace}/"
    return S3Settings(
        bucket=args.s3_bucket,
        endpoint=args.s3_endpoint or None,
        region=args.s3_region,
        prefix=prefix,
        path_style=args.s3_path_style,
    )


@asynccontextmanager
async def open_store(
    args: argparse.Namespace, client: ObjectClient, namespace: str
) -> AsyncIterator[PayloadStore]:
    """The store the flags choose, open for the life of the process."""
    if args.payload_backend == S3:
        async with open_s3_payloads(s3_settings(args, namespace)) as store:
            yield store
    else:
        yield SecretPayloads(client, namespace)
