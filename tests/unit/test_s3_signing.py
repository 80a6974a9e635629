"""SigV4 signing of the S3 client, checked against AWS's published example and against
botocore's own signer (an independent implementation) for the requests the payload
store sends."""

from __future__ import annotations

import hashlib
from datetime import datetime
from unittest import mock

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from asyncjobs.core.s3_client import EMPTY_SHA256, Credentials, sign

EXAMPLE = Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")


def test_the_get_object_example_of_the_s3_documentation() -> None:
    headers = {
        "Range": "bytes=0-9",
        "x-amz-content-sha256": EMPTY_SHA256,
        "x-amz-date": "20130524T000000Z",
    }
    signed = sign(
        "GET",
        "examplebucket.s3.amazonaws.com",
        "/test.txt",
        "",
        headers,
        EMPTY_SHA256,
        EXAMPLE,
        "us-east-1",
    )
    assert signed["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )


def botocore_authorization(
    method: str, url: str, headers: dict[str, str], body: bytes, credentials: Credentials
) -> str:
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
    signer = S3SigV4Auth(
        BotoCredentials(credentials.access_key, credentials.secret_key, credentials.token),
        "s3",
        "eu-west-3",
    )
    fixed = datetime(2026, 11, 30, 21, 0, 0)
    with mock.patch("botocore.auth.get_current_datetime", return_value=fixed):
        signer.add_auth(request)
    return str(request.headers["Authorization"])


def test_a_put_with_metadata_and_a_session_token_signs_as_botocore_does() -> None:
    body = b'{"messages": [{"role": "user", "content": "hi"}]}'
    payload = hashlib.sha256(body).hexdigest()
    credentials = Credentials("AKIDEXAMPLE", "secret/with+chars", token="session-token")
    headers = {
        "content-type": "application/json",
        "x-amz-meta-sha256": payload,
        "x-amz-meta-job-uid": "0b7c2f6e",
        "x-amz-date": "20261130T210000Z",
        "x-amz-content-sha256": payload,
        "x-amz-security-token": "session-token",
    }
    path = "/bucket/asyncjobs/ns/0b7c2f6e-1d7a/request"
    ours = sign("PUT", "127.0.0.1:8333", path, "", dict(headers), payload, credentials, "eu-west-3")
    theirs = botocore_authorization(
        "PUT", f"http://127.0.0.1:8333{path}", headers, body, credentials
    )
    assert ours["Authorization"] == theirs


def test_a_listing_query_signs_as_botocore_does() -> None:
    headers = {"x-amz-date": "20261130T210000Z", "x-amz-content-sha256": EMPTY_SHA256}
    query = "continuation-token=a%2Fb%3D&list-type=2&prefix=asyncjobs%2Fns%2Fjob%2F"
    ours = sign(
        "GET", "s3.local", "/bucket/", query, dict(headers), EMPTY_SHA256, EXAMPLE, "eu-west-3"
    )
    theirs = botocore_authorization(
        "GET", f"http://s3.local/bucket/?{query}", headers, b"", EXAMPLE
    )
    assert ours["Authorization"] == theirs
