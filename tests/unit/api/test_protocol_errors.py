"""A request aiohttp's parser refuses is answered 400 and logged without its content."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

Client = TestClient[web.Request, web.Application]
SECRET = "sk-bf-secret-in-a-broken-header"


async def send_raw(client: Client, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()


@pytest.mark.parametrize(
    "request_bytes",
    [
        # A NUL in a header value (what schemathesis probes with).
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nx-bf-vk: " + SECRET.encode() + b"\x00\r\n\r\n",
        # A header line without a colon.
        b"POST /v1/async/ocr HTTP/1.1\r\nHost: x\r\n" + SECRET.encode() + b"\r\n\r\n",
    ],
    ids=["nul-in-header", "no-colon"],
)
async def test_a_malformed_request_logs_one_line_without_content(
    client: Client, caplog: pytest.LogCaptureFixture, request_bytes: bytes
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiohttp.server")
    answer = await send_raw(client, request_bytes)
    assert answer.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request"), answer[:200]
    records = [record for record in caplog.records if record.name == "aiohttp.server"]
    assert records, "aiohttp logged nothing"
    for record in records:
        assert record.levelno == logging.WARNING, record.getMessage()
        assert record.exc_info is None
        assert SECRET not in record.getMessage()
    assert SECRET not in caplog.text
    assert "Traceback" not in caplog.text
