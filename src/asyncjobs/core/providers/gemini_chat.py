"""OpenAI chat bodies to Gemini's generateContent and back (pure functions).

Gemini speaks in `contents` of `user`/`model` turns made of parts (text, inlineData,
fileData, functionCall, functionResponse), keeps the system prompt in
`systemInstruction`, gathers sampling parameters in `generationConfig`, and identifies
a function response by the function's name rather than a call id, so tool results are
matched to their calls through the conversation's earlier tool calls.
"""

from __future__ import annotations

import json
import mimetypes
from typing import Any

from asyncjobs.core.providers.convert import (
    as_list,
    assistant_message,
    image_url_of,
    parse_arguments,
    parse_data_url,
    refuse,
    text_of,
    tool_call,
)
from asyncjobs.core.providers.transport import BadRequestBody

PROVIDER = "gemini"

FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "MALFORMED_FUNCTION_CALL": "stop",
}

# OpenAI name -> generationConfig name, for parameters that only change their spelling.
_GENERATION = {
    "temperature": "temperature",
    "top_p": "topP",
    "n": "candidateCount",
    "seed": "seed",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
}
_KNOWN = {
    *_GENERATION, "model", "messages", "max_tokens", "max_completion_tokens", "stop", "tools",
    "tool_choice", "response_format", "logprobs", "stream", "stream_options", "user", "store",
    "metadata", "service_tier", "parallel_tool_calls", "reasoning_effort", "generationConfig",
}  # fmt: skip


def _image_part(url: str) -> dict[str, Any]:
    inline = parse_data_url(url)
    if inline is not None:
        return {"inlineData": {"mimeType": inline.media_type, "data": inline.data}}
    guessed, _ = mimetypes.guess_type(url.split("?", 1)[0])
    return {"fileData": {"mimeType": guessed or "image/jpeg", "fileUri": url}}


def _parts(content: Any) -> list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[dict[str, Any]] = []
    for part in as_list(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.append({"text": str(part.get("text", ""))})
        elif kind == "image_url":
            parts.append(_image_part(image_url_of(part)))
        else:
            raise BadRequestBody(f"invalid request format: content part {kind!r} is not supported")
    return parts


def _function_response(content: Any) -> dict[str, Any]:
    # Gemini wants an object; a tool that answered JSON keeps its structure.
    text = text_of(content)
    try:
        parsed = json.loads(text)
    except ValueError:
        return {"result": text}
    return parsed if isinstance(parsed, dict) else {"result": parsed}


def _contents(messages: Any) -> tuple[list[dict[str, Any]], list[str]]:
    if not isinstance(messages, list) or not messages:
        raise BadRequestBody("messages is required for chat completion")
    contents: list[dict[str, Any]] = []
    system: list[str] = []
    call_names: dict[str, str] = {}

    def add(role: str, parts: list[dict[str, Any]]) -> None:
        if not parts:
            return
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})

    for message in messages:
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("system", "developer"):
            system.append(text_of(message.get("content")))
        elif role == "user":
            add("user", _parts(message.get("content")))
        elif role == "assistant":
            parts = _parts(message.get("content"))
            for call in as_list(message.get("tool_calls")):
                function = call.get("function") or {}
                call_names[str(call.get("id"))] = str(function.get("name"))
                args = parse_arguments(function.get("arguments"))
                parts.append({"functionCall": {"name": function.get("name"), "args": args}})
            add("model", parts)
        elif role == "tool":
            name = call_names.get(str(message.get("tool_call_id")))
            if name is None:
                raise BadRequestBody(
                    "invalid request format: a tool message must answer an earlier tool call"
                )
            response = _function_response(message.get("content"))
            add("user", [{"functionResponse": {"name": name, "response": response}}])
        else:
            raise BadRequestBody(f"invalid request format: message role {role!r} is not supported")
    return contents, system


def _tool_config(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice in ("auto", "required", "none"):
        mode = {"auto": "AUTO", "required": "ANY", "none": "NONE"}[choice]
        return {"functionCallingConfig": {"mode": mode}}
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}
    raise BadRequestBody(f"invalid request format: tool_choice {choice!r} is not supported")


