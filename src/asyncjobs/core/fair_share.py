"""Fair share between virtual keys: the few rules the API and the operator both follow.

The API copies what fair share needs onto the job at submit (its virtual key's id is
there already; the key's weight as `spec.keyWeight`, the submit's priority as
`spec.priority`), so the operator never reads the keys namespace: a job's own spec says
which group it waits in, how much that group weighs and where it stands in its group.

- A job's group is its virtual key id; jobs without a key form one group of their own.
- A group's weight is a whole number from 1 to MAX_WEIGHT; a key without one weighs 1.
- A job's priority is a whole number from MIN_PRIORITY to MAX_PRIORITY, default 0;
  higher goes first within its group (it never moves a job ahead of another key's).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

PRIORITY_HEADER = "x-asyncjobs-priority"
MIN_PRIORITY = -10
MAX_PRIORITY = 10
DEFAULT_PRIORITY = 0

DEFAULT_WEIGHT = 1
MAX_WEIGHT = 1000

# The group of the jobs submitted without a virtual key (a key id is never empty).
ANONYMOUS = ""
# The metric label of that group; key ids are hashed, so it cannot collide with one.
ANONYMOUS_LABEL = "anonymous"

# Decimal only: no '+', no leading zeros, no '-0', so each value has one spelling (the
# OpenAPI document's pattern says the same).
_PRIORITY = re.compile(r"0|-?[1-9][0-9]?")

PRIORITY_INVALID = (
    f"invalid {PRIORITY_HEADER} header: must be a whole number from "
    f"{MIN_PRIORITY} to {MAX_PRIORITY}"
)


def parse_priority(header: str | None) -> int | None:
    """The priority a submit asked for: None when the header is absent, ValueError (with
    PRIORITY_INVALID) when it is anything but a whole number in range."""
    if header is None:
        return None
    if not _PRIORITY.fullmatch(header):
        raise ValueError(PRIORITY_INVALID)
    value = int(header)
    if not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise ValueError(PRIORITY_INVALID)
    return value


def parse_weight(text: str) -> int | None:
    """A virtual key's weight as its Secret spells it; None unless a whole number from 1
    to MAX_WEIGHT."""
    text = text.strip()
    if not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if 1 <= value <= MAX_WEIGHT else None


def group_of(spec: Mapping[str, Any]) -> str:
    return str(spec.get("virtualKeyId") or ANONYMOUS)


def weight_of(spec: Mapping[str, Any]) -> int:
    """The job's group weight; the default for a missing or (kubectl-written) odd value,
    which the CRD's schema should have refused anyway."""
    value = spec.get("keyWeight")
    if isinstance(value, int) and 1 <= value <= MAX_WEIGHT:
        return value
    return DEFAULT_WEIGHT


def priority_of(spec: Mapping[str, Any]) -> int:
    value = spec.get("priority")
    if isinstance(value, int) and MIN_PRIORITY <= value <= MAX_PRIORITY:
        return value
    return DEFAULT_PRIORITY


def group_label(group: str) -> str:
    """A group as a metric label: a short hash of the key id (never the key, and no
    id that an operator might consider internal in a public dashboard)."""
    if group == ANONYMOUS:
        return ANONYMOUS_LABEL
    return hashlib.sha256(group.encode()).hexdigest()[:12]


def order_of(spec: Mapping[str, Any], submitted_at: datetime, name: str) -> tuple[int, float, str]:
    """Where a job stands within its group: higher priority first, then the oldest (the
    name breaks ties, so the order is total)."""
    return (-priority_of(spec), submitted_at.timestamp(), name)
