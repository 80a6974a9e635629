"""Submit validation as pure functions: bytes and headers in, a decision or a message out.

The contract (spec §4) fixes every message a client can see for a bad submit, and none of
these checks needs the network, so they live here, apart from the views, where a table
of cases tests each one. Nothing here raises for bad input: a `Rejected` carries the
exact message the API answers with 400.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from asyncjobs.core import multipart
from asyncjobs.core.request_types import BodyKind, RequestType, RequestTypeInfo

MODEL_FORMAT = "model should be in provider/model format"
FALLBACK_FORMAT = "fallbacks should be in provider/model format"

# Go's strconv.ParseBool, which Bifrost uses for multipart flags such as `stream`.
_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
# Go's strconv.Atoi accepts an optional sign and decimal digits only (no spaces, no "_").
_GO_INT = re.compile(r"[+-]?[0-9]+")
_INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class Accepted:
    """A valid submit: what the AsyncJob records besides the stored body."""

    model: str
    fallbacks: tuple[str, ...]


@dataclass(frozen=True)
class Rejected:
    message: str


Outcome = Accepted | Rejected


def split_model(model: str, providers: frozenset[str]) -> tuple[str, str] | None:
    """Splits provider/model on the first slash; None unless the provider is known."""
    provider, slash, name = model.partition("/")
    if not slash or not name or provider not in providers:
        return None
    return provider, name


def result_ttl(header: str | None, default: int) -> int:
    """The result TTL from x-bf-async-job-result-ttl, with Bifrost's quirks (spec §2).

    Empty, not an integer or negative → the server default; 0 → 3600. Never an error.
    """
    if not header or not _GO_INT.fullmatch(header):
        return default
    value = int(header)
    if value < 0 or value > _INT64_MAX:
        return default
    return 3600 if value == 0 else value


def validate(
    info: RequestTypeInfo, body: bytes, content_type: str, providers: frozenset[str]
) -> Outcome:
    """Checks a submit body for its request type exactly as the contract words it."""
    if info.body is BodyKind.MULTIPART:
        return _validate_multipart(info.request_type, body, content_type, providers)
    return _validate_json(info.request_type, body, providers)


# --- JSON bodies ---------------------------------------------------------------------------


class _FormatError(Exception):
    """A body that a typed decoder would refuse: answered as `invalid request format`."""


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; Bifrost's decoder (and JSON) does not.
    raise ValueError(f"invalid literal {name}")


def _parse_object(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _FormatError(str(exc)) from exc
    if not isinstance(parsed, dict):
        raise _FormatError(f"expected a JSON object, got {_json_type(parsed)}")
    return parsed


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _typed(fields: Mapping[str, Any], name: str, *types: type) -> Any:
    """The field's value if absent, null or of an allowed type; else a format error."""
    value = fields.get(name)
    if value is None:
        return None
    # bool is an int subclass in Python; a JSON true is never a number field.
    if isinstance(value, bool) and bool not in types:
        raise _FormatError(f"field {name} must not be a boolean")
    if not isinstance(value, types):
        raise _FormatError(f"field {name} has the wrong type ({_json_type(value)})")
    return value


def _model_and_fallbacks(fields: Mapping[str, Any], providers: frozenset[str]) -> Outcome:
    model = _typed(fields, "model", str)
    if not model or split_model(model, providers) is None:
        return Rejected(MODEL_FORMAT)
    fallbacks = _typed(fields, "fallbacks", list) or []
    for fallback in fallbacks:
        if not isinstance(fallback, str):
            raise _FormatError("field fallbacks must be an array of strings")
        if split_model(fallback, providers) is None:
            return Rejected(FALLBACK_FORMAT)
    return Accepted(model, tuple(fallbacks))


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _stream_requested(fields: Mapping[str, Any]) -> bool:
    return _typed(fields, "stream", bool) is True


# Per request type: the required-field checks in the order Bifrost runs them. Each returns
# a message or None; a field of an impossible type is a format error.
_Check = Callable[[Mapping[str, Any]], str | None]


def _chat(fields: Mapping[str, Any]) -> str | None:
    if _empty(_typed(fields, "messages", list)):
        return "messages is required for chat completion"
    return None


def _text(fields: Mapping[str, Any]) -> str | None:
    if _typed(fields, "prompt", str, list) is None:
        return "prompt is required for text completion"
    return None


def _responses(fields: Mapping[str, Any]) -> str | None:
    if _empty(_typed(fields, "input", str, list)):
        return "input is required for responses"
    return None


def _embeddings(fields: Mapping[str, Any]) -> str | None:
    if _empty(_typed(fields, "input", str, list)):
        return "input is required for embeddings"
    return None


def _speech(fields: Mapping[str, Any]) -> str | None:
    if _empty(_typed(fields, "input", str)):
        return "input is required for speech completion"
    if _empty(_typed(fields, "voice", str, list)):
        return "voice is required for speech completion"
    return None


