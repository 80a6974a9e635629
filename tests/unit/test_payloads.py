"""Payload references and the Secrets that hold a body (no cluster needed)."""

from __future__ import annotations

import base64
import hashlib

import pytest

from asyncjobs.core import large_bytes, payloads, resources, secret_payloads
from asyncjobs.core.secret_payloads import SecretPayloads
from tests.unit.controller.fakes import FakeSecrets

OWNER = {"metadata": {"name": "job-1", "uid": "uid-1"}}


@pytest.mark.parametrize(
    ("size", "chunks"),
    [
        (0, 1),
        (1, 1),
        (payloads.CHUNK_SIZE, 1),
        (payloads.CHUNK_SIZE + 1, 2),
        (3 * payloads.CHUNK_SIZE, 3),
    ],
    ids=["empty", "one-byte", "exactly-one-chunk", "one-byte-over", "three-chunks"],
)
def test_body_is_split_into_the_fewest_chunks(size: int, chunks: int) -> None:
    body = b"x" * size
    ref = payloads.describe("job-1", "request", body, "application/json")
    secrets = secret_payloads.build_secrets(ref, "job-1", "request", body, OWNER)
    assert ref.chunks == len(secrets) == chunks
    rebuilt = b"".join(base64.b64decode(s["data"][secret_payloads.DATA_KEY]) for s in secrets)
    assert rebuilt == body


def test_chunk_secrets_are_owned_labelled_and_immutable() -> None:
    ref = payloads.describe("job-1", "result", b"{}", "application/json")
    (secret,) = secret_payloads.build_secrets(ref, "job-1", "result", b"{}", OWNER)
    assert secret["metadata"]["name"] == "job-1-result-0"
    assert secret["metadata"]["labels"][resources.LABEL_JOB_ID] == "job-1"
    assert secret["metadata"]["labels"][resources.LABEL_PAYLOAD] == "result"
    owner = secret["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("AsyncJob", "job-1", "uid-1")
    assert secret["immutable"] is True


def test_reference_round_trips_through_its_resource_form() -> None:
    ref = payloads.describe("job-1", "request", b"abc", "text/plain")
    assert payloads.PayloadRef.from_dict(ref.to_dict()) == ref
    assert ref.sha256 == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


async def test_a_second_store_onto_other_bytes_is_refused_not_recorded() -> None:
    secrets = FakeSecrets()
    client = secrets
    await SecretPayloads(client, "ns").put(OWNER, "result", b"first", "text/plain", call=1)
    with pytest.raises(payloads.PayloadCorrupt):
        await SecretPayloads(client, "ns").put(OWNER, "result", b"second", "text/plain", call=1)
    # The same bytes again (a create whose answer was lost) are accepted.
    ref = await SecretPayloads(client, "ns").put(OWNER, "result", b"first", "text/plain", call=1)
    assert await SecretPayloads(client, "ns").get(ref, owner=OWNER) == b"first"


async def test_only_the_jobs_own_secrets_are_read() -> None:
    secrets = FakeSecrets()
    client = secrets
    other = {"metadata": {"name": "job-2", "uid": "uid-2"}}
    ref = await SecretPayloads(client, "ns").put(other, "request", b"secret prompt", "text/plain")
    with pytest.raises(payloads.PayloadNotOwned):
        await SecretPayloads(client, "ns").get(ref, owner=OWNER)
    # Same name and label as job-1's, but owned by another object of that name (a
    # deleted and re-created job): refused too.
    impostor = {"metadata": {"name": "job-1", "uid": "uid-old"}}
    ref = await SecretPayloads(client, "ns").put(impostor, "request", b"old", "text/plain")
    with pytest.raises(payloads.PayloadNotOwned):
        await SecretPayloads(client, "ns").get(ref, owner=OWNER)


async def test_a_request_applied_by_hand_without_an_owner_is_read_by_its_label() -> None:
    secrets = FakeSecrets()
    ref = payloads.describe("job-1", "request", b"{}", "application/json")
    (secret,) = secret_payloads.build_secrets(ref, "job-1", "request", b"{}", OWNER)
    del secret["metadata"]["ownerReferences"]
    secrets.objects[secret["metadata"]["name"]] = secret
    assert await SecretPayloads(secrets, "ns").get(ref, owner=OWNER) == b"{}"


async def test_find_result_needs_every_chunk_and_the_right_digest() -> None:
    secrets = FakeSecrets()
    client = secrets
    assert await SecretPayloads(client, "ns").find_result(OWNER, 1) is None
    body = b"y" * (payloads.CHUNK_SIZE + 1)
    ref = await SecretPayloads(client, "ns").put(OWNER, "result", body, "application/json", call=1)
    assert await SecretPayloads(client, "ns").find_result(OWNER, 1) == (ref, body)
    del secrets.objects["job-1-result-1-1"]
    assert await SecretPayloads(client, "ns").find_result(OWNER, 1) is None


async def test_find_result_ignores_a_secret_of_another_job_under_the_name() -> None:
    secrets = FakeSecrets()
    impostor = {"metadata": {"name": "job-1", "uid": "uid-old"}}
    await SecretPayloads(secrets, "ns").put(impostor, "result", b"{}", "application/json", call=1)
    assert await SecretPayloads(secrets, "ns").find_result(OWNER, 1) is None


async def test_a_reference_of_the_other_backend_is_a_clear_lasting_error() -> None:
    secrets = FakeSecrets()
    ref = payloads.describe("job-1", "request", b"{}", "application/json", backend="s3")
    with pytest.raises(payloads.PayloadStoreError, match="stored by the s3 backend") as raised:
        await SecretPayloads(secrets, "ns").get(ref)
    assert not raised.value.transient
    assert secrets.reads == []


async def test_a_large_body_is_checked_against_its_reference() -> None:
    large = b"x" * (large_bytes.IN_THREAD_BYTES + 1)
    ref = payloads.describe("j", "result", large, "application/json", call=1)
    assert ref.sha256 == hashlib.sha256(large).hexdigest()
    assert await payloads.body_matches(ref, large)
    assert not await payloads.body_matches(ref, large[:-1] + b"y")
