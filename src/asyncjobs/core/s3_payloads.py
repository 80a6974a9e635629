"""The `s3` payload backend: bodies as objects in an S3-compatible bucket.

Any S3-compatible store works (AWS S3, GCS interop, Ceph RGW, SeaweedFS, MinIO) through
aiobotocore, which also brings botocore's credential chain: keys from the environment
(a Secret in the chart) or the pod's workload identity.

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

import hashlib
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from asyncjobs.core.payloads import (
    S3,
    Backend,
    PayloadCorrupt,
    PayloadMissing,
    PayloadNotOwned,
    PayloadRef,
    PayloadStoreError,
    check_backend,
    describe,
    stored_name,
)

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

META_SHA256 = "sha256"
META_JOB_UID = "job-uid"
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}
# S3's own answers that mean "later": throttling and server trouble.
_TRANSIENT_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"}


@dataclass(frozen=True)
class S3Settings:
    bucket: str
    endpoint: str | None = None  # None: AWS's own endpoint for the region
    region: str = "us-east-1"
    prefix: str = ""
    path_style: bool = False
    # Seconds for one connection and one read; botocore retries within them.
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
        ref = ref or describe(job_id, kind, body, content_type, call=call, backend=S3)
        metadata = {META_SHA256: ref.sha256}
        uid = job["metadata"].get("uid")
        if uid:
            metadata[META_JOB_UID] = uid
        with _store_errors():
            await self.client.put_object(
                Bucket=self.bucket,
                Key=self.prefix + ref.name,
                Body=body,
                ContentType=ref.content_type,
                Metadata=metadata,
            )
        return ref

    async def get(self, ref: PayloadRef, *, owner: Mapping[str, Any] | None = None) -> bytes:
        check_backend(ref, self.backend)
        if owner is not None and not ref.name.startswith(owner["metadata"]["name"] + "/"):
            raise PayloadNotOwned(f"{ref.name} does not belong to job {owner['metadata']['name']}")
        body, _ = await self._read(ref.name)
        if not ref.matches(body):
            raise PayloadCorrupt(f"stored body {ref.name} does not match its checksum")
        return body

    async def find_result(
        self, job: Mapping[str, Any], call: int
    ) -> tuple[PayloadRef, bytes] | None:
        metadata = job["metadata"]
        name = stored_name(metadata["name"], "result", call, S3)
        try:
            body, head = await self._read(name)
        except PayloadMissing:
            return None
        if head.get(META_JOB_UID) != metadata.get("uid"):
            return None  # another job's (an earlier one of the same name)
        ref = PayloadRef(
            name=name,
            chunks=1,
            size=len(body),
            sha256=hashlib.sha256(body).hexdigest(),
            content_type=str(head.get("content-type", "")),
            backend=S3,
        )
        return (ref, body) if head.get(META_SHA256) == ref.sha256 else None

    async def delete_job(self, job_id: str) -> int:
        prefix = f"{self.prefix}{job_id}/"
        with _store_errors():
            listed = await self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
            keys = [item["Key"] for item in listed.get("Contents", []) if "Key" in item]
            if keys:
                await self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True},
                )
        return len(keys)

    async def _read(self, name: str) -> tuple[bytes, dict[str, str]]:
        """The object's bytes and its user metadata (plus its content type)."""
        with _store_errors():
            answer = await self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)
            async with answer["Body"] as stream:
                body = await stream.read()
        head = dict(answer.get("Metadata", {}))
        head["content-type"] = answer.get("ContentType", "")
        return body, head


@asynccontextmanager
async def open_s3_payloads(settings: S3Settings) -> AsyncIterator[S3Payloads]:
    """An S3 payload store with its connection pool, closed on exit."""
    config = AioConfig(
        s3={"addressing_style": "path" if settings.path_style else "auto"},
        connect_timeout=settings.timeout,
        read_timeout=settings.timeout,
        max_pool_connections=settings.max_connections,
        retries={"max_attempts": 3, "mode": "standard"},
    )
    session = get_session()
    async with session.create_client(
        "s3", region_name=settings.region, endpoint_url=settings.endpoint, config=config
    ) as client:
        yield S3Payloads(client, settings)


@contextmanager
def _store_errors() -> Iterator[None]:
    """Turns botocore's and the transport's errors into the payload store's."""
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        if code in _MISSING_CODES:
            raise PayloadMissing(code) from exc
        transient = code in _TRANSIENT_CODES or status >= 500 or status == 429
        raise PayloadStoreError(
            f"the object store answered {status} {code}", transient=transient
        ) from exc
    except (BotoCoreError, aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise PayloadStoreError(
            f"the object store is unreachable ({type(exc).__name__})", transient=True
        ) from exc
