"""values.schema.json is generated from the comments of values.yaml (tools/values_schema.py):
the committed file matches the generator's output, and the comment syntax means what the
top of values.yaml says."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from tools.values_schema import CHART, COMMAND, ValuesError, generate, main, render


def schema_of(values: str) -> dict[str, Any]:
    schema = generate(textwrap.dedent(values))
    assert schema.pop("$schema").startswith("https://json-schema.org/")
    assert schema.pop("title") == "asyncjobs chart values"
    return schema


def test_committed_schema_is_generated_from_values_yaml() -> None:
    committed = (CHART / "values.schema.json").read_text()
    generated = render((CHART / "values.yaml").read_text())
    assert committed == generated, (
        f"charts/asyncjobs/values.schema.json drifted from values.yaml: run `{COMMAND}`"
    )


def test_check_fails_with_the_command_when_the_schema_is_stale(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "values.yaml").write_text("# port -- Port.\nport: 80\n")
    assert main(["--chart", str(tmp_path), "--check"]) == 1
    assert COMMAND in capsys.readouterr().err
    assert main(["--chart", str(tmp_path)]) == 0
    assert main(["--chart", str(tmp_path), "--check"]) == 0


def test_types_come_from_the_defaults_and_mappings_are_closed() -> None:
    schema = schema_of(
        """
        # Free text before the first documented value is ignored.

        server:
          # server.port -- Port the server listens on,
          # over two lines.
          port: 80
          # server.ratio -- A ratio.
          ratio: 0.5
          # server.name -- A name.
          name: ""
          # server.enabled -- A switch.
          enabled: true
          # server.hosts -- Hosts.
          hosts: []
          # server.extra -- Anything.
          extra: {}
        """
    )
    assert schema == {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "server": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "port": {
                        "type": "integer",
                        "description": "Port the server listens on, over two lines.",
                    },
                    "ratio": {"type": "number", "description": "A ratio."},
                    "name": {"type": "string", "description": "A name."},
                    "enabled": {"type": "boolean", "description": "A switch."},
                    "hosts": {"type": "array", "description": "Hosts."},
                    "extra": {"type": "object", "description": "Anything."},
                },
            }
        },
    }


def test_annotations_add_keywords_required_and_nullable() -> None:
    schema = schema_of(
        """
        # size -- How many.
        # @schema minimum: 1, maximum: 100
        # @schema required: true
        size: 3
        # mode -- A mode, or null for the default; the list of modes goes on over the
        # next comment line.
        # @schema nullable: true, enum: [fast,
        #   slow, null]
        mode: fast
        # budget -- A number or a percentage.
        # @schema type: [integer, string], pattern: "^[0-9]+%?$"
        budget: 1
        # proxy -- A proxy, or null for none.
        # @schema nullable: true
        proxy:
          # proxy.url -- Its URL.
          url: http://proxy
        # labels -- Labels.
        # @schema additionalProperties: {type: string}
        labels:
          team: a
        """
    )
    properties = schema["properties"]
    assert schema["required"] == ["size"]
    assert properties["size"] == {
        "type": "integer",
        "description": "How many.",
        "minimum": 1,
        "maximum": 100,
    }
    assert properties["mode"]["type"] == ["string", "null"]
    assert properties["mode"]["enum"] == ["fast", "slow", None]
    assert properties["budget"]["type"] == ["integer", "string"]
    assert properties["proxy"]["type"] == ["object", "null"]
    assert properties["proxy"]["properties"] == {
        "url": {"type": "string", "description": "Its URL."}
    }
    assert properties["labels"] == {
        "type": "object",
        "description": "Labels.",
        "additionalProperties": {"type": "string"},
    }


def test_star_and_brackets_describe_values_without_defaults() -> None:
    schema = schema_of(
        """
        # backends -- Backends by name.
        backends:
          default:
            url: http://localhost
          # backends.*.url -- Where it is.
          # @schema required: true, type: string
          # backends.*.keys[].name -- Secret name.
          # @schema type: string

        """
    )
    backend = schema["properties"]["backends"]["additionalProperties"]
    assert backend == {
        "type": "object",
        "additionalProperties": False,
        "required": ["url"],
        "properties": {
            "url": {"type": "string", "description": "Where it is."},
            "keys": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"name": {"type": "string", "description": "Secret name."}},
                },
            },
        },
    }


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param("port: 80\n", "port has no comment", id="undocumented"),
        pytest.param(
            "a:\n  # a.port -- Port.\n  port: 80\n  host: x\n", "a.host has no comment", id="nested"
        ),
        pytest.param(
            "# port -- Port.\nhost: x\n", "names port but sits above host", id="misplaced"
        ),
        pytest.param("# gone -- Old.\n\n# a -- A.\na: 1\n", "gone has no default", id="no-type"),
        pytest.param(
            "# a -- A.\n# @schema additionalProperties: true\na:\n  # a.b -- B.\n  b: 1\n",
            "a.b is documented but is no value",
            id="under-free-form",
        ),
        pytest.param("# a -- A.\n# @schema minimum: [\na: 1\n", "line 2", id="bad-flow"),
        pytest.param("# @schema minimum: 1\na: 1\n", "line 1: @schema without", id="orphan"),
        pytest.param("# a -- A.\n\n# a -- A.\na: 1\n", "a is documented twice", id="twice"),
    ],
)
def test_mistakes_in_the_comments_are_named(values: str, message: str) -> None:
    with pytest.raises(ValuesError, match=message):
        generate(values)