def _image_generation(fields: Mapping[str, Any]) -> str | None:
    if _empty(_typed(fields, "prompt", str)):
        return "prompt cannot be empty"
    return None


def _rerank(fields: Mapping[str, Any]) -> str | None:
    query = _typed(fields, "query", str)
    if query is None or not query.strip():
        return "query is required for rerank"
    if _empty(_typed(fields, "documents", list)):
        return "documents are required for rerank"
    top_n = _typed(fields, "top_n", int)
    if top_n is not None and top_n < 1:
        return "top_n must be at least 1"
    return None


def _no_required_fields(fields: Mapping[str, Any]) -> str | None:
    return None


_JSON_CHECKS: dict[RequestType, _Check] = {
    RequestType.TEXT_COMPLETION: _text,
    RequestType.CHAT_COMPLETION: _chat,
    RequestType.RESPONSES: _responses,
    RequestType.EMBEDDING: _embeddings,
    RequestType.SPEECH: _speech,
    RequestType.IMAGE_GENERATION: _image_generation,
    RequestType.RERANK: _rerank,
    RequestType.OCR: _no_required_fields,
}

# Types whose JSON body has a boolean `stream` flag that async refuses.
_STREAM_FLAG = {
    RequestType.TEXT_COMPLETION: "text completions",
    RequestType.CHAT_COMPLETION: "chat completions",
    RequestType.RESPONSES: "responses",
    RequestType.IMAGE_GENERATION: "image generations",
}


def _stream_refused(noun: str) -> Rejected:
    return Rejected(f"stream is not supported for async {noun}")


def validate_json_fields(
    request_type: RequestType, fields: Mapping[str, Any], providers: frozenset[str]
) -> Outcome:
    """Validates an already decoded JSON body (the provider routes reuse this)."""
    try:
        outcome = _model_and_fallbacks(fields, providers)
        if isinstance(outcome, Rejected):
            return outcome
        message = _JSON_CHECKS[request_type](fields)
        if message is not None:
            return Rejected(message)
        if request_type in _STREAM_FLAG and _stream_requested(fields):
            return _stream_refused(_STREAM_FLAG[request_type])
        if request_type is RequestType.SPEECH and fields.get("stream_format") == "sse":
            return _stream_refused("speech")
    except _FormatError as exc:
        return Rejected(f"invalid request format: {exc}")
    return outcome


def _validate_json(request_type: RequestType, body: bytes, providers: frozenset[str]) -> Outcome:
    try:
        fields = _parse_object(body)
    except _FormatError as exc:
        return Rejected(f"invalid request format: {exc}")
    return validate_json_fields(request_type, fields, providers)


# --- multipart bodies ----------------------------------------------------------------------


def _validate_multipart(
    request_type: RequestType, body: bytes, content_type: str, providers: frozenset[str]
) -> Outcome:
    if not content_type.lower().startswith("multipart/form-data"):
        return Rejected("failed to parse multipart form: content type is not multipart/form-data")
    try:
        form = multipart.parse(body, content_type)
    except multipart.MultipartError as exc:
        return Rejected(f"failed to parse multipart form: {exc}")
    model = form.get("model")
    if not model:
        return Rejected("model is required")
    if split_model(model, providers) is None:
        return Rejected(MODEL_FORMAT)
    fallbacks = tuple(value for key, value in form.fields if key == "fallbacks")
    if any(split_model(fallback, providers) is None for fallback in fallbacks):
        return Rejected(FALLBACK_FORMAT)
    message = _MULTIPART_CHECKS[request_type](form)
    if message is not None:
        return Rejected(message)
    return Accepted(model, fallbacks)


def _go_int_error(name: str, form: multipart.Form) -> str | None:
    value = form.get(name)
    if value is None or value == "":
        return None
    if not _GO_INT.fullmatch(value) or abs(int(value)) > _INT64_MAX:
        return f'invalid {name} value: parsing "{value}": invalid syntax'
    return None


def _images(form: multipart.Form) -> list[multipart.FilePart]:
    return form.files_named("image[]", "image")


def _transcription(form: multipart.Form) -> str | None:
    if not form.files_named("file"):
        return "file is required"
    if form.get("stream") in _GO_TRUE:
        return "stream is not supported for async transcriptions"
    return None


def _image_edit(form: multipart.Form) -> str | None:
    if not _images(form):
        return "at least one image is required"
    if not form.get("prompt") and form.get("type") != "background_removal":
        return "prompt is required"
    invalid = _go_int_error("n", form)
    if invalid is not None:
        return invalid
    if form.get("stream") in _GO_TRUE:
        return "stream is not supported for async image edits"
    return None


def _image_variation(form: multipart.Form) -> str | None:
    if not _images(form):
        return "at least one image is required"
    return _go_int_error("n", form)


_MULTIPART_CHECKS: dict[RequestType, Callable[[multipart.Form], str | None]] = {
    RequestType.TRANSCRIPTION: _transcription,
    RequestType.IMAGE_EDIT: _image_edit,
    RequestType.IMAGE_VARIATION: _image_variation,
}
