"""The payload store the tests' own writes and reads go through.

The backend comes from the environment, exactly as the API's and the operator's do
($ASYNCJOBS_PAYLOADS and the $ASYNCJOBS_S3_* settings, core/payload_stores.py), so the
integration suite runs unchanged against either backend: scripts/test runs it once
with each. A test that checks one backend's own mechanics (Secret chunks, garbage
collection of owned Secrets) says so with `needs_backend`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from asyncjobs.core import payload_stores, payloads, resources, secret_payloads
from asyncjobs.core.kube import KubeClient, ObjectClient
from asyncjobs.core.payloads import S3, SECRETS, Backend, PayloadStore
from asyncjobs.core.s3_payloads import S3Payloads
from asyncjobs.core.secret_payloads import SecretPayloads


def backend() -> Backend:
    return S3 if os.environ.get("ASYNCJOBS_PAYLOADS") == S3 else SECRETS


def needs_backend(wanted: Backend) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        backend() != wanted, reason=f"checks the {wanted} backend's own mechanics"
    )


def settings() -> argparse.Namespace:
    """The payload flags as the processes read them: all from the environment."""
    parser = argparse.ArgumentParser()
    payload_stores.add_arguments(parser)
    return parser.parse_args([])


@asynccontextmanager
async def open_bodies(client: ObjectClient, namespace: str) -> AsyncIterator[PayloadStore]:
    async with payload_stores.open_store(settings(), client, namespace) as store:
        yield store


def stored_name(job_id: str, kind: str, call: int | None = None) -> str:
    """The name a body of the job has in the backend under test."""
    return payloads.stored_name(job_id, kind, call, backend())


async def object_keys(store: PayloadStore, job_id: str) -> list[str]:
    """The keys stored for a job in an object store, prefix removed."""
    assert isinstance(store, S3Payloads)
    listed = await store.client.list_keys(f"{store.prefix}{job_id}/")
    return sorted(key.removeprefix(store.prefix) for key in listed)


async def corrupt(store: PayloadStore, ref: payloads.PayloadRef) -> None:
    """Stores the body again one byte different, keeping everything else (labels, owner,
    metadata), as a bit flip or a bad restore would leave it."""
    body = bytearray(await store.get(ref))
    body[-1] = ord(" ") if body[-1] != ord(" ") else ord("\n")
    if isinstance(store, S3Payloads):
        key = store.prefix + ref.name
        stored = await store.client.get_object(key)
        await store.client.put_object(key, bytes(body), stored.content_type, stored.metadata)
        return
    assert isinstance(store, SecretPayloads)
    assert isinstance(store.client, KubeClient)
    path = resources.secrets_path(store.namespace, ref.chunk_names()[-1])
    secret = await store.client.get(path)
    tail = body[(ref.chunks - 1) * payloads.CHUNK_SIZE :]
    metadata = secret["metadata"]
    await store.client.delete(path)
    await store.client.create(
        resources.secrets_path(store.namespace),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": secret.get("type", "Opaque"),
            "immutable": True,
            "metadata": {
                key: metadata[key]
                for key in ("name", "labels", "annotations", "ownerReferences")
                if key in metadata
            },
            "data": {secret_payloads.DATA_KEY: base64.b64encode(bytes(tail)).decode()},
        },
    )


async def remove(store: PayloadStore, ref: payloads.PayloadRef) -> None:
    """Deletes the stored body (every chunk), as a lost volume or a manual clean-up would."""
    if isinstance(store, S3Payloads):
        await store.client.delete_object(store.prefix + ref.name)
        return
    assert isinstance(store, SecretPayloads)
    assert isinstance(store.client, KubeClient)
    for name in ref.chunk_names():
        await store.client.delete(resources.secrets_path(store.namespace, name))


async def stored_bodies(client: KubeClient, namespace: str, job_id: str | None = None) -> int:
    """How many bodies (Secret chunks or objects) are stored for the job, or for every
    job of the namespace."""
    async with open_bodies(client, namespace) as store:
        if isinstance(store, S3Payloads):
            prefix = store.prefix + (f"{job_id}/" if job_id else "")
            return len(await store.client.list_keys(prefix))
    selector = resources.LABEL_JOB_ID + (f"={job_id}" if job_id else "")
    secrets = await client.list(resources.secrets_path(namespace), labelSelector=selector)
    return len(secrets.get("items", []))


async def wait_no_bodies(
    client: KubeClient, namespace: str, job_id: str, timeout: float = 60
) -> None:
    """Waits until nothing is stored for a deleted job: garbage collection removes its
    Secrets, the operator its objects."""
    deadline = time.monotonic() + timeout
    while await stored_bodies(client, namespace, job_id):
        assert time.monotonic() < deadline, f"bodies of {job_id} still stored after {timeout}s"
        await asyncio.sleep(0.2)
