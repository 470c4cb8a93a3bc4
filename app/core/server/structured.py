"""Structured output and forced tool calls: JSON schemas → GBNF grammars over harmony, and the checks around them.

As llama.cpp's gpt-oss handler does, a grammar constrains only what must be structured: the
reasoning stays free text, and the final channel (``<|channel|>final <|constrain|>json``) or the
tool call's arguments follow the JSON schema. The schema is also shown to the model in the
developer message's "# Response Formats" section (harmony.md §4.2). JSON schema → GBNF is
llama-cpp-python's SchemaConverter (the port of llama.cpp's json_schema_to_grammar); its string
rule is replaced so that a JSON string can neither hold raw control characters (invalid JSON) nor
spell a harmony control token. Every answer is validated against its schema before it is
returned; strict schemas may use only keywords the grammar enforces, so they always validate.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from app.core.server.errors import ApiError, invalid

# Schema keywords the grammar cannot enforce. Refused in strict schemas (which must always
# validate); elsewhere the grammar enforces the rest and validation catches what slips through.
_UNENFORCED: Final = frozenset(
    {
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "uniqueItems",
        "not",
        "if",
        "then",
        "else",
        "contains",
        "minContains",
        "maxContains",
        "minProperties",
        "maxProperties",
        "patternProperties",
        "propertyNames",
        "dependentRequired",
        "dependentSchemas",
        "dependencies",
        "unevaluatedProperties",
        "unevaluatedItems",
    }
)
_ENFORCED_FORMATS: Final = frozenset({"date", "time", "date-time", "uuid"})
# JSON string rules replacing the converter's: no raw control characters (JSON forbids them), and
# in free strings no "<|", the start of every harmony control token, which would otherwise pass as
# text. A string of bounded length (minLength/maxLength) counts `char`, one code point each.
_ESCAPE: Final = r'[\\] (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'
_STRING_RULES: Final = {
    "char": 'char ::= [^"\\\\\\x7F\\x00-\\x1F] | ' + _ESCAPE,
    "string": r'string ::= "\"" ( json-safe | "<"+ json-safe-no-bar )* "<"* "\"" space',
}
_SAFE_RULES: Final = (
    'json-safe ::= [^"\\\\<\\x7F\\x00-\\x1F] | ' + _ESCAPE,
    'json-safe-no-bar ::= [^"\\\\<|\\x7F\\x00-\\x1F] | ' + _ESCAPE,
)
# Free text (reasoning, a plain answer): anything but a harmony control token.
FREE_TEXT: Final = 'free-char*\nfree-char ::= [^<] | "<" [^<|]'
_NAME_RE: Final = re.compile(r"[^A-Za-z0-9-]+")


@dataclass(frozen=True)
class OutputFormat:
    """What the answer must be: any JSON object, or JSON matching a schema."""

    kind: str  # "json_object" or "json_schema"
    name: str = "response"
    description: str = ""
    schema: Mapping[str, Any] | None = None
    strict: bool = False

    @property
    def effective_schema(self) -> Mapping[str, Any]:
        return self.schema if self.schema is not None else {"type": "object"}


@dataclass
class ToolPlan:
    """What the request allows for tool calls, after tool_choice and strict flags."""

    mode: str = "auto"  # "auto", "required" or "none"
    strict: frozenset[str] = field(default_factory=frozenset)  # function names declared strict


# --- reading the request -------------------------------------------------------------------------


def read_output_format(value: Any, param: str, *, nested: bool) -> OutputFormat | None:
    """Chat's response_format ({"type": "json_schema", "json_schema": {...}}) or responses' text.format
    ({"type": "json_schema", "name": ..., "schema": ...}); None for plain text."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise invalid(f'\'{param}\' must be an object such as {{"type": "json_object"}}.', param)
    kind = value.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        schema = value.get("schema")  # llama-server's extension: json_object with a schema
        if schema is not None:
            check_schema(schema, f"{param}.schema", strict=False)
        return OutputFormat("json_object", schema=schema if isinstance(schema, Mapping) else None)
    if kind != "json_schema":
        raise invalid(
            f"'{param}.type' must be text, json_object or json_schema; got {json.dumps(kind)}.", f"{param}.type"
        )
    spec = value.get("json_schema") if nested else value
    where = f"{param}.json_schema" if nested else param
    if not isinstance(spec, Mapping):
        raise invalid(f"'{where}' must be an object with a name and a schema.", where)
    name = spec.get("name", "response")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
        raise invalid(f"'{where}.name' must be 1–64 letters, digits, '_' or '-'.", f"{where}.name")
    description = spec.get("description") or ""
    if not isinstance(description, str):
        raise invalid(f"'{where}.description' must be a string.", f"{where}.description")
    strict = spec.get("strict") is True
    schema = spec.get("schema")
    if schema is None:
        schema = {"type": "object"}
    check_schema(schema, f"{where}.schema", strict=strict)
    return OutputFormat("json_schema", name, description, schema, strict)


