"""Rendering with the model file's own chat template, in the sandboxed Jinja environment transformers builds."""

from __future__ import annotations

import json
import secrets
from datetime import date as _date_type
from datetime import datetime
from functools import lru_cache
from typing import Any, ClassVar

from app.core.harmony.constants import CALL, END, START
from app.core.harmony.errors import HarmonyError
from app.core.harmony.normalise import _builtin_call_text, _builtin_result_text, _is_builtin
from app.core.template_limits import TemplateLimitError, limited_environment, render_limited


# ---- Jinja environment (the same one HF transformers builds) -------------------------------------
@lru_cache(maxsize=16)
def _compile_template(source: str) -> Any:
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class _GenerationTag(jinja2.ext.Extension):
        # transformers' AssistantTracker adds `{% generation %}`; rendering-wise it only outputs its body.
        tags: ClassVar[set[str]] = {"generation"}  # type: ignore[misc]  # jinja2 declares it on instances

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller: Any) -> str:
            return str(caller())

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(
        x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None, sort_keys: bool = False
    ) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    class _TemplateDict:
        def __call__(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
            return dict(*args, **kwargs)

        def fromkeys(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
            return dict.fromkeys(*args, **kwargs)

    class _Namespace(jinja2.utils.Namespace):
        # Like transformers: namespaces refuse dunder/underscore attributes (sandbox hardening).
        def __init__(*args: Any, **kwargs: Any) -> None:
            self, rest = args[0], args[1:]
            attrs = dict(*rest, **kwargs)
            for name in attrs:
                _Namespace._check(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name: str, value: Any) -> None:
            _Namespace._check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name: Any) -> None:
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"templates cannot store underscore attributes ({name!r})")

    # Bounded in time, steps and size too (a model file's template may loop or explode).
    env = limited_environment(ImmutableSandboxedEnvironment)(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _Namespace
    return env.from_string(source)


def _render_with_template(
    source: str,
    msgs: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    builtin: list[str] | None,
    effort: str | None,
    identity: str | None,
    add_generation_prompt: bool,
    when: _date_type | None,
    declared: frozenset[str],
) -> str:
    try:
        template = _compile_template(source)
    except Exception as exc:
        raise HarmonyError(f"the chat template could not be compiled: {exc}") from exc

    # Builtin tool turns: the official template can only write `functions.*` calls. We give it a
    # placeholder call/result with a unique name, then swap in the harmony form for the builtin.
    nonce = secrets.token_hex(6)
    swaps: list[tuple[str, str, str]] = []  # (marker in the output, terminator, replacement text)
    shown: list[dict[str, Any]] = []
    last_builtin: str | None = None
    for msg in msgs:
        role = msg["role"]
        if role == "assistant" and "tool_calls" in msg:
            fn = msg["tool_calls"][0]["function"]
            if _is_builtin(fn["name"], declared):
                name = f"harmonica_{nonce}_c{len(swaps)}_"
                swaps.append((f"to=functions.{name}", CALL, _builtin_call_text(fn)))
                msg = {**msg, "tool_calls": [{"type": "function", "function": {"name": name, "arguments": {}}}]}
                last_builtin = fn["name"]
            else:
                last_builtin = None
        elif role == "assistant":
            last_builtin = None
        elif role == "tool" and last_builtin is not None:
            mark = f"harmonica_{nonce}_r{len(swaps)}_"
            swaps.append((mark, END, _builtin_result_text(last_builtin, msg)))
            msg = {**msg, "content": mark}
        shown.append(msg)

    def strftime_now(fmt: str) -> str:
        return (when if when is not None else datetime.now()).strftime(fmt)

    extra: dict[str, Any] = {}
    if builtin is not None:
        extra["builtin_tools"] = builtin
    if effort is not None:
        extra["reasoning_effort"] = effort
    if identity is not None:
        extra["model_identity"] = identity
    variables = dict(
        messages=shown,
        tools=tools,
        documents=None,
        add_generation_prompt=add_generation_prompt,
        strftime_now=strftime_now,
        **extra,
    )
    try:
        text: str = render_limited(template, variables)
    except TemplateLimitError as exc:
        raise HarmonyError(str(exc)) from None
    except Exception as exc:
        raise HarmonyError(f"the chat template failed: {exc}") from exc

    for mark, terminator, replacement in swaps:
        at = text.find(mark)
        start = text.rfind(START, 0, at) if at >= 0 else -1
        stop = text.find(terminator, at) if at >= 0 else -1
        if start < 0 or stop < 0:
            raise HarmonyError("the chat template cannot show builtin tool (python/browser) turns in the history")
        text = text[:start] + replacement + text[stop + len(terminator) :]
    return text
