"""The OpenAPI document as one install serves it: the packaged contract, with the model
patterns narrowed to the providers this install knows.

A client (or a fuzzer) that reads the document should learn which models a submit may
name: `local/echo` is valid where `local` is configured and a 400 elsewhere. The names
change when the providers file is reloaded, so the document is narrowed per set of
names; the few sets a process ever sees are kept encoded.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterable
from typing import Any

# The longest model a submit may name (validation.MAX_MODEL_LENGTH, the CRD's limit).
_MAX_MODEL_LENGTH = 256
# The characters a provider name could hold that mean something in a pattern; each is
# escaped with a backslash, which both ECMA-262 (even in unicode mode, which allows no
# other identity escapes) and Python read as the character itself.
_PATTERN_SYNTAX = frozenset("\\^$.|?*+()[]{}/")
# One character or more to the end of the text, none a line break: `(?![\\s\\S])` ends
# the text in ECMA-262 and Python alike (Python's `$` also matches before a final "\\n").
_NO_LINE_BREAK = "[^\\n]+(?![\\s\\S])"
# Provider routes name their provider implicitly: a bare model is qualified with it.
_ROUTE_MODELS = {"OpenAIModel": "openai", "AnthropicModel": "anthropic"}


def model_pattern(providers: Iterable[str]) -> str:
    """A pattern for `provider/model` with a known provider and a model name without a
    line break."""
    names = "|".join(_escaped(name) for name in sorted(providers))
    # With no provider at all nothing is valid: `(?!)` matches nothing in either dialect.
    return f"^(?:{names})/{_NO_LINE_BREAK}" if names else "(?!)"


def _escaped(name: str) -> str:
    return "".join(f"\\{char}" if char in _PATTERN_SYNTAX else char for char in name)


def narrowed(document: dict[str, Any], providers: frozenset[str]) -> dict[str, Any]:
    """The document with `Model` (and the provider routes' models) for these providers."""
    served = copy.deepcopy(document)
    schemas = served["components"]["schemas"]
    schemas["Model"]["pattern"] = model_pattern(providers)
    for schema_name, provider in _ROUTE_MODELS.items():
        if provider in providers:
            schemas[schema_name] = _bare_or_qualified(provider)
    return served


def _bare_or_qualified(provider: str) -> dict[str, Any]:
    """A model on `provider`'s own route: provider/model as anywhere, or any other name,
    which the route qualifies as `provider/name` (so it must fit the limit with that)."""
    bare = {
        "type": "string",
        "minLength": 1,
        "maxLength": _MAX_MODEL_LENGTH - len(provider) - 1,
        "pattern": f"^{_NO_LINE_BREAK}",
    }
    return {"anyOf": [{"$ref": "#/components/schemas/Model"}, bare]}


@functools.lru_cache(maxsize=8)
def encoded_for(document: bytes, providers: frozenset[str]) -> bytes:
    """`narrowed` over the packaged document's JSON bytes, as JSON bytes."""
    served = narrowed(json.loads(document), providers)
    return json.dumps(served, separators=(",", ":")).encode()
