"""The `secrets` payload backend: bodies in Secrets owned by their AsyncJob.

A body larger than one Secret is split into numbered chunks. Each chunk carries the
whole body's reference in annotations, so a resumed job finds and checks the result of
the call its operator was making when it stopped from the Secrets alone. The job owns
its Secrets, so garbage collection deletes them with it, which is also why the request
is written after the AsyncJob (its uid goes into the owner reference). Bodies are read
only from Secrets that belong to the job (its job-id label, and its uid in any
AsyncJob owner reference), so a job cannot be pointed at another job's request.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from asyncjobs.core import resources
from asyncjobs.core.kube import KubeError, KubeObject, ObjectClient
from asyncjobs.core.large_bytes import sha256_hex
from asyncjobs.core.payloads import (
    CHUNK_SIZE,
    SECRETS,
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

DATA_KEY = "body"


class SecretPayloads:
    """Bodies of the jobs of one namespace, in Secrets."""

    backend: Backend = SECRETS
    deleted_with_job = True
    stores_before_job = False

    def __init__(self, client: ObjectClient, namespace: str) -> None:
        self.client = client
        self.namespace = namespace

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
        """Creates the Secrets for a body. A chunk that exists already is kept only if
        it holds the same bytes (a create that succeeded although its answer was lost);
        anything else raises PayloadCorrupt rather than record a reference to other
        bytes."""
        job_id = job["metadata"]["name"]
        if ref is None:
            digest = await sha256_hex(body)
            ref = describe(job_id, kind, body, content_type, call=call, sha256=digest)
        path = resources.secrets_path(self.namespace)

        async def create(secret: KubeObject) -> None:
            try:
                await self.client.create(path, secret)
            except KubeError as exc:
                if exc.status != 409:
                    raise
                name = secret["metadata"]["name"]
                existing = await self.client.get(resources.secrets_path(self.namespace, name))
                if _data(existing) != _data(secret):
                    raise PayloadCorrupt(f"{name} exists with other bytes") from exc

        with _store_errors():
            await asyncio.gather(*(create(s) for s in build_secrets(ref, job_id, kind, body, job)))
        return ref

    async def get(self, ref: PayloadRef, *, owner: Mapping[str, Any] | None = None) -> bytes:
        check_backend(ref, self.backend)
        with _store_errors():
            chunks = await asyncio.gather(*(self._chunk(name, owner) for name in ref.chunk_names()))
        body = b"".join(chunks)
        if not await body_matches(ref, body):
            raise PayloadCorrupt(f"stored body {ref.name} does not match its checksum")
        return body

    async def find_result(
        self, job: Mapping[str, Any], call: int
    ) -> tuple[PayloadRef, bytes] | None:
        first = stored_name(job["metadata"]["name"], "result", call) + "-0"
        try:
            with _store_errors():
                head = await self._secret(first)
        except PayloadMissing:
            return None
        try:
            _check_owned(head, job)
        except PayloadNotOwned:
            return None  # not this job's result; the repeated call stores under a new name
        ref = _annotated_ref(head)
        if ref is None:
            return None
        try:
            with _store_errors():
                rest = await asyncio.gather(*(self._secret(n) for n in ref.chunk_names()[1:]))
            return ref, joined_body([head, *rest], ref)
        except (PayloadMissing, PayloadCorrupt):
            return None

    async def delete_job(self, job_id: str) -> int:
        # Garbage collection deletes the Secrets the job owns.
        return 0

    async def delete_body(self, ref: PayloadRef) -> None:
        # A request's Secrets are created after its job and owned by it, so garbage
        # collection removes them with the job; there is no body without a job.
        return None

    async def _secret(self, name: str) -> KubeObject:
        return await self.client.get(resources.secrets_path(self.namespace, name))

    async def _chunk(self, name: str, owner: Mapping[str, Any] | None) -> bytes:
        """One chunk's bytes. The Secret (its base64 text a third larger than the bytes,
        in parsed JSON) is let go at once, so a large body is never held as all of its
        Secrets and all of its bytes together (bench/poll_memory_bench.py)."""
        secret = await self._secret(name)
        if owner is not None:
            _check_owned(secret, owner)
        return base64.b64decode(_data(secret))


@contextmanager
def _store_errors() -> Iterator[None]:
    """Turns the apiserver's errors into the payload store's."""
    try:
        yield
    except KubeError as exc:
        if exc.status == 404:
            raise PayloadMissing(str(exc)) from exc
        raise PayloadStoreError(str(exc), transient=exc.transient) from exc
    except OSError as exc:  # the connection to the apiserver broke
        raise PayloadStoreError(str(exc), transient=True) from exc


def build_secrets(
    ref: PayloadRef, job_id: str, kind: str, body: bytes, owner: Mapping[str, Any]
) -> list[KubeObject]:
    """The Secret objects that hold the body, owned by the job."""
    secrets: list[KubeObject] = []
    for index, name in enumerate(ref.chunk_names()):
        chunk = body[index * CHUNK_SIZE : (index + 1) * CHUNK_SIZE]
        secrets.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "immutable": True,
                "metadata": {
                    "name": name,
                    "labels": {
                        resources.LABEL_JOB_ID: job_id,
                        resources.LABEL_PAYLOAD: kind,
                        resources.LABEL_MANAGED_BY: resources.MANAGED_BY,
                    },
                    "annotations": {
                        resources.ANNOTATION_PAYLOAD_SIZE: str(ref.size),
                        resources.ANNOTATION_PAYLOAD_SHA256: ref.sha256,
                        resources.ANNOTATION_PAYLOAD_CHUNKS: str(ref.chunks),
                        resources.ANNOTATION_PAYLOAD_CONTENT_TYPE: ref.content_type,
                    },
                    "ownerReferences": [resources.owner_reference(owner)],
                },
                "data": {DATA_KEY: base64.b64encode(chunk).decode("ascii")},
            }
        )
    return secrets


def _annotated_ref(secret: KubeObject) -> PayloadRef | None:
    annotations = secret["metadata"].get("annotations") or {}
    try:
        return PayloadRef(
            name=secret["metadata"]["name"].removesuffix("-0"),
            chunks=int(annotations[resources.ANNOTATION_PAYLOAD_CHUNKS]),
            size=int(annotations[resources.ANNOTATION_PAYLOAD_SIZE]),
            sha256=str(annotations[resources.ANNOTATION_PAYLOAD_SHA256]),
            content_type=str(annotations[resources.ANNOTATION_PAYLOAD_CONTENT_TYPE]),
        )
    except (KeyError, ValueError):
        return None


def _check_owned(secret: KubeObject, owner: Mapping[str, Any]) -> None:
    """A Secret belongs to a job when it carries the job's id label and no AsyncJob
    owner reference to another object (a Secret applied by hand with a job may have no
    owner reference; one written by asyncjobs always has one)."""
    metadata = secret["metadata"]
    job = owner["metadata"]
    labelled = (metadata.get("labels") or {}).get(resources.LABEL_JOB_ID) == job["name"]
    owners = [
        reference.get("uid")
        for reference in metadata.get("ownerReferences") or []
        if reference.get("kind") == resources.KIND
    ]
    if not labelled or any(uid != job.get("uid") for uid in owners):
        raise PayloadNotOwned(f"{metadata['name']} does not belong to job {job['name']}")


def _data(secret: KubeObject) -> str:
    return str((secret.get("data") or {}).get(DATA_KEY, ""))


def joined_body(secrets: list[KubeObject], ref: PayloadRef) -> bytes:
    """The body held by a body's chunk Secrets, checked against its reference."""
    return checked_body(b"".join(base64.b64decode(_data(secret)) for secret in secrets), ref)


def checked_body(body: bytes, ref: PayloadRef) -> bytes:
    if not ref.matches(body):
        raise PayloadCorrupt(f"stored body {ref.name} does not match its checksum")
    return body
