"""OpenAI chat and Responses bodies ⇄ Anthropic's Messages API, both ways (pure functions).

Anthropic keeps the system prompt beside the messages, has only `user` and `assistant`
turns (tool results travel in a user turn as `tool_result` blocks, tool calls in an
assistant turn as `tool_use` blocks with parsed input), wants `max_tokens` always, and
names stop reasons and usage its own way. The operator sends chat and Responses bodies
as Messages and reads the answers back (`chat_request`, `chat_answer`,
`responses_request`, `responses_answer`); the API's `/anthropic/v1/messages` route runs
a Messages body as a chat job and gives the chat answer back as a Message
(`request_as_chat`, `answer_as_message`). Both directions share one stop-reason table
and one reading of each content block, so they cannot drift apart, and a test can check
a translation without a server.
"""

from __future__ import annotations

from typing import Any

from asyncjobs.core.providers.convert import (
    as_list,
    assistant_message,
    dump_arguments,
    image_url_of,
    parse_arguments,
    parse_data_url,
    refuse,
    text_of,
    tool_call,
)
from asyncjobs.core.providers.transport import BadRequestBody

PROVIDER = "anthropic"
# Anthropic requires max_tokens; this is used when the client set no limit.
DEFAULT_MAX_TOKENS = 4096

# Anthropic's stop reasons and the chat finish reason each one means. Where several mean
# the same, the first is the one a chat finish reason goes back as (STOP_REASONS).
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
STOP_REASONS = {finish: stop for stop, finish in reversed(FINISH_REASONS.items())}
_DEFAULT_FINISH_REASON = "stop"

# Messages parameters a chat completion takes under the same name (stop_sequences is
# chat's stop).
_SAME_IN_CHAT = ("model", "fallbacks", "max_tokens", "temperature", "top_p", "stream")

# OpenAI parameters with no Anthropic meaning whose default is harmless to drop.
_DROPPED_CHAT = {
    "model", "stream", "stream_options", "store", "metadata", "service_tier", "seed",
    "presence_penalty", "frequency_penalty", "logit_bias", "reasoning_effort", "modalities",
    "prediction", "top_logprobs",
}  # fmt: skip
_DROPPED_RESPONSES = {
    "model", "stream", "store", "metadata", "service_tier", "include", "reasoning",
    "truncation", "background", "prompt_cache_key", "safety_identifier",
}  # fmt: skip


