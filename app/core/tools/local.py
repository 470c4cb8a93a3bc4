"""Function tools that ship with Harmonica: the date and time, a calculator, and reading a file the user picks."""

from __future__ import annotations

import ast
import math
import operator
import os
from datetime import datetime
from datetime import timezone as dt_timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app.core.errors import HarmonicaError
from app.core.tools.base import Approval, ToolInfo, ToolKind
from app.core.tools.schema import describe_function


class ToolError(HarmonicaError):
    """A tool refused its input; the message is for the model."""


# --- date and time ---------------------------------------------------------------------------------
def get_current_datetime(timezone: str | None = None) -> str:
    """Get the current date, time and weekday.

    Args:
        timezone: An IANA time zone such as "Europe/Paris" or "America/New_York". Leave it out for
            the user's local time zone.
    """
    if timezone:
        try:
            zone: Any = ZoneInfo(timezone.strip())
        except (ZoneInfoNotFoundError, ValueError):
            raise ToolError(
                f"unknown time zone {timezone!r}; use an IANA name such as 'Europe/Paris', "
                f"'America/New_York' or 'UTC', or leave it out for local time"
            ) from None
        now = datetime.now(zone)
        label = timezone.strip()
    else:
        now = datetime.now().astimezone()
        label = "local time"
    offset = now.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    sign = "+" if minutes >= 0 else "-"
    utc = f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    abbrev = now.tzname() or ""
    return (
        f"{now:%A, %Y-%m-%d %H:%M:%S} {abbrev} ({utc}, {label}); "
        f"ISO 8601: {now.isoformat(timespec='seconds')}; "
        f"UTC: {now.astimezone(dt_timezone.utc):%Y-%m-%d %H:%M:%S}"
    )


# --- calculator ------------------------------------------------------------------------------------
_MAX_EXPRESSION = 2000
_MAX_POWER_BITS = 100_000  # results of ~30,000 digits are plenty; 9**9**9 would take the app down
_BINOPS: dict[type, Any] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_FUNCS: dict[str, Any] = {
    "sqrt": math.sqrt,
    "cbrt": lambda x: math.copysign(abs(x) ** (1 / 3), x),
    "exp": math.exp,
    "ln": math.log,
    "log": math.log,
    "log10": math.log10,
    "log2": math.log2,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "asin": math.asin,
    "acos": math.acos,
    "atan": math.atan,
    "atan2": math.atan2,
    "sinh": math.sinh,
    "cosh": math.cosh,
    "tanh": math.tanh,
    "hypot": math.hypot,
    "degrees": math.degrees,
    "radians": math.radians,
    "floor": math.floor,
    "ceil": math.ceil,
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "gcd": math.gcd,
    "lcm": math.lcm,
    "factorial": None,
    "comb": None,
    "perm": None,  # checked below: their size explodes
}
_CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau, "inf": math.inf}


def _power(base: Any, exp: Any) -> Any:
    if (
        isinstance(base, int)
        and isinstance(exp, int)
        and exp > 0
        and abs(base) > 1
        and base.bit_length() * exp > _MAX_POWER_BITS
    ):
        raise ToolError("the result would be too large to compute")
    result = base**exp
    if isinstance(result, complex):
        raise ToolError("the result is not a real number")
    return result


def _check_combinatorial(name: str, args: list[Any]) -> Any:
    if not all(isinstance(a, int) and not isinstance(a, bool) for a in args):
        raise ToolError(f"{name} needs whole numbers")
    if any(a > 5000 for a in args):
        raise ToolError(f"{name} of numbers above 5000 is too large to compute")
    return getattr(math, name)(*args)


def _eval(node: ast.AST) -> Any:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise ToolError(f"only numbers are allowed, not {node.value!r}")
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        value = _eval(node.operand)
        return value if isinstance(node.op, ast.UAdd) else -value
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, (ast.Pow, ast.BitXor)):  # "^" means power on a calculator
            return _power(left, right)
        fn = _BINOPS.get(type(node.op))
        if fn is None:
            raise ToolError(f"the operator {type(node.op).__name__} is not supported")
        return fn(left, right)
    if isinstance(node, ast.Name):
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        raise ToolError(f"unknown name {node.id!r}; known constants: {', '.join(_CONSTANTS)}")
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        name = node.func.id
        if name not in _FUNCS:
            raise ToolError(f"unknown function {name!r}; available: {', '.join(sorted(_FUNCS))}")
        args = [_eval(a) for a in node.args]
        if _FUNCS[name] is None:
            return _check_combinatorial(name, args)
        return _FUNCS[name](*args)
    if isinstance(node, (ast.Tuple, ast.List)):
        raise ToolError("write one expression (use min(a, b) or max(a, b) to compare several numbers)")
    raise ToolError(f"{type(node).__name__} is not allowed in a calculation")


