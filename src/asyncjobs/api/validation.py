"""Submit validation as pure functions: bytes and headers in, a decision or a message out.

The contract (spec §4) fixes every message a client can see for a bad submit, and none of
these checks needs the network, so they live here, apart from the views, where a table
of cases tests each one. Nothing here raises for bad input: a `Rejected` carries the
exact message the API answers with 400.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from asyncjobs.api.settings import DEFAULT_MAX_REQUEST_BYTES, MAX_RESULT_TTL
from asyncjobs.core import multipart
from asyncjobs.core.request_types import REQUEST_TYPES, BodyKind, RequestType, RequestTypeInfo

MODEL_FORMAT = "model should be in provider/model format"

# Bifrost's multipart handlers compare the `stream` field with "true" literally: "1" or
# "TRUE" do not ask for streaming there, so they are not refused here either.
_MULTIPART_TRUE = "true"
# Go's strconv.Atoi accepts an optional sign and decimal digits only (no spaces, no "_").
_GO_INT = re.compile(r"[+-]?[0-9]+")
# What Go's strings.TrimSpace removes (unicode.IsSpace), which Bifrost's blank checks
# use. Python's str.strip() also removes \x1c-\x1f, which Go keeps.
GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B)))
GO_SPACE += "\u2028\u2029\u202f\u205f\u3000"
_INT64_MAX = 2**63 - 1
# Bifrost turns the TTL into a time.Duration, whose range ends at this many seconds; any
# longer TTL is kept as the longest one it can honour (a completion time plus this stays
# well inside what a timestamp can hold).

# What the AsyncJob CRD accepts (charts/asyncjobs/templates/crd-asyncjobs.yaml): a value
# beyond these would be refused by the apiserver after validation passed, so it is
# refused here with a message that says which limit it broke.
MAX_MODEL_LENGTH = 256
MAX_FALLBACKS = 16
MAX_CONTENT_TYPE_LENGTH = 256

# Bounds on a JSON body, checked before it is parsed. Deeper nesting is refused (the
# standard parser recurses, and so do the translations that read the body later), and
# so are more values than one per BYTES_PER_JSON_VALUE bytes of the body limit: a body of
# `[],[],…` costs the parser about 22 bytes of memory per byte it reads, and the count
# bounds that cost whatever the body's size (api/README.md has the figures).
MAX_JSON_DEPTH = 64
BYTES_PER_JSON_VALUE = 16


def max_json_values(max_request_bytes: int) -> int:
    """How many JSON values a body may hold under a body limit of `max_request_bytes`."""
    return max_request_bytes // BYTES_PER_JSON_VALUE


DEFAULT_MAX_JSON_VALUES = max_json_values(DEFAULT_MAX_REQUEST_BYTES)


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


def result_ttl(header: str | None, default: int, maximum: int = MAX_RESULT_TTL) -> int:
    """The result TTL from x-bf-async-job-result-ttl, with Bifrost's quirks (spec §2).

    Empty, not an integer or negative → the server default; 0 → 3600. Never an error:
    an ask above `maximum` (the install's cap, Bifrost's by default) is cut to it.
    """
    if not header or not _GO_INT.fullmatch(header):
        return min(default, maximum)
    value = int(header)
    if value < 0 or value > _INT64_MAX:
        return min(default, maximum)
    return min(3600 if value == 0 else value, maximum)


def validate(
    info: RequestTypeInfo,
    body: bytes,
    content_type: str,
    providers: frozenset[str],
    max_json_values: int = DEFAULT_MAX_JSON_VALUES,
) -> Outcome:
    """Checks a submit body for its request type exactly as the contract words it."""
    if info.body is BodyKind.MULTIPART:
        return _validate_multipart(info.request_type, body, content_type, providers)
    return _validate_json(info.request_type, body, providers, max_json_values)


# --- JSON bodies ---------------------------------------------------------------------------


class FormatError(Exception):
    """A body that a typed decoder would refuse: answered as `invalid request format`."""


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; Bifrost's decoder (and JSON) does not.
    raise ValueError(f"invalid literal {name}")


# Only quotes, brackets and commas matter to the bounds; the rest is dropped first.
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'"[]{},')))
_NOT_OPENING_OR_COMMA = bytes(sorted(set(range(256)) - set(b"[{,")))
# Both kinds of bracket become one (so every pair reads `[]`), and commas go.
_OPENERS = bytes.maketrans(b"{}", b"[]")
# Strings are cut out this many bytes at a time, so the pieces a split makes stay few.
_CHUNK = 1 << 16


def _outside_strings(body: bytes) -> Iterator[bytes]:
    """The brackets and commas of a JSON text that are outside its strings, a piece at a
    time, found with bytes operations that run in C (a loop per byte would cost more
    than the parse), so a caller can stop early and no piece is large."""
    if b"\\" in body:
        # A decoder pairs backslashes from the left; so does replace. A backslash left
        # escapes something other than a quote, and is dropped next with it.
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    in_string = False
    for start in range(0, len(body), _CHUNK):
        parts = body[start : start + _CHUNK].translate(None, _NOT_STRUCTURE).split(b'"')
        yield b"".join(parts[1::2] if in_string else parts[::2])
        in_string ^= len(parts) % 2 == 0


def check_json_bounds(body: bytes, max_values: int) -> None:
    """Refuses a body nested deeper than MAX_JSON_DEPTH or holding more than
    `max_values` values, before the parser builds any of it.

    Values are counted as the commas, `[` and `{` outside strings (each element or
    member but the first of a container follows a comma; the first follows its bracket).
    The common body is settled by counting those bytes anywhere, strings included,
    which can only overestimate; only a body that count does not clear has its strings
    cut out and is counted exactly.
    """
    marks = body.translate(None, _NOT_OPENING_OR_COMMA)
    if len(marks) <= max_values and len(marks) - marks.count(b",") <= MAX_JSON_DEPTH:
        return
    values = 0
    pieces: list[bytes] = []
    for piece in _outside_strings(body):
        values += len(piece) - piece.count(b"]") - piece.count(b"}")
        if values > max_values:
            raise FormatError(f"more than {max_values} JSON values")
        pieces.append(piece.translate(_OPENERS, b","))
    brackets = b"".join(pieces)
    # Each pass removes every innermost pair, so the passes needed to empty the brackets
    # are the deepest nesting. Brackets left with no pair among them are unbalanced: the
    # parser reports that.
    for _ in range(MAX_JSON_DEPTH):
        brackets = brackets.replace(b"[]", b"")
        if b"[]" not in brackets:
            return
    raise FormatError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")


def parse_object(body: bytes, max_values: int) -> dict[str, Any]:
    """A JSON object within the bounds above, as Bifrost's decoder would read it; a
    format error (whose text follows `invalid request format: `) for anything else."""
    check_json_bounds(body, max_values)
    try:
        parsed = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatError(str(exc)) from exc
    except RecursionError as exc:  # unreachable past the depth check; never a 500
        raise FormatError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from exc
    if not isinstance(parsed, dict):
        raise FormatError(f"expected a JSON object, got {_json_type(parsed)}")
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
        raise FormatError(f"field {name} must not be a boolean")
    if not isinstance(value, types):
        raise FormatError(f"field {name} has the wrong type ({_json_type(value)})")
    return value


def _model_and_fallbacks(fields: Mapping[str, Any], providers: frozenset[str]) -> Outcome:
    model = _typed(fields, "model", str)
    if not model or split_model(model, providers) is None:
        return Rejected(MODEL_FORMAT)
    fallbacks = _typed(fields, "fallbacks", list) or []
    if not all(isinstance(fallback, str) for fallback in fallbacks):
        raise FormatError("field fallbacks must be an array of strings")
    return _storable(model, fallbacks, providers)


def _storable(model: str, fallbacks: list[str], providers: frozenset[str]) -> Outcome:
    """The submit's model and usable fallbacks, or what the CRD would refuse in them.

    The CRD's pattern `^[^/]+/.+$` does not match a line break after the first slash
    (`.` stops at one), and the provider before it is a known name, so a model or a
    fallback holding one cannot be stored. The count is of the fallbacks sent, before
    unusable ones are left out, so whether a submit fits never depends on which
    providers a deployment knows.
    """
    if len(model) > MAX_MODEL_LENGTH:
        return Rejected(f"model must be at most {MAX_MODEL_LENGTH} characters")
    if "\n" in model:
        return Rejected("model must not contain a line break")
    if len(fallbacks) > MAX_FALLBACKS:
        return Rejected(f"at most {MAX_FALLBACKS} fallbacks are allowed")
    for fallback in fallbacks:
        if len(fallback) > MAX_MODEL_LENGTH:
            return Rejected(f"each fallback must be at most {MAX_MODEL_LENGTH} characters")
        if "\n" in fallback:
            return Rejected("a fallback must not contain a line break")
    return Accepted(model, usable_fallbacks(fallbacks, providers))


def usable_fallbacks(fallbacks: Iterable[str], providers: frozenset[str]) -> tuple[str, ...]:
    """The fallbacks that name a known provider and a model, in order.

    Bifrost never refuses a submit for its fallbacks: one that is not `provider/model`
    is silently left out. One naming a provider this deployment does not know could only
    fail when tried, so it is left out as well.
    """
    return tuple(fallback for fallback in fallbacks if split_model(fallback, providers))


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
    # Bifrost refuses a missing, null or empty-list input; an empty string is an input.
    value = _typed(fields, "input", str, list)
    if value is None or value == []:
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
    if query is None or not query.strip(GO_SPACE):
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

# Per type: the parameters Bifrost decodes into Go ints. Its decoder refuses 1.5, 2.0, 1e3
# or a number beyond int64 there before any other check, so they are format errors here.
# (Chat's `max_tokens` is not one: Bifrost reads it loosely and truncates.)
_INTEGER_FIELDS: dict[RequestType, tuple[str, ...]] = {
    RequestType.TEXT_COMPLETION: ("best_of", "logprobs", "max_tokens", "n", "seed"),
    RequestType.CHAT_COMPLETION: ("max_completion_tokens",),
    RequestType.RESPONSES: ("max_output_tokens", "max_tool_calls", "top_logprobs"),
    RequestType.EMBEDDING: ("dimensions",),
    RequestType.IMAGE_GENERATION: (
        "n",
        "partial_images",
        "output_compression",
        "seed",
        "num_inference_steps",
    ),
    RequestType.RERANK: ("top_n", "max_tokens_per_doc"),
}


def _check_integers(request_type: RequestType, fields: Mapping[str, Any]) -> None:
    for name in _INTEGER_FIELDS.get(request_type, ()):
        value = _typed(fields, name, int)
        if value is not None and not -_INT64_MAX - 1 <= value <= _INT64_MAX:
            raise FormatError(f"field {name} overflows a 64-bit integer")


# Types whose JSON body has a boolean `stream` flag that async refuses.
_STREAM_FLAG = frozenset(
    {
        RequestType.TEXT_COMPLETION,
        RequestType.CHAT_COMPLETION,
        RequestType.RESPONSES,
        RequestType.IMAGE_GENERATION,
    }
)


def _stream_refused(request_type: RequestType) -> str:
    """Bifrost's refusal of a streaming submit, worded from the request-type table."""
    return f"stream is not supported for async {REQUEST_TYPES[request_type].stream_noun}"


