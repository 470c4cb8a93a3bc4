"""JSON schema for a plain Python function from its type hints and docstring, and argument checking."""

from __future__ import annotations

import dataclasses
import enum
import inspect
import keyword
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path, PurePath
from typing import Any, Literal, Union

import docstring_parser

from app.core.errors import HarmonicaError

# The TypeScript namespace the model reads needs plain identifiers (harmony.md pitfall 11).
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# The model reads descriptions as one `// ...` comment line; longer ones are cut here.
MAX_DESCRIPTION = 1000


class ArgumentError(HarmonicaError, ValueError):
    """The model's arguments do not fit the function; the message is written for the model."""


def valid_tool_name(name: str) -> bool:
    """True when `name` can stand in the `functions` namespace as is (ASCII identifier, ≤ 64 chars)."""
    return bool(_NAME_RE.fullmatch(name)) and not keyword.iskeyword(name)


def normalize_tool_name(raw: str) -> str:
    """The identifier a model most likely meant: "get weather"/"get-weather"/"get.weather" → "get_weather".

    Leaked control text ("x<|channel|>commentary") is cut off first; a leading digit gets "_".
    """
    name = raw.split("<|", 1)[0].strip()
    name = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_")
    if name and name[0].isdigit():
        name = "_" + name
    return name[:64]


def one_line(text: str | None, limit: int = MAX_DESCRIPTION) -> str:
    """Whitespace collapsed to single spaces (the TypeScript comment is one line), cut at `limit`."""
    out = " ".join((text or "").split())
    return out if len(out) <= limit else out[: limit - 1].rstrip() + "…"


@dataclass(frozen=True)
class Param:
    """One parameter of a function tool."""

    name: str
    schema: dict[str, Any]
    required: bool
    annotation: Any = inspect.Parameter.empty
    positional_only: bool = False
    default: Any = inspect.Parameter.empty


@dataclass(frozen=True)
class FunctionSpec:
    """What the model is told about a function, and what is needed to call it."""

    name: str
    description: str
    params: tuple[Param, ...] = ()
    warnings: tuple[str, ...] = ()
    accepts_extra: bool = False  # **kwargs: unknown argument names are passed through

    def parameters_schema(self) -> dict[str, Any]:
        """The JSON schema object of the parameters (OpenAI function-calling shape)."""
        return {
            "type": "object",
            "properties": {p.name: dict(p.schema) for p in self.params},
            "required": [p.name for p in self.params if p.required],
        }

    def definition(self) -> dict[str, Any]:
        """`{"type": "function", "function": {name, description, parameters}}` for render_prompt."""
        fn: dict[str, Any] = {"name": self.name, "description": self.description}
        if self.params:
            fn["parameters"] = self.parameters_schema()
        return {"type": "function", "function": fn}


# --- annotations → JSON schema ---------------------------------------------------------------------
_SIMPLE: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    type(None): {"type": "null"},
    datetime: {"type": "string", "format": "date-time"},
    date: {"type": "string", "format": "date"},
    time: {"type": "string", "format": "time"},
    Path: {"type": "string"},
    PurePath: {"type": "string"},
    bytes: {"type": "string"},
}
_DOC_TYPES = {
    "str": str,
    "string": str,
    "int": int,
    "integer": int,
    "float": float,
    "number": float,
    "bool": bool,
    "boolean": bool,
    "list": list,
    "dict": dict,
}
_ARRAY_ORIGINS = (list, tuple, set, frozenset, Sequence, Iterable, list, tuple, set)
_MAP_ORIGINS = (dict, Mapping, dict)


def _is_union(origin: Any) -> bool:
    return origin is Union or origin is types.UnionType


def _json_value(value: Any) -> tuple[bool, Any]:
    """(ok, value as JSON) for a default or enum value; objects that JSON cannot show give ok=False."""
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None or isinstance(value, (bool, int, float, str)):
        return True, value
    if isinstance(value, (list, tuple)):
        items = [_json_value(v) for v in value]
        return (all(ok for ok, _ in items), [v for _, v in items])
    if isinstance(value, PurePath):
        return True, str(value)
    if isinstance(value, (datetime, date, time)):
        return True, value.isoformat()
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        items2 = {k: _json_value(v) for k, v in value.items()}
        return (all(ok for ok, _ in items2.values()), {k: v for k, (_, v) in items2.items()})
    return False, None


