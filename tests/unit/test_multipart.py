"""The multipart codec keeps binary files intact and refuses malformed bodies."""

from __future__ import annotations

import pytest

from asyncjobs.core import multipart


def test_encode_then_parse_keeps_fields_and_binary_files() -> None:
    form = multipart.Form(
        fields=[("model", "openai/gpt-image-1"), ("n", "2")],
        files=[
            multipart.FilePart("image[]", "a.png", "image/png", b"\x89PNG\r\n\x1a\n--x\r\n"),
            multipart.FilePart("image[]", 'b "q".png', "image/png", bytes(range(256))),
        ],
    )
    body, content_type = multipart.encode(form)
    parsed = multipart.parse(body, content_type)
    assert parsed.fields == form.fields
    assert [p.data for p in parsed.files_named("image[]", "image")] == [f.data for f in form.files]
    assert parsed.get("n") == "2"
    assert parsed.get("missing") is None


@pytest.mark.parametrize(
    ("body", "content_type"),
    [(b"--zz\r\n", "multipart/form-data"), (b"plain text", "multipart/form-data; boundary=zz")],
    ids=["no-boundary", "not-multipart"],
)
def test_malformed_bodies_raise_multipart_error(body: bytes, content_type: str) -> None:
    with pytest.raises(multipart.MultipartError):
        multipart.parse(body, content_type)
