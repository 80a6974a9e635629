"""Realistic success bodies of the fake OpenAI server, one builder per path.

Written independently of the local provider on purpose: the fake stands for the real
service, so a shape mistake in our own code cannot hide by being copied into the fake.
Each builder returns (content type, body bytes), because speech answers binary audio
and transcriptions may answer plain text.
"""

from __future__ import annotations

import base64
import json
import struct
import time
import zlib
from collections.abc import Callable
from typing import Any

from .openai_checks import ReceivedForm

Answer = tuple[str, bytes]

SPEECH_MEDIA_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}


def _png_1x1() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\x10\x80\xf0")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


PNG_B64 = base64.b64encode(_png_1x1()).decode()


def _json(value: dict[str, Any]) -> Answer:
    return "application/json", json.dumps(value).encode()


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def chat(body: dict[str, Any]) -> Answer:
    return _json(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "fake chat answer",
                        "refusal": None,
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": _usage(len(body["messages"]) * 5, 3),
            "system_fingerprint": "fp_fake",
        }
    )


def completion(body: dict[str, Any]) -> Answer:
    return _json(
        {
            "id": "cmpl-fake",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {"text": " fake completion", "index": 0, "logprobs": None, "finish_reason": "stop"}
            ],
            "usage": _usage(4, 2),
        }
    )


def responses(body: dict[str, Any]) -> Answer:
    return _json(
        {
            "id": "resp_fake",
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed",
            "model": body["model"],
            "output": [
                {
                    "type": "message",
                    "id": "msg_fake",
                    "status": "completed",
                    "role": "assistant",
                    "content": [
                        {"type": "output_text", "text": "fake response", "annotations": []}
                    ],
                }
            ],
            "usage": {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7},
        }
    )


def embeddings(body: dict[str, Any]) -> Answer:
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    size = body.get("dimensions") or 4
    data = [
        {"object": "embedding", "index": i, "embedding": [round(0.1 * (i + 1), 3)] * size}
        for i in range(len(inputs))
    ]
    return _json({"object": "list", "data": data, "model": body["model"], "usage": _usage(3, 0)})


def speech(body: dict[str, Any]) -> Answer:
    media_type = SPEECH_MEDIA_TYPES.get(body.get("response_format") or "mp3", "audio/mpeg")
    # Stands for encoded audio: bytes that are not UTF-8, so a text decode would break.
    return media_type, b"ID3\x04\x00\xff\xfb\x90fake-audio:" + str(body["voice"]).encode()


def image_generation(body: dict[str, Any]) -> Answer:
    return _images(int(body.get("n") or 1), body.get("response_format"))


def _images(n: int, response_format: Any) -> Answer:
    if response_format == "url":
        data = [{"url": f"https://fake.invalid/image-{i}.png"} for i in range(n)]
    else:
        data = [{"b64_json": PNG_B64, "revised_prompt": None} for _ in range(n)]
    return _json({"created": int(time.time()), "data": data})


def rerank(body: dict[str, Any]) -> Answer:
    query = set(str(body["query"]).lower().split())
    texts = [d["text"] if isinstance(d, dict) else str(d) for d in body["documents"]]
    scores = [len(query & set(text.lower().split())) / (len(query) or 1) for text in texts]
    ranked = sorted(range(len(texts)), key=lambda i: (-scores[i], i))[: body.get("top_n")]
    results = [{"index": i, "relevance_score": scores[i]} for i in ranked]
    return _json(
        {
            "id": "rerank-fake",
            "model": body["model"],
            "results": results,
            "usage": {"total_tokens": 9},
        }
    )


def ocr(body: dict[str, Any]) -> Answer:
    page = {
        "index": 0,
        "markdown": "# Fake page",
        "images": [],
        "dimensions": {"dpi": 72, "height": 100, "width": 80},
    }
    return _json({"model": body["model"], "pages": [page], "usage_info": {"pages_processed": 1}})


JSON_ANSWERS: dict[str, Callable[[dict[str, Any]], Answer]] = {
    "/v1/chat/completions": chat,
    "/v1/completions": completion,
    "/v1/responses": responses,
    "/v1/embeddings": embeddings,
    "/v1/audio/speech": speech,
    "/v1/images/generations": image_generation,
    "/v1/rerank": rerank,
    "/v1/ocr": ocr,
}


def transcription(form: ReceivedForm) -> Answer:
    text = "fake transcription"
    response_format = (form.fields.get("response_format") or ["json"])[0]
    if response_format in ("text", "srt", "vtt"):
        return "text/plain; charset=utf-8", text.encode()
    if response_format == "verbose_json":
        return _json(
            {
                "task": "transcribe",
                "language": "english",
                "duration": 1.5,
                "text": text,
                "segments": [],
            }
        )
    return _json({"text": text})


def form_answer(path: str, form: ReceivedForm) -> Answer:
    if path == "/v1/audio/transcriptions":
        return transcription(form)
    n = int((form.fields.get("n") or ["1"])[0])
    return _images(n, (form.fields.get("response_format") or [None])[0])
