"""Small pure helpers that every translating wire format needs (Anthropic, Gemini, Cohere).

Clients write OpenAI shapes; providers with their own formats need the same few
readings of them: the text of a content that may be a string or a list of parts, an
image URL that may be a `data:` URL carrying base64 bytes, tool-call arguments that
arrive as a JSON string, and the parameters an OpenAI body may carry but a given
provider cannot honour.
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass
from typing import Any

from asyncjobs.core.providers.transport import BadRequestBody


def text_of(content: Any) -> str:
    """The text of a content: a string, or the `text` of its text parts joined."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    raise BadRequestBody(
        f"invalid request format: content must be a string or parts, not {type(content).__name__}"
    )


@dataclass(frozen=True)
class InlineData:
    media_type: str
    data: str  # base64, as it came


def parse_data_url(url: str) -> InlineData | None:
    """The media type and base64 data of a `data:<type>;base64,<data>` URL; None otherwise."""
    if not url.startswith("data:"):
        return None
    header, comma, data = url[5:].partition(",")
    media_type, _, encoding = header.partition(";")
    if not comma or encoding != "base64" or not media_type:
        raise BadRequestBody("invalid request format: image data URLs must be base64")
    return InlineData(media_type, data)


def image_url_of(part: dict[str, Any]) -> str:
    """The URL of an OpenAI image part: chat's `{"image_url": {"url"}}` or Responses' string."""
    value = part.get("image_url")
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str) or not url:
        raise BadRequestBody("invalid request format: an image part needs image_url")
    return url


def parse_arguments(arguments: Any) -> dict[str, Any]:
    """Tool-call arguments as an object: OpenAI sends them as a JSON string."""
    if isinstance(arguments, dict):
        return arguments
    if arguments in (None, ""):
        return {}
    try:
        parsed = json.loads(arguments)
    except (TypeError, ValueError) as error:
        raise BadRequestBody(
            "invalid request format: tool call arguments must be a JSON object"
        ) from error
    if not isinstance(parsed, dict):
        raise BadRequestBody("invalid request format: tool call arguments must be a JSON object")
    return parsed


def dump_arguments(arguments: Any) -> str:
    return json.dumps(arguments if arguments is not None else {}, ensure_ascii=False)


def refuse(body: dict[str, Any], provider: str, **allowed: Any) -> None:
    """Fails on a parameter the provider cannot honour unless it has its harmless value.

    Dropping `n: 3` or `logprobs: true` silently would hand the client an answer that
    looks complete and is not, so such requests fail as a 400 instead.
    """
    for name, harmless in allowed.items():
        if name in body and body[name] not in harmless:
            raise BadRequestBody(
                f"invalid request format: {name}={json.dumps(body[name])} is not supported "
                f"by {provider}"
            )


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def embedding_list(vectors: list[list[float]], model: str, encoding_format: Any) -> dict[str, Any]:
    """OpenAI's embedding list for plain vectors; `base64` is little-endian float32 as there.

    Usage is zero because the translated providers report no token counts for embeddings;
    callers that have counts replace it.
    """

    def encoded(values: list[float]) -> list[float] | str:
        if encoding_format != "base64":
            return values
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()

    data = [
        {"object": "embedding", "index": index, "embedding": encoded(vector)}
        for index, vector in enumerate(vectors)
    ]
    usage = {"prompt_tokens": 0, "total_tokens": 0}
    return {"object": "list", "data": data, "model": model, "usage": usage}


def tool_call(call_id: Any, name: Any, arguments: Any) -> dict[str, Any]:
    """One entry of an OpenAI assistant message's `tool_calls`."""
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": dump_arguments(arguments)},
    }


def assistant_message(texts: list[str], calls: list[dict[str, Any]]) -> dict[str, Any]:
    """An OpenAI assistant message; content is null only when the answer is tool calls."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    return message