def validate_json_fields(
    request_type: RequestType, fields: Mapping[str, Any], providers: frozenset[str]
) -> Outcome:
    """Validates an already decoded JSON body (the provider routes reuse this)."""
    try:
        _check_integers(request_type, fields)
        outcome = _model_and_fallbacks(fields, providers)
        if isinstance(outcome, Rejected):
            return outcome
        message = _JSON_CHECKS[request_type](fields)
        if message is not None:
            return Rejected(message)
        if request_type in _STREAM_FLAG and _stream_requested(fields):
            return Rejected(_stream_refused(request_type))
        if request_type is RequestType.SPEECH and fields.get("stream_format") == "sse":
            return Rejected(_stream_refused(request_type))
    except FormatError as exc:
        return Rejected(f"invalid request format: {exc}")
    return outcome


def _validate_json(
    request_type: RequestType, body: bytes, providers: frozenset[str], max_values: int
) -> Outcome:
    try:
        fields = parse_object(body, max_values)
    except FormatError as exc:
        return Rejected(f"invalid request format: {exc}")
    return validate_json_fields(request_type, fields, providers)


# --- multipart bodies ----------------------------------------------------------------------


def _validate_multipart(
    request_type: RequestType, body: bytes, content_type: str, providers: frozenset[str]
) -> Outcome:
    if not content_type.lower().startswith("multipart/form-data"):
        return Rejected("failed to parse multipart form: content type is not multipart/form-data")
    if len(content_type) > MAX_CONTENT_TYPE_LENGTH:
        # The AsyncJob records it (the boundary is needed to read the body again).
        return Rejected(
            "failed to parse multipart form: content type longer than "
            f"{MAX_CONTENT_TYPE_LENGTH} characters"
        )
    try:
        # The parser refuses more than 64 parts and oversized headers or text before it
        # reads any part, so this costs tens of milliseconds at most; the operator parses
        # only bodies accepted here (core/multipart.py, api/README.md "Input limits").
        form = multipart.parse(body, content_type)
    except multipart.MultipartError as exc:
        return Rejected(f"failed to parse multipart form: {exc}")
    model = form.get("model")
    if not model:
        return Rejected("model is required")
    if split_model(model, providers) is None:
        return Rejected(MODEL_FORMAT)
    storable = _storable(
        model, [value for key, value in form.fields if key == "fallbacks"], providers
    )
    if isinstance(storable, Rejected):
        return storable
    message = _MULTIPART_CHECKS[request_type](form)
    if message is not None:
        return Rejected(message)
    return storable


