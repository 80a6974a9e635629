"""The multipart codec keeps binary files intact and refuses malformed bodies."""

from __future__ import annotations

import time

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


# --- bounds: a body of many parts, or of long part headers, is refused before it is read ---


def tiny_parts(count: int, boundary: str = "b") -> tuple[bytes, str]:
    part = f'--{boundary}\r\nContent-Disposition: form-data; name="f"\r\n\r\nx\r\n'.encode()
    return (
        part * count + f"--{boundary}--\r\n".encode(),
        f"multipart/form-data; boundary={boundary}",
    )


def test_a_body_of_10000_tiny_parts_is_refused_before_any_part_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The standard library's email parser took 0.4-2 ms per part (21.8 s for 10,000).
    def unreachable(*_: object) -> None:
        raise AssertionError("a part was read")

    monkeypatch.setattr(multipart, "_read_part", unreachable)
    body, content_type = tiny_parts(10_000)
    started = time.perf_counter()
    with pytest.raises(multipart.MultipartError, match=r"^more than 64 parts$"):
        multipart.parse(body, content_type)
    assert time.perf_counter() - started < 0.5


def test_64_parts_are_read_and_65_are_refused() -> None:
    assert len(multipart.parse(*tiny_parts(multipart.MAX_PARTS)).fields) == 64
    with pytest.raises(multipart.MultipartError, match=r"^more than 64 parts$"):
        multipart.parse(*tiny_parts(multipart.MAX_PARTS + 1))


def test_a_part_whose_headers_exceed_the_cap_is_refused() -> None:
    padding = "p" * multipart.MAX_PART_HEADER_BYTES
    body = (
        f'--b\r\nContent-Disposition: form-data; name="f"\r\nX-Padding: {padding}\r\n\r\nx\r\n'
        "--b--\r\n"
    ).encode()
    with pytest.raises(multipart.MultipartError, match=r"^a part's headers exceed 8192 bytes$"):
        multipart.parse(body, "multipart/form-data; boundary=b")


def test_text_fields_over_the_cap_in_total_are_refused_and_files_are_not_counted() -> None:
    half = "v" * (multipart.MAX_TEXT_BYTES // 2)
    big_file = multipart.FilePart("file", "a.mp3", "audio/mpeg", b"x" * multipart.MAX_TEXT_BYTES)
    fitting = multipart.Form([("a", half), ("b", half)], [big_file])
    assert multipart.parse(*multipart.encode(fitting)) == fitting
    over = multipart.Form([("a", half), ("b", half), ("c", "v")])
    with pytest.raises(
        multipart.MultipartError, match=r"^text fields exceed 1048576 bytes in total$"
    ):
        multipart.parse(*multipart.encode(over))


def test_a_20_mib_file_of_line_breaks_is_read_in_well_under_a_second() -> None:
    # The email parser split the payload into lines: 8.7 s for this body.
    data = b"\r\n" * (10 * 1024 * 1024)
    body, content_type = multipart.encode(
        multipart.Form(
            [("model", "a/b")], [multipart.FilePart("file", "a.mp3", "audio/mpeg", data)]
        )
    )
    started = time.perf_counter()
    parsed = multipart.parse(body, content_type)
    assert time.perf_counter() - started < 1.0
    assert parsed.files[0].data == data


def test_a_hand_written_body_reads_as_a_client_library_would_send_it() -> None:
    body = (
        b"preamble\r\n"
        b"--XyZ \r\n"
        b"content-disposition: form-data;\r\n name=model\r\n\r\nopenai/whisper-1\r\n"
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a \\"b\\".mp3"\r\n'
        b"Content-Type: Audio/MPEG; rate=1\r\n\r\n\r\n--XyZx\r\n"
        b"\r\n--XyZ\r\nContent-Disposition: form-data; name=\"t\"; filename*=utf-8''%C3%A9.txt\r\n"
        b"\r\n\r\n"
        b"--XyZ--\r\nepilogue"
    )
    form = multipart.parse(body, 'multipart/form-data; charset=utf-8; BOUNDARY="XyZ"')
    assert form.fields == [("model", "openai/whisper-1")]
    assert form.files == [
        multipart.FilePart("file", 'a "b".mp3', "audio/mpeg", b"\r\n--XyZx\r\n"),
        multipart.FilePart("t", "\u00e9.txt", "text/plain", b""),
    ]


def test_bare_line_feeds_are_accepted_as_line_breaks() -> None:
    body = b'--b\nContent-Disposition: form-data; name="model"\n\nlocal/echo\n--b--\n'
    assert multipart.parse(body, "multipart/form-data; boundary=b").fields == [
        ("model", "local/echo")
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'--b\r\nContent-Disposition: form-data; name="f"\r\n\r\nx\r\n', "no closing boundary"),
        (b'--b\r\nContent-Disposition: form-data; name="f"', "a part's headers do not end"),
        (b"--bb\r\n\r\nx\r\n", "no opening boundary"),
    ],
    ids=["unclosed", "headers-unterminated", "boundary-prefix-only"],
)
def test_truncated_bodies_name_what_is_missing(body: bytes, message: str) -> None:
    with pytest.raises(multipart.MultipartError, match=f"^malformed multipart body: {message}$"):
        multipart.parse(body, "multipart/form-data; boundary=b")