class _Turns:
    """Messages in Anthropic's order: consecutive blocks of one role merge into one turn."""

    def __init__(self) -> None:
        self.system: list[str] = []
        self.messages: list[dict[str, Any]] = []

    def add(self, role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if self.messages and self.messages[-1]["role"] == role:
            self.messages[-1]["content"].extend(blocks)
        else:
            self.messages.append({"role": role, "content": list(blocks)})


def finish_reason(stop_reason: Any) -> str:
    """The chat finish reason of an Anthropic stop reason; an unknown one reads as stop."""
    return FINISH_REASONS.get(stop_reason or "", _DEFAULT_FINISH_REASON)


def stop_reason(finish_reason: Any) -> str:
    """The Anthropic stop reason of a chat finish reason; an unknown one reads as end_turn."""
    return STOP_REASONS.get(finish_reason or "", STOP_REASONS[_DEFAULT_FINISH_REASON])


def _text_block(text: str) -> list[dict[str, Any]]:
    # Anthropic refuses empty text blocks.
    return [{"type": "text", "text": text}] if text else []


def _image_block(url: str) -> dict[str, Any]:
    inline = parse_data_url(url)
    if inline is None:
        return {"type": "image", "source": {"type": "url", "url": url}}
    source = {"type": "base64", "media_type": inline.media_type, "data": inline.data}
    return {"type": "image", "source": source}


def _image_url(block: dict[str, Any]) -> str:
    """The URL of an image block (_image_block's inverse): a data URL for base64 data."""
    source = block.get("source") or {}
    if source.get("type") == "base64":
        return f"data:{source.get('media_type', '')};base64,{source.get('data', '')}"
    if source.get("type") == "url":
        return str(source.get("url", ""))
    raise BadRequestBody("invalid request format: image blocks need a base64 or url source")


def _content_blocks(content: Any) -> list[dict[str, Any]]:
    """Blocks of an OpenAI content (chat parts or Responses input parts)."""
    if content is None or isinstance(content, str):
        return _text_block(content or "")
    blocks: list[dict[str, Any]] = []
    for part in as_list(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "input_text", "output_text"):
            blocks += _text_block(str(part.get("text", "")))
        elif kind in ("image_url", "input_image"):
            blocks.append(_image_block(image_url_of(part)))
        elif kind == "refusal":
            blocks += _text_block(str(part.get("refusal", "")))
        else:
            raise BadRequestBody(f"invalid request format: content part {kind!r} is not supported")
    return blocks


def _tool_use(call_id: Any, name: Any, arguments: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": name, "input": parse_arguments(arguments)}


def _tool_result(call_id: Any, output: Any) -> dict[str, Any]:
    if not call_id:
        raise BadRequestBody("invalid request format: a tool result needs its tool call id")
    return {"type": "tool_result", "tool_use_id": call_id, "content": text_of(output)}


def _chat_turns(messages: Any) -> _Turns:
    if not isinstance(messages, list) or not messages:
        raise BadRequestBody("messages is required for chat completion")
    turns = _Turns()
    for message in messages:
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("system", "developer"):
            turns.system.append(text_of(message.get("content")))
        elif role == "user":
            turns.add("user", _content_blocks(message.get("content")))
        elif role == "assistant":
            blocks = _content_blocks(message.get("content"))
            for call in as_list(message.get("tool_calls")):
                function = call.get("function") or {}
                blocks.append(
                    _tool_use(call.get("id"), function.get("name"), function.get("arguments"))
                )
            turns.add("assistant", blocks)
        elif role == "tool":
            turns.add("user", [_tool_result(message.get("tool_call_id"), message.get("content"))])
        else:
            raise BadRequestBody(f"invalid request format: message role {role!r} is not supported")
    return turns


def _tools(tools: Any, *, nested: bool) -> list[dict[str, Any]]:
    """OpenAI function tools (chat nests them under `function`, Responses does not)."""
    converted = []
    for tool in as_list(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else tool
            raise BadRequestBody(f"invalid request format: tool type {kind!r} is not supported")
        function = tool.get("function", {}) if nested else tool
        entry: dict[str, Any] = {
            "name": function.get("name"),
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if function.get("description"):
            entry["description"] = function["description"]
        converted.append(entry)
    return converted


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    result: dict[str, Any] | None
    if choice is None:
        result = None
    elif choice == "auto":
        result = {"type": "auto"}
    elif choice == "required":
        result = {"type": "any"}
    elif choice == "none":
        result = {"type": "none"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name") or choice.get("name")
        result = {"type": "tool", "name": name}
    else:
        raise BadRequestBody(f"invalid request format: tool_choice {choice!r} is not supported")
    if parallel is False:
        result = {**(result or {"type": "auto"}), "disable_parallel_tool_use": True}
    return result


def _common(body: dict[str, Any], turns: _Turns, model: str, max_tokens: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "model": model,
        "max_tokens": max_tokens if max_tokens is not None else DEFAULT_MAX_TOKENS,
        "messages": turns.messages,
    }
    system = "\n\n".join(text for text in turns.system if text)
    if system:
        out["system"] = system
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("user"):
        out["metadata"] = {"user_id": body["user"]}
    return out


def chat_request(body: dict[str, Any], model: str) -> dict[str, Any]:
    """The Messages request for an OpenAI chat completion body."""
    refuse(body, PROVIDER, n=(1, None), logprobs=(False, None))
    _refuse_structured(body.get("response_format"))
    turns = _chat_turns(body.get("messages"))
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    out = _common(body, turns, model, max_tokens)
    if body.get("stop") is not None:
        out["stop_sequences"] = as_list(body["stop"])
    if body.get("tools"):
        out["tools"] = _tools(body["tools"], nested=True)
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if choice is not None:
        out["tool_choice"] = choice
    known = {
        "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop",
        "tools", "tool_choice", "parallel_tool_calls", "user", "n", "logprobs",
        "response_format", *_DROPPED_CHAT,
    }  # fmt: skip
    # Unknown fields are the client's extra parameters for this provider (top_k, thinking).
    return {**out, **{k: v for k, v in body.items() if k not in known and k not in out}}


def _refuse_structured(response_format: Any) -> None:
    if isinstance(response_format, dict) and response_format.get("type") not in (None, "text"):
        raise BadRequestBody(
            f"invalid request format: response_format {response_format.get('type')} "
            f"is not supported by {PROVIDER}"
        )


def _response_items(items: Any) -> _Turns:
    turns = _Turns()
    if isinstance(items, str):
        turns.add("user", _text_block(items))
        return turns
    if not isinstance(items, list) or not items:
        raise BadRequestBody("input is required for responses")
    for item in items:
        if not isinstance(item, dict):
            raise BadRequestBody("invalid request format: input items must be objects")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role in ("system", "developer"):
                turns.system.append(text_of(item.get("content")))
            elif role in ("user", "assistant"):
                turns.add(role, _content_blocks(item.get("content")))
            else:
                raise BadRequestBody(
                    f"invalid request format: input role {role!r} is not supported"
                )
        elif kind == "function_call":
            block = _tool_use(item.get("call_id"), item.get("name"), item.get("arguments"))
            turns.add("assistant", [block])
        elif kind == "function_call_output":
            turns.add("user", [_tool_result(item.get("call_id"), item.get("output"))])
        elif kind != "reasoning":  # our own earlier reasoning items carry nothing to resend
            raise BadRequestBody(f"invalid request format: input item {kind!r} is not supported")
    return turns


def responses_request(body: dict[str, Any], model: str) -> dict[str, Any]:
    """The Messages request for an OpenAI Responses body."""
    if body.get("previous_response_id"):
        raise BadRequestBody(
            f"invalid request format: previous_response_id is not supported by {PROVIDER}; "
            "send the conversation as input items"
        )
    text = body.get("text")
    if isinstance(text, dict):
        _refuse_structured(text.get("format"))
    turns = _response_items(body.get("input"))
    if body.get("instructions"):
        turns.system.insert(0, str(body["instructions"]))
    out = _common(body, turns, model, body.get("max_output_tokens"))
    if body.get("tools"):
        out["tools"] = _tools(body["tools"], nested=False)
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if choice is not None:
        out["tool_choice"] = choice
    known = {
        "input", "instructions", "max_output_tokens", "temperature", "top_p", "tools",
        "tool_choice", "parallel_tool_calls", "user", "text", "previous_response_id",
        *_DROPPED_RESPONSES,
    }  # fmt: skip
    return {**out, **{k: v for k, v in body.items() if k not in known and k not in out}}


# -- answers ----------------------------------------------------------------------------


def _usage_numbers(message: dict[str, Any]) -> tuple[int, int, int]:
    """(input tokens including cache, output tokens, cached input tokens)."""
    usage = message.get("usage") or {}
    cached = int(usage.get("cache_read_input_tokens") or 0)
    written = int(usage.get("cache_creation_input_tokens") or 0)
    prompt = int(usage.get("input_tokens") or 0) + cached + written
    return prompt, int(usage.get("output_tokens") or 0), cached


def chat_answer(message: dict[str, Any], created: int) -> dict[str, Any]:
    """The OpenAI chat.completion body of a Messages answer."""
    texts, calls = [], []
    for block in message.get("content") or []:
        if block.get("type") == "text":
            texts.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            calls.append(tool_call(block["id"], block["name"], block.get("input")))
    reply = assistant_message(texts, calls)
    prompt, completion, cached = _usage_numbers(message)
    return {
        "id": message.get("id"),
        "object": "chat.completion",
        "created": created,
        "model": message.get("model"),
        "choices": [
            {
                "index": 0,
                "message": reply,
                "finish_reason": finish_reason(message.get("stop_reason")),
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        },
    }


def responses_answer(message: dict[str, Any], created: int) -> dict[str, Any]:
    """The OpenAI Responses body of a Messages answer."""
    message_id = str(message.get("id") or "")
    output: list[dict[str, Any]] = []
    parts = [
        {"type": "output_text", "text": block.get("text", ""), "annotations": []}
        for block in message.get("content") or []
        if block.get("type") == "text"
    ]
    if parts:
        output.append(
            {
                "type": "message",
                "id": message_id,
                "status": "completed",
                "role": "assistant",
                "content": parts,
            }
        )
    for block in message.get("content") or []:
        if block.get("type") == "tool_use":
            output.append(
                {
                    "type": "function_call",
                    "id": f"fc_{block['id']}",
                    "call_id": block["id"],
                    "name": block["name"],
                    "arguments": dump_arguments(block.get("input")),
                    "status": "completed",
                }
            )
    truncated = finish_reason(message.get("stop_reason")) == "length"
    prompt, completion, cached = _usage_numbers(message)
    return {
        "id": message_id,
        "object": "response",
        "created_at": created,
        "status": "incomplete" if truncated else "completed",
        "incomplete_details": {"reason": "max_output_tokens"} if truncated else None,
        "model": message.get("model"),
        "output": output,
        "usage": {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + completion,
        },
        "error": None,
    }


# -- Messages to chat, for the API's /anthropic/v1/messages route ----------------------


def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    if not isinstance(system, list):
        raise BadRequestBody(
            "invalid request format: system must be a string or a list of content blocks"
        )
    texts = []
    for block in system:
        if not isinstance(block, dict) or block.get("type") != "text":
            raise BadRequestBody("invalid request format: system accepts only text blocks")
        texts.append(str(block.get("text", "")))
    return "\n".join(texts)


def _chat_part(block: Any) -> dict[str, Any]:
    """The chat content part of a content block (_content_blocks' inverse)."""
    if not isinstance(block, dict):
        raise BadRequestBody("invalid request format: content blocks must be objects")
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": str(block.get("text", ""))}
    if kind == "image":
        return {"type": "image_url", "image_url": {"url": _image_url(block)}}
    raise BadRequestBody(
        f"invalid request format: content block type {kind!r} is not supported for async messages"
    )


def request_as_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The chat completion body of a Messages request (chat_request's inverse).

    Text and images travel; other blocks fail, since a chat job offers the model no
    tools the route could hand back. A missing `messages` is left for validation.
    """
    chat: dict[str, Any] = {name: body[name] for name in _SAME_IN_CHAT if name in body}
    if "stop_sequences" in body:
        chat["stop"] = body["stop_sequences"]
    messages: list[dict[str, Any]] = []
    if body.get("system"):
        messages.append({"role": "system", "content": _system_text(body["system"])})
    turns = body.get("messages")
    if turns is not None and not isinstance(turns, list):
        raise BadRequestBody("invalid request format: messages must be a list")
    for turn in turns or []:
        if not isinstance(turn, dict) or turn.get("role") not in ("user", "assistant"):
            raise BadRequestBody(
                "invalid request format: each message needs role user or assistant"
            )
        content = turn.get("content")
        if isinstance(content, list):
            content = [_chat_part(block) for block in content]
        elif not isinstance(content, str):
            raise BadRequestBody(
                "invalid request format: message content must be a string or a list of blocks"
            )
        messages.append({"role": turn["role"], "content": content})
    chat["messages"] = messages
    user = (body.get("metadata") or {}).get("user_id")
    if user:
        chat["user"] = user
    return chat


def empty_message(message_id: str, model: str | None) -> dict[str, Any]:
    """A Messages answer with nothing in it yet (what a job that is still running shows)."""
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model or "",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0},
    }


def answer_as_message(chat: dict[str, Any], message_id: str) -> dict[str, Any]:
    """The Messages answer of a chat.completion body (chat_answer's inverse for text)."""
    message = empty_message(message_id, chat.get("model"))
    choice = (chat.get("choices") or [{}])[0]
    message["content"] = _text_block((choice.get("message") or {}).get("content") or "")
    message["stop_reason"] = stop_reason(choice.get("finish_reason"))
    usage = chat.get("usage") or {}
    message["usage"] = {
        "input_tokens": usage.get("prompt_tokens", 0),
        "output_tokens": usage.get("completion_tokens", 0),
    }
    return message
