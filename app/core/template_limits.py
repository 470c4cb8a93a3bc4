"""Limits on running a chat template from a model file: time, steps, and the size of what it builds.

A GGUF carries its own Jinja chat template, and Harmonica renders it for every message. The Jinja
sandbox already keeps a template away from Python internals, but not from looping for hours,
recursing without end, or building a gigabyte string. Rendering here is bounded three ways:

* Steps and time: while the template runs, a trace function counts the lines executed in the
  template's own compiled code (`<template>` frames only, so the cost stays small) and stops
  the render past MAX_STEPS or MAX_SECONDS. Nested loops, `{% for %}` over a huge range, and
  macros calling macros all execute template lines, so all of them hit this limit.
* Size: operators and calls that can multiply a text in one step (`'x' * n`, `**`, `%` and
  `format` widths, `center`/`ljust`/`indent`/`replace`, …) are checked before they run, the
  template's variables are checked as lines execute (doubling a string in a loop), and the
  output is counted as it is produced.
* Recursion: Python's own recursion limit, reported as a sentence.

Each limit ends the render with TemplateLimitError, whose message says what happened.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from app.core.errors import HarmonicaError

MAX_SECONDS = 5.0  # the official gpt-oss template renders a long chat in milliseconds
MAX_STEPS = 5_000_000  # template lines executed
MAX_CHARS = 16_000_000  # any text or list the template builds, and its output
_MAX_PIECES = 100_000  # slices, batches: as many as Jinja's own range() allows
_SPEC_RE = re.compile(r"%[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[a-zA-Z%]")
_FORMAT_SPEC_RE = re.compile(r"\{[^{}]*?:[^{}]*?\}")


class TemplateLimitError(HarmonicaError):
    """A chat template was stopped by a limit; the message says which, in words for the user."""


class _Budget:
    def __init__(self, seconds: float, steps: int, chars: int) -> None:
        self.deadline = time.monotonic() + seconds
        self.seconds = seconds
        self.steps_left = steps
        self.steps = steps
        self.chars = chars

    def tick(self) -> None:
        self.steps_left -= 1
        if self.steps_left <= 0:
            raise TemplateLimitError(
                f"the model's chat template ran more than {self.steps:,} steps (it may loop forever), "
                "so Harmonica stopped it. The model file's template is broken or hostile; use another file."
            )
        if not self.steps_left & 1023 and time.monotonic() > self.deadline:
            self.too_slow()

    def too_slow(self) -> None:
        raise TemplateLimitError(
            f"the model's chat template ran for more than {self.seconds:g} s (it may loop forever), "
            "so Harmonica stopped it. The model file's template is broken or hostile; use another file."
        )

    def size(self, n: int | float, what: str = "a text") -> None:
        if n > self.chars:
            raise TemplateLimitError(
                f"the model's chat template tried to build {what} of {int(n):,} characters or items "
                f"(the limit is {self.chars:,}), so Harmonica stopped it. The model file's template is "
                "broken or hostile; use another file."
            )


_local = threading.local()


def _budget() -> _Budget | None:
    return getattr(_local, "budget", None)


def _len(value: Any) -> int:
    return len(value) if isinstance(value, (str, bytes, list, tuple, dict)) else 0


def _check_format(budget: _Budget, fmt: str, style: str) -> None:
    """Refuse `%` / `format` field widths and precisions that would build a huge text."""
    if style == "%":
        for width, precision in _SPEC_RE.findall(fmt):
            for n in (width, precision):
                if n == "*" or (n and int(n) > budget.chars):
                    budget.size(budget.chars + 1, "a formatted text")
    else:
        for field in _FORMAT_SPEC_RE.findall(fmt):
            if "{" in field[1:] or any(int(n) > budget.chars for n in re.findall(r"\d+", field.split(":", 1)[1])):
                budget.size(budget.chars + 1, "a formatted text")


def check_binop(operator: str, left: Any, right: Any) -> None:
    budget = _budget()
    if budget is None:
        return
    budget.tick()
    if operator == "*":
        for seq, n in ((left, right), (right, left)):
            if _len(seq) and isinstance(n, int):
                budget.size(_len(seq) * n)
        if isinstance(left, int) and isinstance(right, int):
            budget.size((left.bit_length() + right.bit_length()) // 3, "a number")
    elif operator == "**":
        if isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
            budget.size(right * left.bit_length() // 3, "a number")
    elif operator == "+":
        budget.size(_len(left) + _len(right))
    elif operator == "%" and isinstance(left, str):
        _check_format(budget, left, "%")


_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})


def check_call(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Before the template calls `obj`: refuse str methods that would build a huge text."""
    budget = _budget()
    if budget is None:
        return
    budget.tick()
    owner = getattr(obj, "__self__", None)
    name = getattr(obj, "__name__", "")
    if not isinstance(owner, str):
        return
    if name in _WIDTH_METHODS and args and isinstance(args[0], int):
        budget.size(args[0])
    elif name == "expandtabs":
        tab = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(tab, int):
            budget.size(len(owner) + owner.count("\t") * tab)
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        hits = owner.count(args[0]) if args[0] else len(owner) + 1
        budget.size(len(owner) + hits * max(0, len(args[1]) - len(args[0])))
    elif name in ("format", "format_map"):
        _check_format(budget, owner, "{")
        budget.size(len(owner) + sum(_len(a) for a in args) + sum(_len(v) for v in kwargs.values()))


