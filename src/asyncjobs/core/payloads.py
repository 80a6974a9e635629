"""Where request and result bodies live: one small interface, two backends.

A job's bytes stay out of the AsyncJob (etcd refuses objects over 1.5 MiB and every
watcher would receive every body). A body is stored once under a name derived from the
job (and, for a result, from the provider call that produced it); the job records a
`PayloadRef` with its size and SHA-256, which every read checks, so a partial or
mixed-up read fails loudly instead of silently.

Backends (DESIGN.md §9):
- `secrets` (core/secret_payloads.py): Secrets owned by the job, so garbage collection
  removes them. The offline default; every byte lands in etcd, hence its quotas.
- `s3` (core/s3_payloads.py): objects in an S3-compatible bucket, written before the
  AsyncJob names them (the request before the job exists, the result before the
  terminal status), deleted with the job.

Errors are the backend's business: a caller sees PayloadMissing (nothing stored under
that name), PayloadCorrupt (stored bytes that do not match the reference),
PayloadNotOwned (stored for another job) or PayloadStoreError (the store did not
answer; `transient` when trying again later may succeed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from asyncjobs.core.large_bytes import sha256_hex, sha256_hex_now
from asyncjobs.core.model import PayloadRefFields

Backend = Literal["secrets", "s3"]
SECRETS: Final = "secrets"
S3: Final = "s3"
BACKENDS: tuple[Backend, ...] = (SECRETS, S3)

# A Secret may hold 1 MiB of data, and its base64 form must still fit etcd's 1.5 MiB
# request limit with room for metadata; 768 KiB leaves a margin on both.
CHUNK_SIZE = 768 * 1024


class PayloadMissing(Exception):
    """Nothing is stored under the referenced name."""


class PayloadCorrupt(Exception):
    """A stored body is incomplete or does not match its recorded checksum."""


class PayloadNotOwned(Exception):
    """A referenced body belongs to another job (or to no job)."""


class PayloadStoreError(Exception):
    """The store did not complete an operation; `transient` when a retry may succeed."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class PayloadRef:
    """A stored body: `name` is the Secret name prefix (secrets; chunk i is `name-i`)
    or the object key under the store's prefix (s3, always one chunk)."""

    name: str
    chunks: int
    size: int
    sha256: str
    content_type: str
    backend: Backend = SECRETS

    def to_dict(self) -> PayloadRefFields:
        fields = PayloadRefFields(
            chunks=self.chunks, size=self.size, sha256=self.sha256, contentType=self.content_type
        )
        if self.backend == S3:
            fields["objectKey"] = self.name
        else:
            fields["secretName"] = self.name
        return fields

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> PayloadRef:
        """The reference an AsyncJob records; KeyError or ValueError when malformed."""
        backend: Backend = S3 if "objectKey" in raw else SECRETS
        name = str(raw["objectKey"] if backend == S3 else raw["secretName"])
        return cls(
            name=name,
            chunks=int(raw["chunks"]),
            size=int(raw["size"]),
            sha256=str(raw["sha256"]),
            content_type=str(raw["contentType"]),
            backend=backend,
        )

    def chunk_names(self) -> list[str]:
        return [f"{self.name}-{index}" for index in range(self.chunks)]

    def matches(self, body: bytes) -> bool:
        return len(body) == self.size and sha256_hex_now(body) == self.sha256


async def body_matches(ref: PayloadRef, body: bytes) -> bool:
    """PayloadRef.matches, with a large body hashed off the loop (core/large_bytes.py)."""
    return len(body) == ref.size and await sha256_hex(body) == ref.sha256


def check_backend(ref: PayloadRef, backend: Backend) -> None:
    """A store reads only references it wrote: after a switch of backend, the bodies of
    older jobs stay where they were stored (README "Payload store")."""
    if ref.backend != backend:
        raise PayloadStoreError(
            f"{ref.name} was stored by the {ref.backend} backend; this install uses {backend}",
            transient=False,
        )


def describe(
    job_id: str,
    kind: str,
    body: bytes,
    content_type: str,
    *,
    call: int | None = None,
    backend: Backend = SECRETS,
    sha256: str | None = None,
) -> PayloadRef:
    """The reference a body will have once stored; kind is "request" or "result", and a
    result's name carries the number of the provider call that produced it. `sha256`
    is the body's, when the caller has it already (sha256_hex)."""
    return PayloadRef(
        name=stored_name(job_id, kind, call, backend),
        chunks=max(1, -(-len(body) // CHUNK_SIZE)) if backend == SECRETS else 1,
        size=len(body),
        sha256=sha256 or sha256_hex_now(body),
        content_type=content_type,
        backend=backend,
    )


def stored_name(job_id: str, kind: str, call: int | None = None, backend: Backend = SECRETS) -> str:
    """`<job>-request` / `<job>-result-<call>` for Secrets; `<job>/request` and
    `<job>/result-<call>` for objects, so one prefix holds all of a job's objects."""
    suffix = kind if call is None else f"{kind}-{call}"
    return f"{job_id}/{suffix}" if backend == S3 else f"{job_id}-{suffix}"


class PayloadStore(Protocol):
    """Stores and reads the bodies of jobs in one namespace.

    `job` arguments are AsyncJob objects (metadata name and uid are read); a store
    whose `stores_before_job` is True is also given a job that does not exist yet (no
    uid) for its request, which is how the request is stored before the AsyncJob."""

    backend: Backend
    # True when the request is written before the AsyncJob (s3); False when it must
    # follow it, because it is owned by the created object (secrets).
    stores_before_job: bool
    # True when deleting the AsyncJob deletes its bodies (owner references, secrets);
    # False when the operator deletes them when it sees the job deleted (s3).
    deleted_with_job: bool

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
        """Stores a body and returns its reference. Storing the same bytes again under
        the same name succeeds (a write whose answer was lost); other bytes under a
        name already used raise PayloadCorrupt where the backend can tell. A caller
        that already described the body passes its ref, so it is not hashed twice."""
        ...

    async def get(self, ref: PayloadRef, *, owner: Mapping[str, Any] | None = None) -> bytes:
        """The body, checked against its reference; with an owner, also that it was
        stored for that job (PayloadNotOwned otherwise)."""
        ...

    async def find_result(
        self, job: Mapping[str, Any], call: int
    ) -> tuple[PayloadRef, bytes] | None:
        """The result stored by provider call number `call`, if it was stored completely
        and intact for this job; None otherwise (not stored, or cut short by a crash)."""
        ...

    async def delete_job(self, job_id: str) -> int:
        """Removes every body stored for the job; how many were removed."""
        ...

    async def delete_body(self, ref: PayloadRef) -> None:
        """Removes one stored body (a request whose job was not created); nothing
        stored under its name is not an error."""
        ...
