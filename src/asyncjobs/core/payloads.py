"""Request and result bodies stored in Secrets owned by their AsyncJob.

Bodies stay out of the AsyncJob (DESIGN.md §2): etcd refuses objects over 1.5 MiB,
every watcher would receive every body, and the built-in `view` role excludes Secrets.
A body larger than one Secret is split into numbered chunks; its SHA-256 is checked
when it is read back, so a partial or mixed-up read fails loudly instead of silently.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from dataclasses import dataclass
from typing import Any

from asyncjobs.core import resources
from asyncjobs.core.kube import KubeClient, KubeError, KubeObject

# A Secret may hold 1 MiB of data, and its base64 form must still fit etcd's 1.5 MiB
# request limit with room for metadata; 768 KiB leaves a margin on both.
CHUNK_SIZE = 768 * 1024
DATA_KEY = "body"


class PayloadCorrupt(Exception):
    """A stored body is incomplete or does not match its recorded checksum."""


@dataclass(frozen=True)
class PayloadRef:
    secret_name: str
    chunks: int
    size: int
    sha256: str
    content_type: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "secretName": self.secret_name,
            "chunks": self.chunks,
            "size": self.size,
            "sha256": self.sha256,
            "contentType": self.content_type,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PayloadRef:
        return cls(
            secret_name=str(raw["secretName"]),
            chunks=int(raw["chunks"]),
            size=int(raw["size"]),
            sha256=str(raw["sha256"]),
            content_type=str(raw["contentType"]),
        )

    def chunk_names(self) -> list[str]:
        return [f"{self.secret_name}-{index}" for index in range(self.chunks)]


def describe(job_id: str, kind: str, body: bytes, content_type: str) -> PayloadRef:
    """The reference a body will have once stored; kind is "request" or "result"."""
    return PayloadRef(
        secret_name=f"{job_id}-{kind}",
        chunks=max(1, -(-len(body) // CHUNK_SIZE)),
        size=len(body),
        sha256=hashlib.sha256(body).hexdigest(),
        content_type=content_type,
    )


def build_secrets(
    ref: PayloadRef, job_id: str, kind: str, body: bytes, owner: KubeObject
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
                    "ownerReferences": [resources.owner_reference(owner)],
                },
                "data": {DATA_KEY: base64.b64encode(chunk).decode("ascii")},
            }
        )
    return secrets


async def store(
    client: KubeClient,
    namespace: str,
    job: KubeObject,
    kind: str,
    body: bytes,
    content_type: str,
    *,
    ref: PayloadRef | None = None,
) -> PayloadRef:
    """Creates the Secrets for a body; an existing identical chunk (a retry) is kept.

    A caller that already described the body passes its ref, so a large body is not
    hashed twice.
    """
    job_id = job["metadata"]["name"]
    ref = ref or describe(job_id, kind, body, content_type)
    path = resources.secrets_path(namespace)

    async def create(secret: KubeObject) -> None:
        try:
            await client.create(path, secret)
        except KubeError as exc:
            if exc.status != 409:
                raise

    await asyncio.gather(*(create(s) for s in build_secrets(ref, job_id, kind, body, job)))
    return ref


async def load(client: KubeClient, namespace: str, ref: PayloadRef) -> bytes:
    """Reads a body back and checks it against its reference."""
    secrets = await asyncio.gather(
        *(client.get(resources.secrets_path(namespace, name)) for name in ref.chunk_names())
    )
    body = b"".join(base64.b64decode(s.get("data", {}).get(DATA_KEY, "")) for s in secrets)
    if len(body) != ref.size or hashlib.sha256(body).hexdigest() != ref.sha256:
        raise PayloadCorrupt(f"stored body {ref.secret_name} does not match its checksum")
    return body