def _go_int_error(name: str, form: multipart.Form) -> str | None:
    """Bifrost's `invalid <name> value: <strconv.Atoi error>` for a field Atoi refuses."""
    value = form.get(name)
    if value is None or value == "":
        return None
    if not _GO_INT.fullmatch(value):
        reason = "invalid syntax"
    elif not -_INT64_MAX - 1 <= int(value) <= _INT64_MAX:
        reason = "value out of range"
    else:
        return None
    return f"invalid {name} value: strconv.Atoi: parsing {_go_quote(value)}: {reason}"


def _go_quote(value: str) -> str:
    """Go's strconv.Quote for the printable text a form field usually holds."""
    return json.dumps(value, ensure_ascii=False)


def _images(form: multipart.Form) -> list[multipart.FilePart]:
    return form.files_named("image[]", "image")


def _transcription(form: multipart.Form) -> str | None:
    if not form.files_named("file"):
        return "file is required"
    if form.get("stream") == _MULTIPART_TRUE:
        return _stream_refused(RequestType.TRANSCRIPTION)
    return None


def _image_edit(form: multipart.Form) -> str | None:
    if not _images(form):
        return "at least one image is required"
    if not form.get("prompt") and form.get("type") != "background_removal":
        return "prompt is required"
    invalid = _go_int_error("n", form)
    if invalid is not None:
        return invalid
    if form.get("stream") == _MULTIPART_TRUE:
        return _stream_refused(RequestType.IMAGE_EDIT)
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
