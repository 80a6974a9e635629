"""The local provider's answers for audio, images and OCR, with tiny but valid files.

The offline provider must answer image and speech requests with bytes a client can
actually decode (a PNG viewer, an audio player), yet stay fast and dependency-free, so
the files are made by hand here: an 8x8 PNG of one colour and a tenth of a second of a
sine tone in a WAV container. The seed picks the colour and the pitch, so the same
request always yields the same file.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
import zlib
from typing import Any

from asyncjobs.core.multipart import Form
from asyncjobs.core.providers.base import speech_result
from asyncjobs.core.providers.local_text import Context

PNG_SIDE = 8
WAV_SAMPLE_RATE = 8000
WAV_SECONDS = 0.1


def tiny_png(seed: bytes) -> bytes:
    """An 8x8 RGB PNG whose colour comes from the first three bytes of the seed."""
    red, green, blue = (seed + b"\x00\x00\x00")[:3]
    # Each scanline starts with filter type 0 (none), then the pixels.
    row = b"\x00" + bytes((red, green, blue)) * PNG_SIDE
    header = struct.pack(">IIBBBBB", PNG_SIDE, PNG_SIDE, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(row * PNG_SIDE))
        + _png_chunk(b"IEND", b"")
    )


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def short_wav(seed: bytes) -> bytes:
    """A 16-bit mono PCM WAV of a short tone whose pitch comes from the seed."""
    frequency = 220 + (seed[0] if seed else 0) * 2
    count = int(WAV_SAMPLE_RATE * WAV_SECONDS)
    samples = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * frequency * i / WAV_SAMPLE_RATE)))
        for i in range(count)
    )
    fmt = struct.pack("<HHIIHH", 1, 1, WAV_SAMPLE_RATE, WAV_SAMPLE_RATE * 2, 2, 16)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    chunks += b"data" + struct.pack("<I", len(samples)) + samples
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def speech(ctx: Context, body: dict[str, Any]) -> dict[str, Any]:
    # Whatever format was asked for, the answer is WAV: encoding mp3 or opus by hand is
    # not worth it offline, and content_type says truthfully what the bytes are.
    return speech_result(short_wav(ctx.seed), "audio/wav")


def transcription(ctx: Context, form: Form) -> dict[str, Any]:
    files = form.files_named("file")
    described = f"{files[0].filename} ({len(files[0].data)} bytes)" if files else "no file"
    text = f"Local transcription of {described} by {ctx.model}."
    if form.get("response_format") != "verbose_json":
        return {"text": text}
    return {
        "task": "transcribe",
        "language": form.get("language") or "english",
        "duration": 1.0,
        "text": text,
        "segments": [{"id": 0, "seek": 0, "start": 0.0, "end": 1.0, "text": text}],
    }


def _images(ctx: Context, n_value: Any, response_format: Any) -> dict[str, Any]:
    try:
        n = min(max(int(n_value or 1), 1), 10)
    except (TypeError, ValueError):
        n = 1
    data = []
    for index in range(n):
        encoded = base64.b64encode(tiny_png(hashlib.sha256(ctx.seed + bytes([index])).digest()))
        # Offline there is nowhere to host a file, so a URL answer is a data URL.
        if response_format == "url":
            data.append({"url": "data:image/png;base64," + encoded.decode()})
        else:
            data.append({"b64_json": encoded.decode()})
    return {"created": ctx.created, "data": data}


def image_generation(ctx: Context, body: dict[str, Any]) -> dict[str, Any]:
    return _images(ctx, body.get("n"), body.get("response_format"))


def image_edit(ctx: Context, form: Form) -> dict[str, Any]:
    return _images(ctx, form.get("n"), form.get("response_format"))


def ocr(ctx: Context, body: dict[str, Any]) -> dict[str, Any]:
    raw = body.get("document")
    document: dict[str, Any] = raw if isinstance(raw, dict) else {}
    kind = "image" if document.get("type") == "image_url" else "document"
    source = document.get("image_url") or document.get("document_url") or ""
    return {
        "model": ctx.model,
        "pages": [
            {
                "index": 0,
                "markdown": f"# Local OCR\n\nText recognised from the {kind} by {ctx.model}.",
                "images": [],
                "dimensions": {"dpi": 200, "height": 2200, "width": 1700},
            }
        ],
        "usage_info": {"pages_processed": 1, "doc_size_bytes": len(str(source))},
    }
