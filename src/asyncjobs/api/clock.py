"""The API's clock: the one place that reads real time; everything else is handed a Clock.

create_app and the job store take the clock as an argument, so tests fix the time and
move it on rather than sleeping or computing around the real one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)