def _checked_filters(filters: dict[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    """Jinja's filters, each counting as a step, the text-multiplying ones checked before they run."""

    def guard(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            budget = _budget()
            if budget is not None:
                budget.tick()
                _precheck_filter(budget, name, args, kwargs)
            return fn(*args, **kwargs)

        for attr in ("jinja_pass_arg",):  # @pass_context / @pass_environment markers
            if hasattr(fn, attr):
                setattr(run, attr, getattr(fn, attr))
        return run

    return {name: guard(name, fn) for name, fn in filters.items()}


def _precheck_filter(budget: _Budget, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    # Filters marked pass_environment/pass_context get that first; the value follows.
    values = [a for a in args if not type(a).__name__.endswith(("Environment", "Context", "EvalContext"))]
    value = values[0] if values else None
    rest = values[1:]
    if name == "center" and rest and isinstance(rest[0], int):
        budget.size(rest[0])
    elif name == "indent":
        width = rest[0] if rest else kwargs.get("width", 4)
        per_line = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
        budget.size(_len(value) + (str(value).count("\n") + 1) * per_line)
    elif name == "format" and isinstance(value, str):
        _check_format(budget, value, "%")
    elif name == "replace" and isinstance(value, str) and len(rest) >= 2:
        old, new = str(rest[0]), str(rest[1])
        hits = value.count(old) if old else len(value) + 1
        budget.size(len(value) + hits * max(0, len(new) - len(old)))
    elif name in ("slice", "batch") and rest and isinstance(rest[0], int) and rest[0] > _MAX_PIECES:
        budget.size(budget.chars + 1, "a list")
    elif name == "join" and isinstance(value, (list, tuple)):
        sep = rest[0] if rest and isinstance(rest[0], str) else ""
        budget.size(sum(_len(v) for v in value) + len(sep) * len(value))
    elif name == "wordwrap" and rest and isinstance(rest[0], int) and rest[0] <= 0:
        budget.size(budget.chars + 1)


def _tracer(budget: _Budget) -> Callable[..., Any]:
    """sys.settrace function: counts lines of the template's own code, and checks its variables."""

    def local(frame: Any, event: str, arg: Any) -> Any:
        if event == "line":
            budget.tick()
            # A backstop for growth no hook sees; every 16th line, as reading f_locals is what
            # costs here (`~`, `+`, `*` and captured blocks are checked where they happen).
            if not budget.steps_left & 15:
                for value in frame.f_locals.values():
                    if _len(value) > budget.chars:
                        budget.size(_len(value))
        return local

    def global_(frame: Any, event: str, arg: Any) -> Any:
        if frame.f_code.co_filename == "<template>":
            budget.tick()
            return local
        return None

    return global_


def render_limited(
    template: Any,
    variables: dict[str, Any],
    *,
    seconds: float = MAX_SECONDS,
    steps: int = MAX_STEPS,
    chars: int = MAX_CHARS,
) -> str:
    """`template.render(**variables)` under the limits above; raises TemplateLimitError past one."""
    budget = _Budget(seconds, steps, chars)
    previous_budget = _budget()
    previous_trace = sys.gettrace()
    _local.budget = budget
    out: list[str] = []
    size = 0
    sys.settrace(_tracer(budget))
    try:
        for chunk in template.generate(**variables):
            size += len(chunk)
            budget.size(size, "an output")
            out.append(chunk)
            if time.monotonic() > budget.deadline:
                budget.too_slow()
    except RecursionError:
        raise TemplateLimitError(
            "the model's chat template calls itself without end (too deep recursion), so Harmonica "
            "stopped it. The model file's template is broken or hostile; use another file."
        ) from None
    finally:
        sys.settrace(previous_trace)
        _local.budget = previous_budget
    return "".join(out)


def _checked_join(join: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Jinja's `~` and captured-block joins, refused before they build a text over the limit."""

    def run(parts: Any) -> Any:
        budget = _budget()
        if budget is not None:
            parts = list(parts)
            budget.tick()
            budget.size(sum(len(p) if isinstance(p, str) else 0 for p in parts))
        return join(parts)

    return run


def limited_globals(globals_: dict[str, Any]) -> dict[str, Any]:
    """Jinja's default globals minus the unbounded ones (`lipsum(n=10**9)` loops in Python code)."""
    from jinja2.utils import generate_lorem_ipsum

    def lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
        budget = _budget()
        if budget is not None and isinstance(n, int) and n > _MAX_PIECES // 100:
            budget.size(budget.chars + 1, "a placeholder text")
        return str(generate_lorem_ipsum(n, html, min, max))

    out = dict(globals_)
    out["lipsum"] = lipsum
    return out


def limited_environment(base: type) -> type:
    """A subclass of the sandbox environment `base` whose operators, calls and filters are checked."""

    class LimitedEnvironment(base):  # type: ignore[misc]
        intercepted_binops = frozenset({"*", "**", "%", "+"})
        concat = staticmethod(_checked_join("".join))

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            # Less constant folding: Jinja's optimizer runs filters on constants while compiling
            # (from_string below puts compiling under the same limits for what folding remains).
            kwargs["optimized"] = False
            super().__init__(*args, **kwargs)
            self.filters = _checked_filters(dict(vars(self)["filters"]))
            self.globals.update(limited_globals(self.globals))

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            check_binop(operator, left, right)
            return super().call_binop(context, operator, left, right)

        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's signature
            check_call(__obj, args, kwargs)
            return super().call(__context, __obj, *args, **kwargs)

        def from_string(self, source: Any, *args: Any, **kwargs: Any) -> Any:
            # Jinja's code generator runs filters on constant arguments while compiling: give that
            # the same limits as a render.
            previous = _budget()
            _local.budget = _Budget(MAX_SECONDS, MAX_STEPS, MAX_CHARS)
            try:
                template = super().from_string(source, *args, **kwargs)
            finally:
                _local.budget = previous
            namespace = template.root_render_func.__globals__  # the compiled module's globals
            for name in ("str_join", "markup_join"):
                if name in namespace:
                    namespace[name] = _checked_join(namespace[name])
            return template

        def wrap_str_format(self, value: Any) -> Any:  # Jinja >= 3.1.5 routes str.format here
            wrapped = super().wrap_str_format(value)
            owner = getattr(value, "__self__", None)
            if wrapped is None or not isinstance(owner, str):
                return wrapped

            def checked(*args: Any, **kwargs: Any) -> Any:
                budget = _budget()
                if budget is not None:
                    _check_format(budget, owner, "{")
                return wrapped(*args, **kwargs)

            return checked

        def format_string(self, s: str, args: tuple[Any, ...], kwargs: dict[str, Any], format_func: Any = None) -> str:
            budget = _budget()
            if budget is not None:
                _check_format(budget, s, "{")
            return str(super().format_string(s, args, kwargs, format_func))

    return LimitedEnvironment


__all__ = ["MAX_CHARS", "MAX_SECONDS", "MAX_STEPS", "TemplateLimitError", "limited_environment", "render_limited"]