def format_number(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value.is_integer() and abs(value) < 1e16:
            return str(int(value))
        return format(value, ".15g")
    return str(value)


def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression exactly; use it instead of doing arithmetic in your head.

    Supports + - * / // % and ** (or ^) for powers, parentheses, the constants pi, e and tau, and
    the functions sqrt, cbrt, exp, ln, log, log10, log2, sin, cos, tan, asin, acos, atan, atan2,
    sinh, cosh, tanh, hypot, degrees, radians, floor, ceil, abs, round, min, max, gcd, lcm,
    factorial, comb and perm (angles in radians).

    Args:
        expression: The expression, e.g. "(17.5 * 3 + 2) / 4" or "sqrt(2) ^ 10".
    """
    text = expression.strip().replace("×", "*").replace("÷", "/").replace("−", "-")
    if not text:
        raise ToolError("the expression is empty")
    if len(text) > _MAX_EXPRESSION:
        raise ToolError(f"the expression is longer than {_MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ToolError(f"cannot read the expression: {exc.msg}") from None
    try:
        value = _eval(tree)
    except ToolError:
        raise
    except ZeroDivisionError:
        raise ToolError("division by zero") from None
    except OverflowError:
        raise ToolError("the result is too large") from None
    except (ValueError, TypeError) as exc:
        raise ToolError(f"math error: {exc}") from None
    return format_number(value)


# --- reading a file the user picks -----------------------------------------------------------------
MAX_FILE_CHARS = 60_000


def read_file(purpose: str, suggested_path: str | None = None) -> str:
    """Ask the user to choose a file on their computer and read it as text. The user sees your purpose
    and picks the file (or refuses); you never read a path the user did not choose.

    Args:
        purpose: Why you need the file, shown to the user, e.g. "to summarise your meeting notes".
        suggested_path: A file name or path the user mentioned, offered to them as the first choice.
    """
    raise ToolError(
        "read_file needs the user to pick a file; it cannot run on its own"
    )  # the loop runs read_picked_file


def read_picked_file(path: str | Path, max_chars: int = MAX_FILE_CHARS) -> str:
    """The text of a file the user picked, with a short header; refuses binary files in plain words.

    Never blocks: a FIFO, socket or device is refused before it is opened. A file inside the python
    tool's scratch folders (which sandboxed code controls) must also be no symlink or hard link, so
    code cannot pass a host file off as its own output.
    """
    from app.core import paths
    from app.core.tools.safe_files import UnsafeFileError, open_regular_file, read_at_most

    p = Path(path)
    scratch = paths.scratch_root(ensure=False)
    in_scratch = _is_inside(p, scratch)
    try:
        fd, st = open_regular_file(p, inside=scratch if in_scratch else None, strict=in_scratch)
        try:
            raw = read_at_most(fd, max_chars * 4 + 4)
        finally:
            os.close(fd)
    except UnsafeFileError as exc:
        raise ToolError(str(exc).rstrip(".")) from None
    except FileNotFoundError:
        raise ToolError(f"the file {p.name!r} does not exist") from None
    except IsADirectoryError:
        raise ToolError(f"{p.name!r} is a folder, not a file") from None
    except OSError as exc:
        raise ToolError(f"the file {p.name!r} could not be read: {exc.strerror or exc}") from None
    size = st.st_size
    if b"\x00" in raw[:8192]:
        raise ToolError(f"{p.name!r} is a binary file ({size:,} bytes) and cannot be read as text")
    text = raw.decode("utf-8", errors="replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    note = ""
    if len(text) > max_chars or size > len(raw):
        text = text[:max_chars]
        note = f"\n\n[… truncated: only the first {max_chars:,} characters of {size:,} bytes are shown]"
    return f"File: {p.name} ({size:,} bytes)\n\n{text}{note}"


def _is_inside(path: Path, folder: Path) -> bool:
    for candidate in (os.path.abspath(path), os.path.realpath(path)):
        for base in (os.path.abspath(folder), os.path.realpath(folder)):
            if candidate == base or candidate.startswith(base.rstrip(os.sep) + os.sep):
                return True
    return False


def builtin_function_tools() -> list[ToolInfo]:
    """The function tools that ship with the app."""
    out: list[ToolInfo] = []
    for fn, approval in (
        (get_current_datetime, Approval.AUTO),
        (calculate, Approval.AUTO),
        (read_file, Approval.PICK_FILE),
    ):
        spec = describe_function(fn)
        out.append(
            ToolInfo(
                name=spec.name,
                kind=ToolKind.FUNCTION,
                origin="builtin",
                description=spec.description,
                definition=spec.definition(),
                default_approval=approval,
                timeout_s=10.0,
                func=fn,
            )
        )
    return out


__all__ = [
    "MAX_FILE_CHARS",
    "ToolError",
    "builtin_function_tools",
    "calculate",
    "format_number",
    "get_current_datetime",
    "read_file",
    "read_picked_file",
]
