"""Reading and writing multipart/form-data bodies held in memory.

Multipart requests (transcriptions, image edits and variations) are stored exactly as
they arrived; the API parses them to validate, and a provider parses them again to
rewrite the `model` field before forwarding, so both use this one parser.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP


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
    """Parses a multipart/form-data body; content_type must carry the boundary."""
    if "boundary=" not in content_type:
        raise MultipartError("missing boundary in multipart/form-data content type")
    header = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(header + body)
    if not message.is_multipart():
        raise MultipartError("body is not multipart")
    if message.defects:
        raise MultipartError(f"malformed multipart body: {message.defects[0].__class__.__name__}")
    form = Form()
    for part in message.iter_parts():
        _add_part(form, part)
    return form


def _add_part(form: Form, part: Message) -> None:
    name = part.get_param("name", header="content-disposition")
    if not isinstance(name, str):
        raise MultipartError("a part has no name in its Content-Disposition")
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    filename = part.get_filename()
    if filename is None:
        form.fields.append((name, data.decode("utf-8", errors="replace")))
    else:
        form.files.append(FilePart(name, filename, part.get_content_type(), data))


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
