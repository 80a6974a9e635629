"""Reading and writing multipart/form-data bodies held in memory.

Multipart requests (transcriptions, image edits and variations) are stored exactly as
they arrived; the API parses them to validate, and a provider parses them again to
rewrite the `model` field before forwarding, so both use this one parser.

The parser works on the whole body with bytes operations (`find`, slices, regular
expressions on headers), so its cost grows with the number of parts, not with the bytes
in them. The standard library's email parser, used before, cost 0.4-2 ms per part and
split file payloads into lines: 10,000 tiny parts took 21.8 s, a 20 MiB file of line
breaks 8.7 s, on the event loop. Every body is bounded before any part is read: at most
MAX_PARTS parts (the delimiters are found first, and the search stops one past the cap),
then at most MAX_PART_HEADER_BYTES of headers per part and MAX_TEXT_BYTES of text fields
in all. The API refuses any other body before it creates a job (`api/validation.py`), so
the operator's providers, which parse the stored body again, only ever see bodies within
these bounds; the bounds are checked here all the same.
"""

from __future__ import annotations

import binascii
import re
import secrets
from dataclasses import dataclass, field
from urllib.parse import unquote

# OpenAI's multipart endpoints take a handful of fields: an image edit has at most 16
# images (gpt-image-1) and about 15 other fields, a transcription about 12 fields with
# up to 4 speaker references; a gateway adds up to 16 `fallbacks` (the CRD's maxItems).
# 64 leaves room above the 47 such a request can reach.
MAX_PARTS = 64
# A part's headers are a Content-Disposition with a name and maybe a filename, and a
# Content-Type; 8 KiB holds any filename a file system allows many times over.
MAX_PART_HEADER_BYTES = 8192
# The text fields are short (a prompt is at most 32,000 characters); decoding 25 MiB of
# text that is not UTF-8 took 0.6 s, so all of a body's text fields together are capped.
MAX_TEXT_BYTES = 1024 * 1024

_BOUNDARY = re.compile(r'(?:^|;)\s*boundary\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s]+)', re.IGNORECASE)
_FOLD = re.compile(rb"\r?\n[ \t]+")
_HEADER = re.compile(
    rb"^(content-disposition|content-type|content-transfer-encoding)[ \t]*:(.*)$",
    re.IGNORECASE | re.MULTILINE,
)
_PARAM = re.compile(r';\s*([^\s=;]++)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')
_QUOTED_PAIR = re.compile(r"\\(.)")


class MultipartError(ValueError):
    """The body is not a well-formed multipart/form-data message."""


@dataclass(frozen=True)
class FilePart:
    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class Form:
    """Text fields in arrival order (a name may repeat) and file parts."""

    fields: list[tuple[str, str]] = field(default_factory=list)
    files: list[FilePart] = field(default_factory=list)

    def get(self, name: str) -> str | None:
        return next((value for key, value in self.fields if key == name), None)

    def files_named(self, *names: str) -> list[FilePart]:
        return [part for part in self.files if part.field in names]


def parse(body: bytes, content_type: str) -> Form:
    """Parses a multipart/form-data body; content_type must carry the boundary.

    The operator's providers call this on stored bodies, which the API accepted only
    within the bounds above, so a provider never meets a body that costs more.
    """
    spans = _part_spans(body, b"--" + _boundary(content_type))
    form = Form()
    text_budget = MAX_TEXT_BYTES
    for start, end in spans:
        text_budget -= _read_part(form, body, start, end, text_budget)
    return form


def _boundary(content_type: str) -> bytes:
    match = _BOUNDARY.search(content_type)
    value = _unquote(match.group(1)) if match else ""
    if not value:
        raise MultipartError("missing boundary in multipart/form-data content type")
    return value.encode("utf-8", errors="replace")


def _part_spans(body: bytes, dash_boundary: bytes) -> list[tuple[int, int]]:
    """Where each part's bytes start and end, found before any part is read.

    A delimiter is `--boundary` at the start of a line, followed by `--` (the last one)
    or by optional spaces and a line break; any other line starting `--boundary` is
    content. The search for lines starting `--boundary` stops at the first one past
    MAX_PARTS + 1, so a body of many parts is refused after that many `find` calls.
    """
    line_start = b"\n" + dash_boundary
    candidates = [-1] if body.startswith(dash_boundary) else []
    position = 0
    while len(candidates) <= MAX_PARTS + 1:
        found = body.find(line_start, position)
        if found < 0:
            break
        candidates.append(found)
        position = found + 1
    else:
        raise MultipartError(f"more than {MAX_PARTS} parts")
    spans: list[tuple[int, int]] = []
    start: int | None = None
    for candidate in candidates:
        after = candidate + 1 + len(dash_boundary)
        closing = body.startswith(b"--", after)
        next_line = None if closing else _line_end(body, after)
        if not closing and next_line is None:
            continue
        if start is not None:
            # The line break before a delimiter belongs to the delimiter.
            end = candidate - 1 if body[candidate - 1 : candidate] == b"\r" else candidate
            spans.append((start, max(start, end)))
        if next_line is None:
            return spans
        start = next_line
    if start is None:
        raise MultipartError("malformed multipart body: no opening boundary")
    _header_end(body, start, len(body))  # a body cut inside a part's headers says so
    raise MultipartError("malformed multipart body: no closing boundary")


