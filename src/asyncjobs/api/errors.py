"""The API's one error type: any answer other than success, raised wherever it is decided.

Validation, authentication, access rules, the body limit and the job store all raise
`ApiError`; the middleware alone turns it into the JSON answer (a gateway BifrostError,
or the provider's own error shape on a provider-compatible route). No view catches it.
"""

from __future__ import annotations

from collections.abc import Mapping

from asyncjobs.core.errors import BifrostError


class ApiError(Exception):
    """The HTTP status to answer and the BifrostError that explains it."""

    def __init__(
        self,
        status: int,
        message: str,
        headers: Mapping[str, str] | None = None,
        *,
        outer_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = BifrostError(message=message, status_code=status, outer_type=outer_type)
        # Extra response headers, e.g. Retry-After on a 429.
        self.headers: Mapping[str, str] = headers or {}

    @property
    def message(self) -> str:
        return self.error.message


def body_too_large(limit: int) -> ApiError:
    return ApiError(413, f"request body exceeds the maximum size of {limit} bytes")