def check_schema(schema: Any, param: str, *, strict: bool) -> None:
    """A JSON schema the grammar builder and the validator can use; strict ones only with enforced keywords."""
    if not isinstance(schema, Mapping):
        raise invalid(f"'{param}' must be a JSON schema object.", param)
    try:
        import jsonschema

        jsonschema.validators.validator_for(schema).check_schema(dict(schema))
    except jsonschema.SchemaError as exc:
        raise invalid(f"'{param}' is not a valid JSON schema: {exc.message}.", param) from None
    except RecursionError:
        raise invalid(f"'{param}' is nested too deeply.", param) from None
    if strict:
        found = sorted(_unenforced(schema))
        if found:
            raise invalid(
                f"'{param}' is strict but uses {', '.join(found)}, which this server cannot guarantee; remove "
                "them or set strict to false (the answer is then checked against the schema after generating).",
                param,
            )
    try:
        build_rules({"x": schema}, lenient=not strict)
    except ApiError:
        raise
    except Exception as exc:  # noqa: BLE001 - the converter's own refusal of a schema it cannot express
        raise invalid(f"'{param}' cannot be turned into a grammar: {exc}.", param) from None


def _unenforced(schema: Any) -> set[str]:
    found: set[str] = set()
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, Mapping):
            for key, value in node.items():
                if key in ("enum", "const", "default", "examples", "description", "title"):
                    continue  # values, not schemas
                if key in ("properties", "$defs", "definitions") and isinstance(value, Mapping):
                    stack.extend(value.values())
                    continue
                if key in _UNENFORCED:
                    found.add(key)
                elif key == "format" and value not in _ENFORCED_FORMATS:
                    found.add(f"format {json.dumps(value)}")
                elif isinstance(value, (Mapping, list)):
                    stack.append(value)
    return found


# --- the developer message -------------------------------------------------------------------------


def response_format_section(fmt: OutputFormat) -> str:
    """harmony's "# Response Formats" section for the developer message."""
    description = f"// {fmt.description}\n" if fmt.description else ""
    schema = json.dumps(fmt.effective_schema, ensure_ascii=False, separators=(",", ":"))
    return f"# Response Formats\n\n## {fmt.name}\n\n{description}{schema}"


def with_response_format(prompt: str, section: str) -> str:
    """The rendered prompt with `section` at the end of the developer message (one is added if none).

    Client text cannot contain control tokens (parsing defuses them), so the first developer
    header is the real one.
    """
    head = "<|start|>developer<|message|>"
    at = prompt.find(head)
    if at >= 0:
        end = prompt.find("<|end|>", at)
        body = prompt[at + len(head) : end]
        sep = "" if body.endswith("\n\n") or not body else ("\n" if body.endswith("\n") else "\n\n")
        return prompt[:end] + sep + section + prompt[end:]
    system_end = prompt.find("<|end|>")
    if system_end < 0:
        return prompt
    cut = system_end + len("<|end|>")
    return prompt[:cut] + head + section + "<|end|>" + prompt[cut:]


# --- grammars ----------------------------------------------------------------------------------------


def build_rules(schemas: Mapping[str, Any], *, lenient: bool = True) -> str:
    """GBNF rules for each schema (rule name → schema), sharing one rule set.

    The converter refuses some regular expressions (unanchored or beyond its dialect); when
    `lenient`, those strings are then left unconstrained, and validation after generating checks
    them. The schemas are copied: the converter rewrites `$ref`s in place.
    """
    try:
        return _rules(schemas)
    except Exception:
        if not lenient:
            raise
        return _rules({name: _without_patterns(schema) for name, schema in schemas.items()})


def _rules(schemas: Mapping[str, Any]) -> str:
    from llama_cpp.llama_grammar import SchemaConverter

    conv = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)  # type: ignore[no-untyped-call]
    for name, schema in schemas.items():
        schema = copy.deepcopy(dict(schema))
        conv.resolve_refs(schema, "input")
        conv.visit(schema, name)  # type: ignore[no-untyped-call]
    out = []
    for line in conv.format_grammar().splitlines():  # type: ignore[no-untyped-call]
        name = line.split(" ::= ", 1)[0]
        out.append(_STRING_RULES.get(name, line))
    if any(line.startswith("string ::= ") for line in out):
        out += _SAFE_RULES
    return "\n".join(out)