def _line_end(body: bytes, after: int) -> int | None:
    """The start of the next line if only spaces and tabs follow `after` on this one."""
    newline = body.find(b"\n", after, after + 256)
    if newline < 0 or body[after:newline].rstrip(b"\r").strip(b" \t"):
        return None
    return newline + 1


def _header_end(body: bytes, start: int, end: int) -> tuple[int, int]:
    """Where the headers of the part in body[start:end] end and its data begins."""
    if body.startswith(b"\r\n", start) or body.startswith(b"\n", start):
        return start, body.index(b"\n", start) + 1
    window = min(end, start + MAX_PART_HEADER_BYTES + 4)
    ends = [
        (found, found + len(blank_line))
        for blank_line in (b"\r\n\r\n", b"\n\n")
        if (found := body.find(blank_line, start, window)) >= 0
    ]
    if ends and min(ends)[0] - start <= MAX_PART_HEADER_BYTES:
        return min(ends)
    if end - start > MAX_PART_HEADER_BYTES:
        raise MultipartError(f"a part's headers exceed {MAX_PART_HEADER_BYTES} bytes")
    raise MultipartError("malformed multipart body: a part's headers do not end")


def _read_part(form: Form, body: bytes, start: int, end: int, text_budget: int) -> int:
    """Adds the part in body[start:end] to the form; returns the text bytes it added."""
    headers_end, data_start = _header_end(body, start, end)
    block = body[start:headers_end]
    if b"\n " in block or b"\n\t" in block:
        block = _FOLD.sub(b" ", block)
    headers: dict[str, str] = {}
    for name, value in _HEADER.findall(block):
        text = value.decode("utf-8", errors="replace").strip(" \t\r")
        headers.setdefault(name.decode().lower(), text)
    disposition = _params(headers.get("content-disposition", ""))
    name = disposition.get("name")
    if name is None:
        raise MultipartError("a part has no name in its Content-Disposition")
    filename = disposition.get("filename")
    if filename is not None:
        # Files are kept as sent: RFC 7578 forbids a Content-Transfer-Encoding, and
        # decoding 25 MiB of quoted-printable would hold the event loop for 200 ms.
        form.files.append(FilePart(name, filename, _media_type(headers), body[data_start:end]))
        return 0
    if end - data_start > text_budget:
        raise MultipartError(f"text fields exceed {MAX_TEXT_BYTES} bytes in total")
    data = body[data_start:end]
    if headers.get("content-transfer-encoding", "").lower() == "quoted-printable":
        data = binascii.a2b_qp(data)  # as Go's mime/multipart, which Bifrost reads with
    form.fields.append((name, data.decode("utf-8", errors="replace")))
    return end - data_start


def _params(value: str) -> dict[str, str]:
    """The parameters of a header value, RFC 2231 `name*=charset''%XX` ones decoded."""
    params: dict[str, str] = {}
    for key, raw in _PARAM.findall(";" + value.partition(";")[2]):
        key = key.lower()
        if key.endswith("*"):
            charset, _, encoded = _unquote(raw).partition("''")
            try:
                params[key[:-1]] = unquote(encoded, encoding=charset or "utf-8", errors="replace")
            except LookupError:
                params[key[:-1]] = unquote(encoded, errors="replace")
        else:
            params.setdefault(key, _unquote(raw.strip()))
    return params


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return _QUOTED_PAIR.sub(r"\1", value[1:-1])
    return value


def _media_type(headers: dict[str, str]) -> str:
    """The part's media type without parameters; text/plain when missing or invalid."""
    media_type = headers.get("content-type", "").partition(";")[0].strip().lower()
    return media_type if media_type.count("/") == 1 else "text/plain"


def encode(form: Form) -> tuple[bytes, str]:
    """Serialises a form; returns the body and its Content-Type with a fresh boundary."""
    boundary = f"asyncjobs-{secrets.token_hex(16)}"
    chunks: list[bytes] = []
    for name, value in form.fields:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{_quote(name)}"\r\n\r\n'
        chunks.append(head.encode() + value.encode() + b"\r\n")
    for part in form.files:
        chunks.append(
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{_quote(part.field)}";'
                f' filename="{_quote(part.filename)}"\r\nContent-Type: {part.content_type}\r\n\r\n'
            ).encode()
            + part.data
            + b"\r\n"
        )
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "").replace("\n", "")
