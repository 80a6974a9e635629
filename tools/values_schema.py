#!/usr/bin/env python3
"""charts/asyncjobs/values.schema.json, generated from the comments of values.yaml.

Every value in values.yaml has a comment right above it that names it and describes it;
`@schema` lines under that comment add what the default value cannot say. The syntax is
described at the top of values.yaml. The type comes from the default; a mapping accepts
only its documented keys unless `@schema` gives it `additionalProperties`.

    uv run --frozen python tools/values_schema.py          # write values.schema.json
    uv run --frozen python tools/values_schema.py --check  # exit 1 when it is out of date

tests/unit/test_values_schema.py fails when the committed schema differs from this output.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1] / "charts" / "asyncjobs"
COMMAND = "uv run --frozen python tools/values_schema.py"

# `# <path> -- <description>`: a path is keys joined by dots, `*` for every key of a
# mapping and `[]` for every item of a list.
DOC = re.compile(r"^\s*# (?P<path>[A-Za-z_*][\w*.\[\]-]*) -- (?P<text>.*)$")
ANNOTATION = re.compile(r"^\s*# @schema (?P<flow>.*)$")
COMMENT = re.compile(r"^\s*#(?: (?P<text>.*))?$")
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w-]*):(?:\s|$)")
SEGMENT = re.compile(r"\[\]|[^.\[\]]+")
# Annotation keys of our own; every other key is a JSON-schema keyword, copied as given.
OWN = ("required", "nullable")
JSON_TYPES = ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"))

ValuePath = tuple[str, ...]


class ValuesError(Exception):
    """values.yaml and its comments do not describe a schema; the message says where."""


@dataclass
class Doc:
    line: int
    text: list[str]
    annotations: list[tuple[int, str]] = field(default_factory=list)  # (line, flow mapping)
    schema: dict[str, Any] = field(default_factory=dict)

    @property
    def description(self) -> str:
        return " ".join(part for part in self.text if part)

    @property
    def required(self) -> bool:
        return bool(self.schema.get("required"))


def segments(path: str) -> ValuePath:
    return tuple(SEGMENT.findall(path))


def dotted(path: ValuePath) -> str:
    return ".".join(path).replace(".[]", "[]") or "(the root)"


def parse_comments(text: str) -> dict[ValuePath, Doc]:
    """Each `# path -- description` comment with its continuation and `@schema` lines
    (an `@schema` mapping may go on over the comment lines below it).

    A comment right above a key must name that key's path (so a copied comment cannot
    describe the wrong value); a comment followed by a blank line describes values that
    have no default, such as `providers.providers.*.baseURL`."""
    docs: dict[ValuePath, Doc] = {}
    current: tuple[ValuePath, Doc] | None = None
    enclosing: list[tuple[int, str]] = []  # (indent, key) of the keys around this line
    for number, line in enumerate(text.splitlines(), 1):
        if match := DOC.match(line):
            path = segments(match["path"])
            if path in docs:
                raise ValuesError(f"line {number}: {dotted(path)} is documented twice")
            current = path, Doc(number, [match["text"]])
            docs[path] = current[1]
        elif match := ANNOTATION.match(line):
            if current is None:
                raise ValuesError(f"line {number}: @schema without a `# path -- ` line above")
            current[1].annotations.append((number, match["flow"]))
        elif (match := COMMENT.match(line)) and current is not None:
            doc, text = current[1], (match["text"] or "").strip()
            if doc.annotations:  # an @schema mapping goes on over the lines below it
                start, flow = doc.annotations[-1]
                doc.annotations[-1] = start, f"{flow} {text}"
            else:
                doc.text.append(text)
        else:
            if match := KEY.match(line):
                indent = len(match["indent"])
                while enclosing and enclosing[-1][0] >= indent:
                    enclosing.pop()
                enclosing.append((indent, match["key"]))
                path = tuple(key for _, key in enclosing)
                if current is not None and current[0] != path:
                    raise ValuesError(
                        f"line {current[1].line}: the comment names {dotted(current[0])} "
                        f"but sits above {dotted(path)}"
                    )
            current = None
    for doc in docs.values():
        for number, flow in doc.annotations:
            doc.schema.update(_flow_mapping(flow, number))
    return docs


def _flow_mapping(flow: str, number: int) -> dict[str, Any]:
    try:
        value = yaml.safe_load("{" + flow + "}")
    except yaml.YAMLError as error:
        raise ValuesError(f"line {number}: @schema is not a YAML flow mapping: {error}") from None
    assert isinstance(value, dict)
    return value


def _json_type(value: Any, path: ValuePath) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    for python, name in JSON_TYPES:
        if isinstance(value, python):
            return name
    raise ValuesError(f"{dotted(path)}: cannot infer a type from {value!r}; add `@schema type:`")


class _Builder:
    def __init__(self, docs: dict[ValuePath, Doc]) -> None:
        self.docs = docs
        self.used: set[ValuePath] = set()

    def below(self, path: ValuePath) -> list[str]:
        """The next segments of the documented paths under `path`, in file order."""
        found: dict[str, None] = {}
        for documented in self.docs:
            if len(documented) > len(path) and documented[: len(path)] == path:
                found[documented[len(path)]] = None
        return list(found)

    def required(self, path: ValuePath) -> bool:
        doc = self.docs.get(path)
        return doc is not None and doc.required

    def node(self, path: ValuePath, value: Any, present: bool) -> dict[str, Any]:
        doc = self.docs.get(path)
        if doc is not None:
            self.used.add(path)
        given = dict(doc.schema) if doc else {}
        nullable = given.pop("nullable", False)
        for key in OWN:
            given.pop(key, None)
        below = self.below(path)
        named = [s for s in below if s not in ("*", "[]")]
        kind = given.pop("type", None)
        if kind is None and present:
            kind = _json_type(value, path)
        elif kind is None:
            kind = "object" if named or "*" in below else "array" if "[]" in below else None
        if kind is None:
            raise ValuesError(f"{dotted(path)} has no default; give its `@schema type:`")

        kinds = [*(kind if isinstance(kind, list) else [kind]), *(["null"] if nullable else [])]
        schema: dict[str, Any] = {"type": kinds[0] if len(kinds) == 1 else kinds}
        if doc is not None:
            schema["description"] = doc.description
        schema.update(given)
        described = False
        if "object" in kinds and not {"properties", "additionalProperties"} & set(given):
            if "*" in below:
                schema["additionalProperties"] = self.node((*path, "*"), None, False)
                described = True
            defaults = value if present and isinstance(value, dict) and "*" not in below else {}
            keys = list(dict.fromkeys([*defaults, *named]))
            if keys:
                schema["properties"] = {
                    key: self.node((*path, key), defaults.get(key), key in defaults) for key in keys
                }
                schema.setdefault("additionalProperties", False)
                required = [k for k in keys if self.required((*path, k))]
                if required:
                    schema["required"] = required
                described = True
        if "array" in kinds and "items" not in given and "[]" in below:
            schema["items"] = self.node((*path, "[]"), None, False)
            described = True
        if doc is None and not described:
            name = dotted(path)
            raise ValuesError(f"{name} has no comment: add `# {name} -- <description>` above it")
        return schema


def generate(values_text: str) -> dict[str, Any]:
    """The values schema that values.yaml's defaults and comments describe."""
    docs = parse_comments(values_text)
    values = yaml.safe_load(values_text) or {}
    builder = _Builder(docs)
    root = builder.node((), values, True)
    for path, doc in docs.items():
        if path not in builder.used:
            raise ValuesError(f"line {doc.line}: {dotted(path)} is documented but is no value")
    return {
        "$schema": "https://json-schema.org/draft-07/schema#",
        "title": "asyncjobs chart values",
        **root,
    }


def render(values_text: str) -> str:
    return json.dumps(generate(values_text), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail when the file is stale")
    parser.add_argument("--chart", type=Path, default=CHART)
    args = parser.parse_args(argv)
    values, target = args.chart / "values.yaml", args.chart / "values.schema.json"
    try:
        text = render(values.read_text())
    except ValuesError as error:
        print(f"{values}: {error}", file=sys.stderr)
        return 2
    if args.check:
        if not target.exists() or target.read_text() != text:
            print(f"{target} is out of date: run `{COMMAND}`", file=sys.stderr)
            return 1
        return 0
    target.write_text(text)
    print(f"wrote {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