def _enum_schema(values: Sequence[Any]) -> dict[str, Any]:
    plain = [v.value if isinstance(v, enum.Enum) else v for v in values]
    if all(isinstance(v, str) for v in plain):
        return {"type": "string", "enum": plain}
    if all(isinstance(v, int) and not isinstance(v, bool) for v in plain):
        return {"type": "integer", "enum": plain}
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in plain):
        return {"type": "number", "enum": plain}
    return {"enum": plain}


def schema_for(annotation: Any, warnings: list[str] | None = None, where: str = "") -> dict[str, Any]:
    """JSON schema for one type annotation; unknown types become `{}` (the model sees `any`)."""
    warn = warnings if warnings is not None else []
    if annotation is inspect.Parameter.empty or annotation is Any or annotation is object:
        return {}
    if isinstance(annotation, str):
        simple = _DOC_TYPES.get(annotation.strip())
        if simple is not None:
            return schema_for(simple, warn, where)
        warn.append(f"{where}: the type hint {annotation!r} could not be resolved; the model sees `any`")
        return {}
    if annotation in _SIMPLE:
        return dict(_SIMPLE[annotation])
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        inner = schema_for(args[0], warn, where)
        notes = [a for a in args[1:] if isinstance(a, str)]
        if notes:
            inner["description"] = one_line(notes[0])
        return inner
    if origin is Literal:
        return _enum_schema(list(args))
    if _is_union(origin):
        non_null = [a for a in args if a is not type(None)]
        nullable = len(non_null) < len(args)
        if len(non_null) == 1:
            out = schema_for(non_null[0], warn, where)
        else:
            variants = [schema_for(a, warn, where) for a in non_null]
            simple_types = [v.get("type") for v in variants if set(v) == {"type"} and isinstance(v.get("type"), str)]
            out = {"type": simple_types} if len(simple_types) == len(variants) else {"oneOf": variants}
        if nullable and out:
            if isinstance(out.get("type"), list):
                out["type"] = [*out["type"], "null"]
            else:
                out["nullable"] = True
        return out
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return _enum_schema(list(annotation))
    if isinstance(annotation, type) and issubclass(annotation, bool):
        return {"type": "boolean"}
    if isinstance(annotation, type) and issubclass(annotation, str):
        return {"type": "string"}
    if isinstance(annotation, type) and issubclass(annotation, int):
        return {"type": "integer"}
    if isinstance(annotation, type) and issubclass(annotation, float):
        return {"type": "number"}
    if annotation in _ARRAY_ORIGINS or origin in _ARRAY_ORIGINS:
        out2: dict[str, Any] = {"type": "array"}
        if args:
            if origin in (tuple, tuple) and not (len(args) == 2 and args[1] is Ellipsis):
                variants = [schema_for(a, warn, where) for a in args]
                if all(v == variants[0] for v in variants):
                    out2["items"] = variants[0]
                out2["minItems"] = out2["maxItems"] = len(args)
            else:
                item = schema_for(args[0], warn, where)
                if item:
                    out2["items"] = item
        return out2
    if annotation in _MAP_ORIGINS or origin in _MAP_ORIGINS:
        out3: dict[str, Any] = {"type": "object"}
        if len(args) == 2:
            value = schema_for(args[1], warn, where)
            if value:
                out3["additionalProperties"] = value
        return out3
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return _object_schema(annotation, {f.name: f for f in dataclasses.fields(annotation)}, warn, where)
    if isinstance(annotation, type) and typing.is_typeddict(annotation):
        return _object_schema(annotation, None, warn, where)
    warn.append(
        f"{where}: the type {getattr(annotation, '__name__', annotation)!s} is not supported; the model sees `any`"
    )
    return {}


