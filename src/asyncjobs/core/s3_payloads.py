"""The `s3` payload backend: bodies as objects in an S3-compatible bucket.

Any S3-compatible store works (AWS S3, GCS interop, Ceph RGW, SeaweedFS, MinIO) through
the small SigV4 client in s3_client.py; botocore's credential chain supplies the keys:
from the environment (a Secret in the chart) or the pod's workload identity.

Objects live under `<prefix><job>/`: `request` and `result-<call>`. The request is
written before its AsyncJob exists and the result before the terminal status names it,
so a reference never points at bytes that are not there. Each object carries the
body's SHA-256 (and, for results, the job's uid) as user metadata, so a resumed job
can find and check the result of an interrupted call from the object alone; every
read checks the bytes against the reference. Objects are deleted when their job is;
a bucket lifecycle rule on the prefix is the backstop for jobs deleted while no
operator ran.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiobotocore.session import AioSession

from asyncjobs.core.large_bytes import sha256_hex
from asyncjobs.core.payloads import (
    S3,
    Backend,
    PayloadCorrupt,
    PayloadMissing,
    PayloadNotOwned,
    PayloadRef,
    PayloadStoreError,
    body_matches,
    check_backend,
    describe,
    stored_name,
)
from asyncjobs.core.s3_client import Credentials, CredentialSource, S3Client, S3Error

META_SHA256 = "sha256"
META_JOB_UID = "job-uid"
_MISSING_CODES = {"NoSuchKey", "NotFound"}
# S3's own answers that mean "later": throttling and server trouble.
_TRANSIENT_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"}


@dataclass(frozen=True)
class S3Settings:
    bucket: str
    endpoint: str | None = None  # None: AWS's own endpoint for the region
    region: str = "us-east-1"
    prefix: str = ""
    path_style: bool = False
    # Seconds for one call, connection included.
    timeout: float = 10.0
    max_connections: int = 64


class S3Payloads:
    """Bodies of the jobs of one install, in one bucket under one prefix."""

    backend: Backend = S3
    deleted_with_job = False
    stores_before_job = True

    def __init__(self, client: S3Client, settings: S3Settings) -> None:
        self.client = client
        self.bucket = settings.bucket
        self.prefix = settings.prefix

    async def put(
        self,
        job: Mapping[str, Any],
        kind: str,
        body: bytes,
        content_type: str,
        *,
        ref: PayloadRef | None = None,
        call: int | None = None,
    ) -> PayloadRef:
        # Writing the same key again is harmless: the name is per job and per call, and
        # the claim keeps two operators from making the same call at once.
        job_id = job["metadata"]["name"]
        if ref is None:
            digest = await sha256_hex(body)
            ref = describe(job_id, kind, body, content_type, call=call, backend=S3, sha256=digest)
        metadata = {META_SHA256: ref.sha256}
        uid = job["metadata"].get("uid")
        if uid:
            metadata[META_JOB_UID] = uid
        with _store_errors():
            await self.client.put_object(
                self.prefix + ref.name, body, ref.content_type, metadata, sha256=ref.sha256
            )
        return ref

    async def get(self, ref: PayloadRef, *, owner: Mapping[str, Any] | None = None) -> bytes:
        check_backend(ref, self.backend)
        if owner is not None and not ref.name.startswith(owner["metadata"]["name"] + "/"):
            raise PayloadNotOwned(f"{ref.name} does not belong to job {owner['metadata']['name']}")
        with _store_errors():
            stored = await self.client.get_object(self.prefix + ref.name)
        if not await body_matches(ref, stored.body):
            raise PayloadCorrupt(f"stored body {ref.name} does not match its checksum")
        return stored.body

    async def find_result(
        self, job: Mapping[str, Any], call: int
    ) -> tuple[PayloadRef, bytes] | None:
        metadata = job["metadata"]
        name = stored_name(metadata["name"], "result", call, S3)
        try:
            with _store_errors():
                stored = await self.client.get_object(self.prefix + name)
        except PayloadMissing:
            return None
        if stored.metadata.get(META_JOB_UID) != metadata.get("uid"):
            return None  # another job's (an earlier one of the same name)
        ref = PayloadRef(
            name=name,
            chunks=1,
            size=len(stored.body),
            sha256=await sha256_hex(stored.body),
            content_type=stored.content_type,
            backend=S3,
        )
        return (ref, stored.body) if stored.metadata.get(META_SHA256) == ref.sha256 else None

    async def delete_job(self, job_id: str) -> int:
        with _store_errors():
            keys = await self.client.list_keys(f"{self.prefix}{job_id}/")
            await asyncio.gather(*(self.client.delete_object(key) for key in keys))
        return len(keys)

    async def delete_body(self, ref: PayloadRef) -> None:
        with _store_errors():
            await self.client.delete_object(self.prefix + ref.name)


async def botocore_credentials() -> CredentialSource:
    """botocore's credential chain: environment, web identity, container or instance
    role; refreshable ones are refreshed before they expire."""
    found = await AioSession().get_credentials()
    if found is None:
        raise SystemExit(
            "the s3 payload backend found no credentials: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (a Secret in the chart) or give the pod a workload identity"
        )

    async def current() -> Credentials:
        frozen = await found.get_frozen_credentials()
        return Credentials(frozen.access_key or "", frozen.secret_key or "", frozen.token)

    return current


@asynccontextmanager
async def open_s3_payloads(settings: S3Settings) -> AsyncIterator[S3Payloads]:
    """An S3 payload store with its connection pool, closed on exit."""
    credentials = await botocore_credentials()
    connector = aiohttp.TCPConnector(limit=settings.max_connections)
    timeout = aiohttp.ClientTimeout(total=settings.timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        client = S3Client(
            session,
            credentials,
            bucket=settings.bucket,
            region=settings.region,
            endpoint=settings.endpoint,
            path_style=settings.path_style,
        )
        yield S3Payloads(client, settings)


@contextmanager
def _store_errors() -> Iterator[None]:
    """Turns the store's answers into the payload store's errors."""
    try:
        yield
    except S3Error as exc:
        if exc.code in _MISSING_CODES or (exc.status == 404 and not exc.code):
            raise PayloadMissing(str(exc)) from exc
        transient = (
            exc.status == 0
            or exc.status >= 500
            or exc.status == 429
            or exc.code in _TRANSIENT_CODES
        )
        raise PayloadStoreError(f"the object store answered {exc}", transient=transient) from exc
