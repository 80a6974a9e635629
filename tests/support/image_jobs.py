"""Drives an API (the one in the image, for scripts/image-test) through one job of every
request type with the offline `local` provider, as a Bifrost client would: submit, poll
to a 200, check the result names the request type. Also checks /openapi.json.

Usage: python -m tests.support.image_jobs http://127.0.0.1:PORT
With ASYNCJOBS_GATEWAY_TOKEN set, every request carries it (the chart's default requires
it). Exits non-zero with the reason on the first thing that is wrong.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

import aiohttp

from asyncjobs.core import multipart
from asyncjobs.core.request_types import REQUEST_TYPES, RequestType
from tests.unit.providers.samples import FORM_FIELDS, FORM_FILES, JSON_BODIES, SAMPLE_FILE

MODEL = "local/image-test"
POLL_SECONDS = 60


def request_body(request_type: RequestType) -> tuple[bytes, str]:
    """The sample request of this type, addressed to the `local` provider."""
    if request_type in FORM_FIELDS:
        files = [
            multipart.FilePart(name, filename, content_type, SAMPLE_FILE)
            for name, filename, content_type in FORM_FILES[request_type]
        ]
        fields = [("model", MODEL), *FORM_FIELDS[request_type]]
        return multipart.encode(multipart.Form(fields, files))
    body = {**JSON_BODIES[request_type], "model": MODEL}
    return json.dumps(body).encode(), "application/json"


async def submit(session: aiohttp.ClientSession, base: str, request_type: RequestType) -> str:
    body, content_type = request_body(request_type)
    path = base + REQUEST_TYPES[request_type].submit_path
    async with session.post(path, data=body, headers={"Content-Type": content_type}) as answer:
        document = await answer.json()
        if answer.status != 202:
            raise AssertionError(f"{request_type}: submit answered {answer.status}: {document}")
        return str(document["id"])


async def poll(
    session: aiohttp.ClientSession, base: str, request_type: RequestType, job_id: str
) -> dict[str, Any]:
    path = f"{base}{REQUEST_TYPES[request_type].submit_path}/{job_id}"
    deadline = time.monotonic() + POLL_SECONDS
    while time.monotonic() < deadline:
        async with session.get(path) as answer:
            document: dict[str, Any] = await answer.json()
            if answer.status == 200:
                return document
            if answer.status != 202:
                raise AssertionError(f"{request_type}: poll answered {answer.status}: {document}")
        await asyncio.sleep(0.2)
    raise AssertionError(f"{request_type}: job {job_id} not done after {POLL_SECONDS}s")


async def check_openapi(session: aiohttp.ClientSession, base: str) -> None:
    async with session.get(base + "/openapi.json") as answer:
        if answer.status != 200:
            raise AssertionError(f"/openapi.json answered {answer.status}")
        document = await answer.json()
    if not str(document.get("openapi", "")).startswith("3."):
        raise AssertionError("/openapi.json is not an OpenAPI 3 document")


async def check_token_required(base: str) -> None:
    """The chart's default: a submit without the gateway token is refused."""
    body, content_type = request_body(RequestType.CHAT_COMPLETION)
    path = base + REQUEST_TYPES[RequestType.CHAT_COMPLETION].submit_path
    async with (
        aiohttp.ClientSession() as anonymous,
        anonymous.post(path, data=body, headers={"Content-Type": content_type}) as answer,
    ):
        if answer.status != 401:
            raise AssertionError(f"a submit without the gateway token answered {answer.status}")


async def drive(base: str) -> None:
    token = os.environ.get("ASYNCJOBS_GATEWAY_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if token:
        await check_token_required(base)
        print("a submit without the gateway token: 401")
    async with aiohttp.ClientSession(headers=headers) as session:
        await check_openapi(session, base)
        print("/openapi.json: 200, OpenAPI 3")
        submitted = {rt: await submit(session, base, rt) for rt in RequestType}
        for request_type, job_id in submitted.items():
            document = await poll(session, base, request_type, job_id)
            extra = document.get("result", {}).get("extra_fields", {})
            if document.get("status") != "completed" or extra.get("provider") != "local":
                raise AssertionError(f"{request_type}: {document.get('error') or document}")
            if extra.get("request_type") != request_type.value:
                raise AssertionError(f"{request_type}: result is of type {extra}")
            print(f"{request_type.value}: completed ({job_id})")


def main() -> None:
    try:
        asyncio.run(drive(sys.argv[1].rstrip("/")))
    except AssertionError as exc:
        sys.exit(f"image jobs: {exc}")


if __name__ == "__main__":
    main()
