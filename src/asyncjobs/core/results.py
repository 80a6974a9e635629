"""What a completed job stores: the provider's JSON plus Bifrost's `extra_fields`.

A poll returns exactly the body the synchronous endpoint would have (spec §6), and
Bifrost adds `extra_fields` (request type, provider, requested model, latency in ms) to
every response; the token counts go into the job's status too, so `kubectl` and metrics
see usage without reading the result Secret.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from asyncjobs.core.model import Usage

CONTENT_TYPE = "application/json"
EXTRA_FIELDS = "extra_fields"
_EXTRA_KEY = b'"extra_fields":'


@dataclass(frozen=True)
class PreparedResult:
    """A provider's answer encoded for storage but for the value of `extra_fields`, whose
    `latency` is known only once the call is over: the stored body is `head`, then the
    extra fields, then `tail`. A large answer is prepared in the CPU worker process
    (providers/transport.py), so the operator's loop only joins three byte strings and
    never holds the answer as objects; a small one is prepared on the loop, by the same
    function, so both store the same bytes."""

    head: bytes  # up to and including `"extra_fields":`
    tail: bytes  # from after the extra fields' value to the closing brace
    extra: dict[str, Any]  # the provider's own extra_fields, to which the gateway's are added
    usage: Usage | None
    # The standard encoder wrote head and tail (orjson refused some value): the extra
    # fields are written by it too, so the body is escaped the same way throughout.
    ascii_only: bool = False


def prepare(provider_body: Mapping[str, Any]) -> PreparedResult:
    """Encodes the answer around its `extra_fields`, which keep their place when the
    provider sent some (a Bifrost upstream does) and come last otherwise."""
    keys = list(provider_body)
    at = keys.index(EXTRA_FIELDS) if EXTRA_FIELDS in provider_body else len(keys)
    before = {key: provider_body[key] for key in keys[:at]}
    after = {key: provider_body[key] for key in keys[at + 1 :]}
    existing = provider_body.get(EXTRA_FIELDS)
    extra = dict(existing) if isinstance(existing, Mapping) else {}
    try:
        parts = [orjson.dumps(part) for part in (before, after, extra)]
        ascii_only = False
    except TypeError:  # orjson.JSONEncodeError
        parts = [_standard(part) for part in (before, after, extra)]
        ascii_only = True
    # An object's members are its encoding without the braces.
    head = b"{" + parts[0][1:-1] + (b"," if before else b"") + _EXTRA_KEY
    tail = (b"," + parts[1][1:-1] if after else b"") + b"}"
    return PreparedResult(head, tail, extra, usage_of(provider_body), ascii_only)


def stored_parts(
    prepared: PreparedResult,
    *,
    request_type: str,
    provider: str,
    model_requested: str,
    latency_ms: int,
) -> tuple[bytes, bytes, bytes]:
    """The body a completed job stores, in three parts to join: the answer with Bifrost's
    extra fields added. (Joining tens of MiB is best left to core/large_bytes.py.)"""
    extra = {
        **prepared.extra,
        "request_type": request_type,
        "provider": provider,
        "model_requested": model_requested,
        "latency": latency_ms,
    }
    fields = _standard(extra) if prepared.ascii_only else encoded(extra)
    return (prepared.head, fields, prepared.tail)


def stored_body(
    prepared: PreparedResult,
    *,
    request_type: str,
    provider: str,
    model_requested: str,
    latency_ms: int,
) -> bytes:
    parts = stored_parts(
        prepared,
        request_type=request_type,
        provider=provider,
        model_requested=model_requested,
        latency_ms=latency_ms,
    )
    return b"".join(parts)


def result_body(
    provider_body: Mapping[str, Any],
    *,
    request_type: str,
    provider: str,
    model_requested: str,
    latency_ms: int,
) -> bytes:
    return stored_body(
        prepare(provider_body),
        request_type=request_type,
        provider=provider,
        model_requested=model_requested,
        latency_ms=latency_ms,
    )


def encoded(document: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON, written by orjson: the operator writes every result on its
    event loop, and the standard encoder took 130 ms for the local provider's largest
    embeddings answer (131,072 floats) where orjson takes 23 ms. What orjson refuses
    (half a surrogate pair, which UTF-8 cannot carry; an integer past 64 bits; a key
    that is not a string) is written by the standard encoder with every non-ASCII
    character escaped: valid JSON that reads back the same."""
    try:
        return orjson.dumps(document)
    except TypeError:  # orjson.JSONEncodeError
        return _standard(document)


def _standard(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def usage_of(provider_body: Mapping[str, Any]) -> Usage | None:
    """Token counts in the status's shape, from chat/completions (prompt/completion) or
    responses-style (input/output) usage; None when the provider reported none."""
    usage = provider_body.get("usage")
    if not isinstance(usage, Mapping):
        return None
    prompt = _int(usage.get("prompt_tokens", usage.get("input_tokens")))
    completion = _int(usage.get("completion_tokens", usage.get("output_tokens")))
    total = _int(usage.get("total_tokens"))
    if total is None and (prompt is not None or completion is not None):
        total = (prompt or 0) + (completion or 0)
    usage = Usage()
    if prompt is not None:
        usage["promptTokens"] = prompt
    if completion is not None:
        usage["completionTokens"] = completion
    if total is not None:
        usage["totalTokens"] = total
    return usage or None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
