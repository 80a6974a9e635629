"""Request and result bodies stored in Secrets owned by their AsyncJob.

Bodies stay out of the AsyncJob (DESIGN.md §2): etcd refuses objects over 1.5 MiB,
every watcher would receive every body, and the built-in `view` role excludes Secrets.
A body larger than one Secret is split into numbered chunks; its SHA-256 is checked
when it is read back, so a partial or mixed-up read fails loudly instead of silently.

Results are stored once per provider call (`<job>-result-<call>`), never under a name
an earlier call used, and each chunk carries the body's reference in annotations: a
resumed job finds the result of the call its operator was making when it stopped, and
checks it, from the Secrets alone. Bodies are read only from Secrets that belong to the
job (its job-id label, and its uid in any AsyncJob owner reference), so a job cannot be
pointed at another job's request.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from asyncjobs.core import resources
from asyncjobs.core.kube import KubeError, KubeObject, ObjectClient
from asyncjobs.core.model import PayloadRefFields

# A Secret may hold 1 MiB of data, and its base64 form must still fit etcd's 1.5 MiB
# request limit with room for metadata; 768 KiB leaves a margin on both.
CHUNK_SIZE = 768 * 1024
DATA_KEY = "body"


class PayloadCorrupt(Exception):
    """A stored body is incomplete or does not match its recorded checksum."""


class PayloadNotOwned(Exception):
    """A referenced Secret belongs to another job (or to no job)."""


@dataclass(frozen=True)
class PayloadRef:
    secret_name: str
    chunks: int
    size: int
    sha256: str
    content_type: str

    def to_dict(self) -> PayloadRefFields:
        return PayloadRefFields(
            secretName=self.secret_name,
            chunks=self.chunks,
            size=self.size,
            sha256=self.sha256,
            contentType=self.content_type,
        )

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> PayloadRef:
        return cls(
            secret_name=str(raw["secretName"]),
            chunks=int(raw["chunks"]),
            size=int(raw["size"]),
            sha256=str(raw["sha256"]),
            content_type=str(raw["contentType"]),
        )

    def chunk_names(self) -> list[str]:
        return [f"{self.secret_name}-{index}" for index in range(self.chunks)]


def describe(
    job_id: str, kind: str, body: bytes, content_type: str, *, call: int | None = None
) -> PayloadRef:
    """The reference a body will have once stored; kind is "request" or "result", and a
    result's name carries the number of the provider call that produced it."""
    return PayloadRef(
        secret_name=stored_name(job_id, kind, call),
        chunks=max(1, -(-len(body) // CHUNK_SIZE)),
        size=len(body),
        sha256=hashlib.sha256(body).hexdigest(),
        content_type=content_type,
    )


def stored_name(job_id: str, kind: str, call: int | None = None) -> str:
    return f"{job_id}-{kind}" if call is None else f"{job_id}-{kind}-{call}"


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


async def store(
    client: ObjectClient,
    namespace: str,
    job: Mapping[str, Any],
    kind: str,
    body: bytes,
    content_type: str,
    *,
    ref: PayloadRef | None = None,
    call: int | None = None,
) -> PayloadRef:
    """Creates the Secrets for a body. A chunk that exists already is kept only if it
    holds the same bytes (a create that succeeded although its answer was lost);
    anything else raises PayloadCorrupt rather than record a reference to other bytes.

    A caller that already described the body passes its ref, so a large body is not
    hashed twice.
    """
    job_id = job["metadata"]["name"]
    ref = ref or describe(job_id, kind, body, content_type, call=call)
    path = resources.secrets_path(namespace)

    async def create(secret: KubeObject) -> None:
        try:
            await client.create(path, secret)
        except KubeError as exc:
            if exc.status != 409:
                raise
            name = secret["metadata"]["name"]
            existing = await client.get(resources.secrets_path(namespace, name))
            if _data(existing) != _data(secret):
                raise PayloadCorrupt(f"{name} exists with other bytes") from exc

    await asyncio.gather(*(create(s) for s in build_secrets(ref, job_id, kind, body, job)))
    return ref


async def load(
    client: ObjectClient, namespace: str, ref: PayloadRef, *, owner: Mapping[str, Any] | None = None
) -> bytes:
    """Reads a body back and checks it against its reference; with an owner, also that
    every chunk belongs to that job (PayloadNotOwned otherwise)."""
    secrets = await asyncio.gather(
        *(client.get(resources.secrets_path(namespace, name)) for name in ref.chunk_names())
    )
    if owner is not None:
        for secret in secrets:
            _check_owned(secret, owner)
    return _joined(secrets, ref)


async def find_result(
    client: ObjectClient, namespace: str, job: Mapping[str, Any], call: int
) -> tuple[PayloadRef, bytes] | None:
    """The result stored by provider call number `call`, if it was stored completely
    and intact; None otherwise (not stored, or cut short by a crash)."""
    first = stored_name(job["metadata"]["name"], "result", call) + "-0"
    try:
        head = await client.get(resources.secrets_path(namespace, first))
    except KubeError as exc:
        if exc.status == 404:
            return None
        raise
    try:
        _check_owned(head, job)
    except PayloadNotOwned:
        return None  # not this job's result; the repeated call stores under a new name
    ref = _annotated_ref(head)
    if ref is None:
        return None
    try:
        rest = await asyncio.gather(
            *(client.get(resources.secrets_path(namespace, n)) for n in ref.chunk_names()[1:])
        )
        return ref, _joined([head, *rest], ref)
    except KubeError as exc:
        if exc.status == 404:
            return None
        raise
    except PayloadCorrupt:
        return None


def _annotated_ref(secret: KubeObject) -> PayloadRef | None:
    annotations = secret["metadata"].get("annotations") or {}
    try:
        return PayloadRef(
            secret_name=secret["metadata"]["name"].removesuffix("-0"),
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


def _joined(secrets: list[KubeObject], ref: PayloadRef) -> bytes:
    body = b"".join(base64.b64decode(_data(secret)) for secret in secrets)
    if len(body) != ref.size or hashlib.sha256(body).hexdigest() != ref.sha256:
        raise PayloadCorrupt(f"stored body {ref.secret_name} does not match its checksum")
    return body
