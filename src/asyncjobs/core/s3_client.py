"""A small S3 client: the four calls the payload store makes, signed with AWS SigV4 and
sent with aiohttp.

Measured before choosing (bench/README.md): aiobotocore spends 4.5-4.7 CPU-ms per put
or get of a 2 KiB object on this machine, most of it in botocore's event hooks,
response parsing and endpoint machinery, which made the s3 backend cost more CPU per
job than Secrets. These calls need none of that: a signed PUT, GET, DELETE and a
ListObjectsV2, with the answer's status and headers. botocore still resolves the
credentials (environment, web identity, instance role; refreshed before they expire),
which is the part worth a well-kept library.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import io
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

import aiohttp

from asyncjobs.core import large_bytes

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_ERROR_CODE = re.compile(rb"<Code>([^<]*)</Code>")
_KEY = re.compile(r"<Key>([^<]*)</Key>")
_NEXT_TOKEN = re.compile(r"<NextContinuationToken>([^<]*)</NextContinuationToken>")


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    token: str | None = None


# Returns the credentials to sign with now (refreshed by the source when they expire).
CredentialSource = Callable[[], Awaitable[Credentials]]


class S3Error(Exception):
    """An answer other than success: the HTTP status (0: no answer) and S3's error code."""

    def __init__(self, status: int, code: str) -> None:
        super().__init__(f"{status} {code}".strip())
        self.status = status
        self.code = code


@dataclass(frozen=True)
class StoredObject:
    body: bytes
    content_type: str
    metadata: dict[str, str]  # x-amz-meta-* headers, prefix removed, names lower-case


class S3Client:
    """One bucket of one S3-compatible store."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        credentials: CredentialSource,
        *,
        bucket: str,
        region: str,
        endpoint: str | None = None,
        path_style: bool = False,
    ) -> None:
        self.session = session
        self.credentials = credentials
        self.bucket = bucket
        self.region = region
        base = urlsplit(endpoint or f"https://s3.{region}.amazonaws.com")
        if path_style:
            self._origin = f"{base.scheme}://{base.netloc}"
            self._root = f"/{bucket}/"
        else:
            self._origin = f"{base.scheme}://{bucket}.{base.netloc}"
            self._root = "/"
        self._host = urlsplit(self._origin).netloc
        self._keys = _SigningKeys()

    async def put_object(
        self,
        key: str,
        body: bytes,
        content_type: str,
        metadata: Mapping[str, str],
        *,
        sha256: str | None = None,
    ) -> None:
        """Stores an object; `sha256` (hex) spares hashing a body already hashed."""
        headers = {f"x-amz-meta-{name}": value for name, value in metadata.items()}
        headers["content-type"] = content_type
        await self._call("PUT", key, body=body, headers=headers, sha256=sha256)

    async def get_object(self, key: str) -> StoredObject:
        body, headers = await self._call("GET", key)
        metadata = {
            name.lower().removeprefix("x-amz-meta-"): value
            for name, value in headers.items()
            if name.lower().startswith("x-amz-meta-")
        }
        return StoredObject(body, headers.get("Content-Type", ""), metadata)

    async def delete_object(self, key: str) -> None:
        await self._call("DELETE", key)

    async def list_keys(self, prefix: str) -> list[str]:
        """Every key under the prefix (ListObjectsV2, page by page)."""
        keys: list[str] = []
        query = {"list-type": "2", "prefix": prefix}
        while True:
            body, _ = await self._call("GET", "", query=query)
            text = body.decode()
            keys.extend(html.unescape(found) for found in _KEY.findall(text))
            token = _NEXT_TOKEN.search(text)
            if token is None:
                return keys
            query = {**query, "continuation-token": html.unescape(token.group(1))}

    async def _call(
        self,
        method: str,
        key: str,
        *,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        sha256: str | None = None,
    ) -> tuple[bytes, Mapping[str, str]]:
        path = self._root + quote(key, safe="/~")
        canonical_query = _canonical_query(query or {})
        signed = await self._signed(
            method, path, canonical_query, dict(headers or {}), sha256 or _sha256(body)
        )
        url = self._origin + path + (f"?{canonical_query}" if canonical_query else "")
        try:
            # A stream, not bytes: aiohttp writes large bytes in one go and warns about it.
            data = io.BytesIO(body) if body else None
            async with self.session.request(
                method, url, data=data, headers=signed, allow_redirects=False
            ) as answer:
                # Joined off the loop: a result may be tens of MiB.
                content = await large_bytes.read_all(answer.content)
                if answer.status >= 300:
                    code = _ERROR_CODE.search(content)
                    raise S3Error(answer.status, code.group(1).decode() if code else "")
                return content, answer.headers
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise S3Error(0, type(exc).__name__) from exc

    async def _signed(
        self, method: str, path: str, query: str, headers: dict[str, str], payload: str
    ) -> dict[str, str]:
        """The headers with AWS Signature Version 4 added (every header given is signed,
        and the host; the payload's SHA-256 is sent and signed, as S3 requires)."""
        credentials = await self.credentials()
        now = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        headers["x-amz-date"] = now
        headers["x-amz-content-sha256"] = payload
        if credentials.token:
            headers["x-amz-security-token"] = credentials.token
        return sign(
            method,
            self._host,
            path,
            query,
            headers,
            payload,
            credentials,
            self.region,
            self._keys.get(credentials.secret_key, now[:8], self.region),
        )


def sign(
    method: str,
    host: str,
    path: str,
    query: str,
    headers: dict[str, str],
    payload: str,
    credentials: Credentials,
    region: str,
    signing_key: bytes | None = None,
) -> dict[str, str]:
    """SigV4 for S3 (a pure function of its inputs; `headers`, all of which are signed,
    must hold x-amz-date)."""
    amz_date = headers["x-amz-date"]
    to_sign = {"host": host}
    to_sign.update((name.lower(), value.strip()) for name, value in headers.items())
    names = sorted(to_sign)
    canonical_headers = "".join(f"{name}:{to_sign[name]}\n" for name in names)
    signed_headers = ";".join(names)
    canonical_request = "\n".join([method, path, query, canonical_headers, signed_headers, payload])
    scope = f"{amz_date[:8]}/{region}/s3/aws4_request"
    string_to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, _sha256(canonical_request.encode())]
    )
    key = signing_key or signing_key_for(credentials.secret_key, amz_date[:8], region)
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    return {
        **headers,
        "Authorization": (
            f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={signed_headers}, Signature={signature}"
        ),
    }


def signing_key_for(secret_key: str, date: str, region: str) -> bytes:
    key = f"AWS4{secret_key}".encode()
    for part in (date, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


class _SigningKeys:
    """The derived key changes once a day (and with the credentials): derive it once."""

    def __init__(self) -> None:
        self._for: tuple[str, str, str] | None = None
        self._key = b""

    def get(self, secret_key: str, date: str, region: str) -> bytes:
        if self._for != (secret_key, date, region):
            self._key = signing_key_for(secret_key, date, region)
            self._for = (secret_key, date, region)
        return self._key


def _canonical_query(query: Mapping[str, str]) -> str:
    return "&".join(
        f"{quote(name, safe='-_.~')}={quote(value, safe='-_.~')}"
        for name, value in sorted(query.items())
    )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