def _generation_config(body: dict[str, Any]) -> dict[str, Any]:
    config = {
        gemini: body[name] for name, gemini in _GENERATION.items() if body.get(name) is not None
    }
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        config["maxOutputTokens"] = max_tokens
    if body.get("stop") is not None:
        config["stopSequences"] = as_list(body["stop"])
    response_format = body.get("response_format") or {}
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if schema is not None:
            config["responseJsonSchema"] = schema
    extra = body.get("generationConfig")
    return {**config, **extra} if isinstance(extra, dict) else config


def chat_request(body: dict[str, Any]) -> dict[str, Any]:
    """The generateContent body for an OpenAI chat completion body (model goes in the URL)."""
    refuse(body, PROVIDER, logprobs=(False, None))
    contents, system = _contents(body.get("messages"))
    out: dict[str, Any] = {"contents": contents}
    if any(system):
        out["systemInstruction"] = {"parts": [{"text": "\n\n".join(t for t in system if t)}]}
    config = _generation_config(body)
    if config:
        out["generationConfig"] = config
    if body.get("tools"):
        declarations = []
        for tool in as_list(body["tools"]):
            if not isinstance(tool, dict) or tool.get("type") != "function":
                raise BadRequestBody("invalid request format: only function tools are supported")
            function = tool.get("function") or {}
            declaration = {"name": function.get("name")}
            for key in ("description", "parameters"):
                if function.get(key):
                    declaration[key] = function[key]
            declarations.append(declaration)
        out["tools"] = [{"functionDeclarations": declarations}]
    tool_config = _tool_config(body.get("tool_choice"))
    if tool_config is not None:
        out["toolConfig"] = tool_config
    # Unknown fields are Gemini's own parameters (safetySettings, cachedContent).
    return {**out, **{k: v for k, v in body.items() if k not in _KNOWN and k not in out}}


def _choice(candidate: dict[str, Any], position: int) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in (candidate.get("content") or {}).get("parts") or []:
        if "text" in part and not part.get("thought"):
            texts.append(part["text"])
        elif "functionCall" in part:
            call = part["functionCall"]
            # Gemini gives ids only sometimes; ours are stable within the answer.
            call_id = call.get("id") or f"call_{position}_{len(calls)}"
            calls.append(tool_call(call_id, call.get("name"), call.get("args")))
    message = assistant_message(texts, calls)
    reason = candidate.get("finishReason") or "STOP"
    finish = "tool_calls" if calls and reason == "STOP" else FINISH_REASONS.get(reason, "stop")
    return {
        "index": candidate.get("index", position),
        "message": message,
        "finish_reason": finish,
        "logprobs": None,
    }


def chat_answer(answer: dict[str, Any], model: str, created: int) -> dict[str, Any]:
    """The OpenAI chat.completion body of a generateContent answer."""
    candidates = answer.get("candidates") or []
    choices = [_choice(candidate, i) for i, candidate in enumerate(candidates)]
    if not choices:
        # The prompt itself was blocked (promptFeedback.blockReason): no candidate at all.
        blocked = {"role": "assistant", "content": None, "refusal": None}
        choices = [
            {"index": 0, "message": blocked, "finish_reason": "content_filter", "logprobs": None}
        ]
    usage = answer.get("usageMetadata") or {}
    prompt = int(usage.get("promptTokenCount") or 0)
    completion = int(usage.get("candidatesTokenCount") or 0) + int(
        usage.get("thoughtsTokenCount") or 0
    )
    result: dict[str, Any] = {
        "id": answer.get("responseId") or f"gemini-{created}",
        "object": "chat.completion",
        "created": created,
        "model": answer.get("modelVersion") or model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": int(usage.get("totalTokenCount") or prompt + completion),
            "prompt_tokens_details": {
                "cached_tokens": int(usage.get("cachedContentTokenCount") or 0)
            },
        },
    }
    return result
