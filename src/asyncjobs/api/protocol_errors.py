"""A request aiohttp cannot parse is logged as one line, without its content.

aiohttp answers a request its HTTP parser refuses (a NUL or a line break in a header
value, a malformed request line, a bad chunk) with a plain 400 before any route or
middleware sees it, and logs it as an ERROR with a traceback whose message quotes the
offending line: a header that may carry a virtual key or a gateway token. Any client
could fill the log with those. A filter on aiohttp's server logger rewrites such a
record as a WARNING naming only the kind of error; a server error keeps its traceback.
"""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import HttpProcessingError

SERVER_LOGGER = "aiohttp.server"


class MalformedRequestFilter(logging.Filter):
    """Rewrites aiohttp's record of a client's malformed request (never drops one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError) and 400 <= error.code < 500:
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = "refused a malformed request from %s (%d %s)"
            record.args = (remote, error.code, type(error).__name__)
            record.levelno = logging.WARNING
            record.levelname = logging.getLevelName(logging.WARNING)
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_malformed_requests() -> None:
    """Installs the filter on aiohttp's server logger, once per process."""
    logger = logging.getLogger(SERVER_LOGGER)
    if not any(isinstance(existing, MalformedRequestFilter) for existing in logger.filters):
        logger.addFilter(MalformedRequestFilter())
