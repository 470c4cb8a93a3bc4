"""Schema derivation from type hints and docstrings (table tests), and checking the model's arguments."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, TypedDict

import pytest

from app.core import harmony
from app.core.tools.schema import (
    ArgumentError,
    bind_arguments,
    describe_function,
    normalize_tool_name,
    schema_for,
    valid_tool_name,
)


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclass
class Point:
    x: float
    y: float = 0.0


class Movie(TypedDict):
    title: str
    year: int


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        (str, {"type": "string"}),
        (int, {"type": "integer"}),
        (float, {"type": "number"}),
        (bool, {"type": "boolean"}),
        (Literal["a", "b"], {"type": "string", "enum": ["a", "b"]}),
        (Literal[1, 2], {"type": "integer", "enum": [1, 2]}),
        (Color, {"type": "string", "enum": ["red", "green"]}),
        (Level, {"type": "integer", "enum": [1, 2]}),
        (list[str], {"type": "array", "items": {"type": "string"}}),
        (list[int], {"type": "array", "items": {"type": "integer"}}),
        (list, {"type": "array"}),
        (tuple[int, ...], {"type": "array", "items": {"type": "integer"}}),
        (tuple[int, int], {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2}),
        (set[str], {"type": "array", "items": {"type": "string"}}),
        (dict[str, int], {"type": "object", "additionalProperties": {"type": "integer"}}),
        (dict, {"type": "object"}),
        (Optional[str], {"type": "string", "nullable": True}),  # noqa: UP045 -- the old spelling must work too
        (str | None, {"type": "string", "nullable": True}),
        (int | str, {"type": ["integer", "string"]}),
        (int | str | None, {"type": ["integer", "string", "null"]}),
        (list[str] | None, {"type": "array", "items": {"type": "string"}, "nullable": True}),
        (Annotated[str, "A city name"], {"type": "string", "description": "A city name"}),
        (date, {"type": "string", "format": "date"}),
        (Path, {"type": "string"}),
        (Any, {}),
        (
            Point,
            {"type": "object", "properties": {"x": {"type": "number"}, "y": {"type": "number"}}, "required": ["x"]},
        ),
        (
            Movie,
            {
                "type": "object",
                "properties": {"title": {"type": "string"}, "year": {"type": "integer"}},
                "required": ["title", "year"],
            },
        ),
    ],
)
def test_schema_for_type(annotation: Any, expected: dict[str, Any]) -> None:
    assert schema_for(annotation) == expected


def test_unsupported_type_warns_and_is_any() -> None:
    warnings: list[str] = []
    assert schema_for(complex, warnings, "f(x)") == {}
    assert warnings and "complex" in warnings[0]


def google(location: str, unit: Literal["celsius", "fahrenheit"] = "celsius", days: int = 1) -> str:
    """Get the weather forecast.

    Looks it up in the local cache first.

    Args:
        location: The city and country,
            e.g. Paris, France.
        unit: Temperature unit.
        days: How many days ahead.
    """
    return location


def numpy_style(query: str, limit: int = 5) -> list[str]:
    """Search the notes.

    Parameters
    ----------
    query : str
        Words to look for.
    limit : int
        At most this many results.
    """
    return []


def rest_style(path: str, verbose: bool = False) -> str:
    """Describe a file.

    :param path: The file to describe.
    :param verbose: Say more.
    """
    return path


def test_google_docstring() -> None:
    spec = describe_function(google)
    d = spec.definition()["function"]
    assert d["name"] == "google"
    assert d["description"] == "Get the weather forecast. Looks it up in the local cache first."
    props = d["parameters"]["properties"]
    assert props["location"] == {"type": "string", "description": "The city and country, e.g. Paris, France."}
    assert props["unit"] == {
        "type": "string",
        "enum": ["celsius", "fahrenheit"],
        "description": "Temperature unit.",
        "default": "celsius",
    }
    assert props["days"]["default"] == 1 and props["days"]["type"] == "integer"
    assert d["parameters"]["required"] == ["location"]
    assert spec.warnings == ()


@pytest.mark.parametrize(
    ("fn", "param", "text"),
    [(numpy_style, "query", "Words to look for."), (rest_style, "path", "The file to describe.")],
)
def test_numpy_and_rest_docstrings(fn: Any, param: str, text: str) -> None:
    spec = describe_function(fn)
    assert spec.description in ("Search the notes.", "Describe a file.")
    assert spec.parameters_schema()["properties"][param]["description"] == text


def test_optional_with_none_default_is_optional_not_nullable() -> None:
    def f(city: str | None = None, n: int | str | None = None) -> str:
        """F."""
        return ""

    props = describe_function(f).parameters_schema()["properties"]
    assert props["city"] == {"type": "string"}
    assert props["n"] == {"type": ["integer", "string"]}
    assert describe_function(f).parameters_schema()["required"] == []


def test_missing_hints_and_docstring_are_warned() -> None:
    def f(a, b="x"):  # type: ignore[no-untyped-def]
        return a

    spec = describe_function(f)
    assert any("no docstring" in w for w in spec.warnings)
    assert any("f(a) has no type hint" in w for w in spec.warnings)
    assert spec.parameters_schema()["properties"]["b"] == {"default": "x"}


def test_docstring_types_used_when_hints_are_missing() -> None:
    def f(n, name):  # type: ignore[no-untyped-def]
        """Do it.

        Args:
            n (int): Count.
            name (str): Who.
        """

    props = describe_function(f).parameters_schema()["properties"]
    assert props["n"]["type"] == "integer" and props["name"]["type"] == "string"


def test_var_args_and_kwargs() -> None:
    def f(a: int, *rest: int, **extra: Any) -> None:
        """F."""

    spec = describe_function(f)
    assert [p.name for p in spec.params] == ["a"] and spec.accepts_extra
    assert bind_arguments(spec, {"a": 1, "other": 2}) == ([], {"a": 1, "other": 2})


@pytest.mark.parametrize("name", ["get_weather", "_private", "a1", "x" * 64])
def test_valid_names(name: str) -> None:
    assert valid_tool_name(name)


@pytest.mark.parametrize("name", ["get-weather", "get weather", "1abc", "météo", "class", "", "x" * 65, "a.b"])
def test_invalid_names(name: str) -> None:
    assert not valid_tool_name(name)


def test_invalid_name_is_refused() -> None:
    def f() -> None:
        """F."""

    with pytest.raises(ValueError, match="cannot be a tool name"):
        describe_function(f, "get-weather")


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("get weather", "get_weather"),
        ("get-weather", "get_weather"),
        ("get.weather", "get_weather"),
        ("1st", "_1st"),
        ("lookup<|channel|>commentary", "lookup"),
    ],
)
def test_normalize_tool_name(raw: str, name: str) -> None:
    assert normalize_tool_name(raw) == name


def test_rendered_typescript_namespace() -> None:
    prompt = harmony.render_prompt([{"role": "user", "content": "hi"}], tools=[describe_function(google).definition()])
    assert (
        "// Get the weather forecast. Looks it up in the local cache first.\ntype google = (_: {\n"
        "// The city and country, e.g. Paris, France.\nlocation: string,\n"
        '// Temperature unit.\nunit?: "celsius" | "fahrenheit", // default: celsius,\n'
        "// How many days ahead.\ndays?: number, // default: 1,\n}) => any;"
    ) in prompt


# --- arguments -------------------------------------------------------------------------------------
def typed(
    count: int,
    ratio: float,
    flag: bool,
    color: Color,
    when: date,
    tags: list[str],
    point: Point,
    mode: Literal["a", "b"] = "a",
    note: str | None = None,
) -> None:
    """All the kinds."""


def test_bind_converts_values() -> None:
    spec = describe_function(typed)
    _, kw = bind_arguments(
        spec,
        {
            "count": "3",
            "ratio": 1,
            "flag": "true",
            "color": "green",
            "when": "2025-08-05",
            "tags": ["x", 2],
            "point": {"x": 1.5},
            "mode": "b",
            "note": None,
        },
    )
    assert kw["count"] == 3 and kw["ratio"] == 1.0 and kw["flag"] is True and kw["color"] is Color.GREEN
    assert kw["when"] == date(2025, 8, 5) and kw["tags"] == ["x", "2"] and kw["point"] == Point(1.5)
    assert kw["mode"] == "b" and kw["note"] is None


def test_bind_reports_every_problem() -> None:
    spec = describe_function(typed)
    with pytest.raises(ArgumentError) as err:
        bind_arguments(
            spec,
            {
                "count": 1.5,
                "ratio": "x",
                "flag": 1,
                "color": "blue",
                "when": "yesterday",
                "tags": "x",
                "point": {"z": 1},
                "mode": "c",
                "bogus": 1,
            },
        )
    text = str(err.value)
    for part in (
        "unknown argument(s) 'bogus'",
        "'count' must be integer",
        "'ratio' must be number",
        "'flag' must be boolean",
        "'color' must be one of 'red', 'green'",
        "'when' must be string",
        "'tags' must be array",
        "'point' must be object",
        "'mode' must be one of 'a', 'b'",
    ):
        assert part in text, part


def test_bind_missing_and_non_object() -> None:
    spec = describe_function(google)
    with pytest.raises(ArgumentError, match="missing required argument 'location'"):
        bind_arguments(spec, {})
    with pytest.raises(ArgumentError, match="must be a JSON object"):
        bind_arguments(spec, ["Paris"])
    assert bind_arguments(spec, {"location": "Paris"}) == ([], {"location": "Paris"})


def test_positional_only_parameters() -> None:
    def f(a: int, /, b: int = 2) -> int:
        """F."""
        return a + b

    spec = describe_function(f)
    args, kw = bind_arguments(spec, {"a": 1})
    assert f(*args, **kw) == 3
