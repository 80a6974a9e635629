"""Payload references and the Secrets that hold a body (no cluster needed)."""

from __future__ import annotations

import base64

import pytest

from asyncjobs.core import payloads, resources

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
    secrets = payloads.build_secrets(ref, "job-1", "request", body, OWNER)
    assert ref.chunks == len(secrets) == chunks
    rebuilt = b"".join(base64.b64decode(s["data"][payloads.DATA_KEY]) for s in secrets)
    assert rebuilt == body


def test_chunk_secrets_are_owned_labelled_and_immutable() -> None:
    ref = payloads.describe("job-1", "result", b"{}", "application/json")
    (secret,) = payloads.build_secrets(ref, "job-1", "result", b"{}", OWNER)
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
