"""JSON responses in the contract's shapes, serialised compactly in one place."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from asyncjobs.core.errors import gateway_error


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def json_response(value: Any, status: int = 200) -> web.Response:
    return web.Response(text=dumps(value), status=status, content_type="application/json")


def error_response(status: int, message: str) -> web.Response:
    """A gateway BifrostError: `{is_bifrost_error: false, status_code, error, extra_fields}`."""
    return json_response(gateway_error(status, message), status=status)