def _object_schema(cls: type, fields: dict[str, Any] | None, warn: list[str], where: str) -> dict[str, Any]:
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
    except Exception:  # noqa: BLE001 - a broken forward reference in the user's class
        hints = dict(getattr(cls, "__annotations__", {}))
    props = {k: schema_for(v, warn, f"{where}.{k}") for k, v in hints.items()}
    if fields is not None:  # dataclass: fields without defaults are required
        required = [
            k
            for k, f in fields.items()
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
    else:
        required = sorted(getattr(cls, "__required_keys__", set(hints)))
    return {"type": "object", "properties": props, "required": required}


# --- functions → FunctionSpec ----------------------------------------------------------------------
def describe_function(fn: Callable[..., Any], name: str | None = None) -> FunctionSpec:
    """Describe `fn` for the model: summary and parameter docs from its docstring (Google, NumPy or
    reST style), types and defaults from its signature. Raises ValueError for a name the model
    cannot call or a signature that cannot be described."""
    tool_name = name or str(getattr(fn, "__name__", ""))
    if not valid_tool_name(tool_name):
        raise ValueError(
            f"{tool_name!r} cannot be a tool name: use letters, digits and underscores only, "
            f"not starting with a digit, at most 64 characters"
        )
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the signature of {tool_name} cannot be read: {exc}") from exc
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:  # noqa: BLE001 - unresolvable forward references: fall back to the raw strings
        hints = dict(getattr(fn, "__annotations__", {}))
    doc = docstring_parser.parse(inspect.getdoc(fn) or "")
    doc_params = {p.arg_name: p for p in doc.params}
    warnings: list[str] = []
    summary = " ".join(x for x in (doc.short_description, doc.long_description) if x)
    if not summary:
        warnings.append(f"{tool_name} has no docstring: the model sees no description")
    params: list[Param] = []
    accepts_extra = False
    for p in sig.parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            accepts_extra = True
            continue
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            warnings.append(f"{tool_name}: *{p.name} is not offered to the model")
            continue
        annotation = hints.get(p.name, inspect.Parameter.empty)
        documented = doc_params.get(p.name)
        if annotation is inspect.Parameter.empty and documented is not None and documented.type_name:
            annotation = _DOC_TYPES.get(documented.type_name.split(",")[0].strip(), inspect.Parameter.empty)
        if annotation is inspect.Parameter.empty:
            warnings.append(f"{tool_name}({p.name}) has no type hint; the model sees `any`")
        schema = schema_for(annotation, warnings, f"{tool_name}({p.name})")
        if p.default is None:
            # `x: str | None = None` is an optional string to the model; "| null" only invites nulls.
            schema = {k: v for k, v in schema.items() if k != "nullable"}
            if isinstance(schema.get("type"), list):
                kinds = [k for k in schema["type"] if k != "null"]
                schema["type"] = kinds[0] if len(kinds) == 1 else kinds
        if documented is not None and documented.description and "description" not in schema:
            schema = {**schema, "description": one_line(documented.description, 500)}
        if p.default is not inspect.Parameter.empty and p.default is not None:
            ok, value = _json_value(p.default)
            if ok:
                schema = {**schema, "default": value}
        params.append(
            Param(
                name=p.name,
                schema=schema,
                required=p.default is inspect.Parameter.empty,
                annotation=annotation,
                positional_only=p.kind is inspect.Parameter.POSITIONAL_ONLY,
                default=p.default,
            )
        )
    return FunctionSpec(tool_name, one_line(summary), tuple(params), tuple(warnings), accepts_extra)


# --- checking and converting the model's arguments -------------------------------------------------
class _Mismatch(Exception):
    pass


def _type_label(annotation: Any) -> str:
    schema = schema_for(annotation)
    if "enum" in schema:
        return "one of " + ", ".join(repr(v) for v in schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return " or ".join(kind)
    return kind or "any value"


def convert_value(annotation: Any, value: Any) -> Any:
    """`value` (decoded JSON) as the Python type the function expects; raises _Mismatch."""
    if (
        annotation is inspect.Parameter.empty
        or annotation is Any
        or annotation is object
        or isinstance(annotation, str)
    ):
        return value
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return convert_value(args[0], value)
    if _is_union(origin):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return convert_value(a, value)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is Literal:
        for choice in args:
            if value == choice and type(value) is type(choice):
                return choice
        for choice in args:  # "3" for 3, 3 for "3": models mix these up
            if str(value) == str(choice):
                return choice
        raise _Mismatch
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        for member in annotation:
            if value == member.value or str(value) == str(member.value) or value == member.name:
                return member
        raise _Mismatch
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise _Mismatch
    if annotation is int:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
            return int(value)
        raise _Mismatch
    if annotation is float:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise _Mismatch from None
        raise _Mismatch
    if annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _Mismatch
    if annotation in (Path, PurePath):
        if isinstance(value, str):
            return Path(value)
        raise _Mismatch
    if annotation in (datetime, date, time):
        if not isinstance(value, str):
            raise _Mismatch
        try:
            return annotation.fromisoformat(value)
        except ValueError:
            raise _Mismatch from None
    if annotation is type(None):
        if value is None:
            return None
        raise _Mismatch
    if annotation in _ARRAY_ORIGINS or origin in _ARRAY_ORIGINS:
        if not isinstance(value, list):
            raise _Mismatch
        container = origin or annotation
        if args and container in (tuple, tuple) and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise _Mismatch
            return tuple(convert_value(a, v) for a, v in zip(args, value, strict=False))
        items = [convert_value(args[0], v) for v in value] if args else list(value)
        if container in (tuple, tuple):
            return tuple(items)
        if container in (set, set):
            return set(items)
        if container is frozenset:
            return frozenset(items)
        return items
    if annotation in _MAP_ORIGINS or origin in _MAP_ORIGINS:
        if not isinstance(value, dict):
            raise _Mismatch
        if len(args) == 2:
            return {k: convert_value(args[1], v) for k, v in value.items()}
        return dict(value)
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise _Mismatch
        try:
            hints = typing.get_type_hints(annotation)
        except Exception:  # noqa: BLE001
            hints = {}
        try:
            return annotation(**{k: convert_value(hints.get(k, Any), v) for k, v in value.items()})
        except TypeError:
            raise _Mismatch from None
    if isinstance(annotation, type) and typing.is_typeddict(annotation):
        if not isinstance(value, dict):
            raise _Mismatch
        return dict(value)
    if isinstance(annotation, type):
        if isinstance(value, annotation):
            return value
        raise _Mismatch
    return value


def bind_arguments(spec: FunctionSpec, arguments: Any) -> tuple[list[Any], dict[str, Any]]:
    """(positional, keyword) arguments for calling the function described by `spec`.

    Raises ArgumentError with every problem listed, in words the model can act on.
    """
    if arguments is None or arguments == "":
        arguments = {}
    if not isinstance(arguments, dict):
        raise ArgumentError(f"the arguments must be a JSON object, got {type(arguments).__name__}")
    known = {p.name: p for p in spec.params}
    problems: list[str] = []
    unknown = [k for k in arguments if k not in known]
    if unknown and not spec.accepts_extra:
        accepted = ", ".join(known) or "none"
        problems.append(f"unknown argument(s) {', '.join(map(repr, unknown))} (accepted: {accepted})")
    positional: list[Any] = []
    keyword_args: dict[str, Any] = {}
    for p in spec.params:
        if p.name not in arguments:
            if p.required:
                problems.append(f"missing required argument {p.name!r} ({_type_label(p.annotation)})")
            elif p.positional_only:
                positional.append(p.default)
            continue
        try:
            value = convert_value(p.annotation, arguments[p.name])
        except _Mismatch:
            problems.append(f"argument {p.name!r} must be {_type_label(p.annotation)}, got {arguments[p.name]!r}"[:300])
            continue
        if p.positional_only:
            positional.append(value)
        else:
            keyword_args[p.name] = value
    if spec.accepts_extra:
        keyword_args.update({k: arguments[k] for k in unknown})
    if problems:
        raise ArgumentError(f"invalid arguments for {spec.name}: " + "; ".join(problems))
    return positional, keyword_args


__all__ = [
    "MAX_DESCRIPTION",
    "ArgumentError",
    "FunctionSpec",
    "Param",
    "bind_arguments",
    "convert_value",
    "describe_function",
    "normalize_tool_name",
    "one_line",
    "schema_for",
    "valid_tool_name",
]