def _without_patterns(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {k: _without_patterns(v) for k, v in node.items() if k != "pattern" or not isinstance(v, str)}
    if isinstance(node, list):
        return [_without_patterns(v) for v in node]
    return node


_CALL_HEADER: Final = re.compile(r"to=(?!assistant\b)\S")
_FINAL_HEADER: Final = re.compile(r"<\|channel\|>\s*final\b")


def opens_constrained(header: str, *, answer: bool, calls: bool) -> bool:
    """Whether a message header (its text up to <|message|>) opens a message the grammar constrains:
    a call (when calls are constrained) or the final answer (structured output, or tool_choice
    "required", where an answer must become a call). Reasoning and preambles stay free."""
    if _CALL_HEADER.search(header):
        return calls
    return answer and bool(_FINAL_HEADER.search(header))


def _literal(text: str) -> str:
    return json.dumps(text)


def rule_name(prefix: str, name: str, index: int) -> str:
    return f"{prefix}-{index}-{_NAME_RE.sub('-', name).strip('-').lower() or 'x'}"


def build_grammar(
    *,
    fmt: OutputFormat | None,
    tools: Sequence[Mapping[str, Any]] | None,
    plan: ToolPlan,
    free_text: str | None = None,
    tail: bool = False,
) -> str | None:
    """The GBNF grammar for one request, or None when nothing needs constraining.

    Needed for structured output, for tool_choice "required" or a named function (tools then
    holds only that one), and for strict function tools (a plain answer stays possible with
    tool_choice "auto"). Special tokens are written bare (`<|channel|>`); the engine allows the
    stop token a branch ends with once the grammar is complete. `tail`: only the message that must
    be constrained (the answer or a call), for a generation whose reasoning ran unconstrained up to
    that message's header (see generation.HeaderGate).
    """
    tools = list(tools or [])
    calls_forced = plan.mode == "required" and bool(tools)
    if fmt is None and not calls_forced and not (plan.strict and tools):
        return None
    schemas: dict[str, Any] = {}
    if fmt is not None:
        schemas["h-format"] = fmt.effective_schema
    call_rules: list[str] = []
    for i, tool in enumerate(tools):
        fn = tool["function"]
        args = rule_name("h-args", fn["name"], i)
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        schemas[args] = params
        call = rule_name("h-call", fn["name"], i)
        name = _literal(fn["name"])
        call_rules.append(
            f'{call} ::= ( <|channel|> h-call-channel " to=functions." {name} | " to=functions." {name} '
            f"<|channel|> h-call-channel ) h-ctype <|message|> {args} <|call|>"
        )
    ends: list[str] = []
    if fmt is not None:
        ends.append("h-final-json")
    elif not calls_forced:
        ends.append("h-final-text")
    if tools and plan.mode != "none":
        ends += [line.split(" ::= ", 1)[0] for line in call_rules]
    lead = "h-analysis | h-preamble" if tools else "h-analysis"
    rules = [
        f"root ::= {' | '.join(ends)}" if tail else f"root ::= ( {lead} )* ( {' | '.join(ends)} )",
        f"h-free ::= {free_text or FREE_TEXT}",
    ]
    if not tail:
        rules.append('h-analysis ::= <|channel|> "analysis" <|message|> h-free <|end|> <|start|> "assistant"')
    if tools and not tail:
        rules.append('h-preamble ::= <|channel|> "commentary" <|message|> h-free <|end|> <|start|> "assistant"')
    if tools:
        rules += [
            'h-call-channel ::= "commentary" | "analysis"',
            'h-ctype ::= ( " " <|constrain|> "json" | <|constrain|> "json" | " json" )?',
            *call_rules,
        ]
    if "h-final-text" in ends:
        rules.append('h-final-text ::= <|channel|> "final" <|message|> h-free <|return|>')
    if fmt is not None:
        rules.append(
            'h-final-json ::= <|channel|> "final" ( " " <|constrain|> "json" )? <|message|> h-format <|return|>'
        )
    if schemas:
        rules.append(build_rules(schemas))
    return "\n".join(rules) + "\n"


# --- after generating --------------------------------------------------------------------------------


def output_problem(fmt: OutputFormat, text: str) -> str | None:
    """Why `text` is not a valid answer for `fmt`, or None when it is."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        return f"it is not valid JSON ({exc})"
    except RecursionError:
        return "it is nested too deeply"
    if fmt.kind == "json_object" and fmt.schema is None:
        return None if isinstance(value, dict) else "it is not a JSON object"
    return schema_problem(fmt.effective_schema, value)


def schema_problem(schema: Mapping[str, Any], value: Any) -> str | None:
    import jsonschema

    validator = jsonschema.validators.validator_for(schema)(schema)
    try:
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    except RecursionError:
        return "it is nested too deeply"
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{error.message}" + (f" (at {where})" if where else "")


def repair_arguments(text: str) -> str | None:
    """Tool-call arguments as a JSON object's text, repaired when only its end is damaged; None if hopeless.

    Repairs what models really produce: text after the object (a stray "<|call|>" spelled out,
    a second object), and an object cut short (closing brackets and quotes added).
    """
    stripped = text.strip()
    if not stripped:
        return "{}"
    try:
        value = json.loads(stripped)
        return stripped if isinstance(value, dict) else None
    except ValueError:
        pass
    try:
        value, _end = json.JSONDecoder().raw_decode(stripped)
        if isinstance(value, dict):
            return json.dumps(value, ensure_ascii=False)
    except ValueError:
        pass
    if not stripped.startswith("{"):
        return None
    closers: list[str] = []
    in_string = escaped = False
    for ch in stripped:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            closers.append("}" if ch == "{" else "]")
        elif ch in "}]":
            if not closers:
                return None
            closers.pop()
    candidate = stripped + ('"' if in_string else "")
    candidate = candidate.rstrip().rstrip(",:")
    candidate += "".join(reversed(closers))
    try:
        value = json.loads(candidate)
    except ValueError:
        return None
    return json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else None
