"""The tools that ship with the app: date and time, the calculator, reading a picked file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.core.tools.local import ToolError, builtin_function_tools, calculate, get_current_datetime, read_picked_file


@pytest.mark.parametrize(
    ("expr", "value"),
    [
        ("1 + 2 * 3", "7"),
        ("(17.5 * 3 + 2) / 4", "13.625"),
        ("2 ** 10", "1024"),
        ("2 ^ 10", "1024"),
        ("10 / 4", "2.5"),
        ("10 // 4", "2"),
        ("-7 % 3", "2"),
        ("sqrt(16)", "4"),
        ("round(pi, 4)", "3.1416"),
        ("max(3, 9, 2)", "9"),
        ("factorial(20)", "2432902008176640000"),
        ("log(e)", "1"),
        ("2 × 3 − 1", "5"),
        ("0.1 + 0.2", "0.3"),
        ("10 / 3", "3.33333333333333"),
        ("comb(10, 3)", "120"),
        ("hypot(3, 4)", "5"),
    ],
)
def test_calculator(expr: str, value: str) -> None:
    assert calculate(expr) == value


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("1 / 0", "division by zero"),
        ("__import__('os')", "unknown function"),
        ("open('x')", "unknown function"),
        ("x + 1", "unknown name 'x'"),
        ("9 ** 9 ** 9", "too large"),
        ("factorial(10**6)", "too large"),
        ("'a' * 3", "only numbers"),
        ("(1).__class__", "not allowed"),
        ("sqrt(-1)", "math error"),
        ("", "empty"),
        ("1 +", "cannot read"),
        ("[1, 2]", "one expression"),
        ("lambda: 1", "not allowed"),
        ("1" * 3000, "longer than"),
    ],
)
def test_calculator_refuses(expr: str, message: str) -> None:
    with pytest.raises(ToolError, match=re.escape(message)):
        calculate(expr)


def test_datetime_with_and_without_timezone() -> None:
    local = get_current_datetime()
    assert re.match(r"\w+day, \d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", local) and "local time" in local
    tokyo = get_current_datetime("Asia/Tokyo")
    assert "(UTC+09:00, Asia/Tokyo)" in tokyo and "+09:00" in tokyo
    with pytest.raises(ToolError, match="unknown time zone 'Mars/Base'"):
        get_current_datetime("Mars/Base")


def test_read_picked_file(tmp_path: Path) -> None:
    p = tmp_path / "notes.txt"
    p.write_text("\ufeffhello\nworld", encoding="utf-8")
    assert read_picked_file(p) == "File: notes.txt (14 bytes)\n\nhello\nworld"
    big = tmp_path / "big.txt"
    big.write_text("x" * 1000)
    out = read_picked_file(big, max_chars=100)
    assert out.split("\n\n")[1] == "x" * 100 and "truncated: only the first 100 characters of 1,000 bytes" in out
    (tmp_path / "bin.dat").write_bytes(b"\x00\x01\x02" * 10)
    with pytest.raises(ToolError, match="binary file"):
        read_picked_file(tmp_path / "bin.dat")
    with pytest.raises(ToolError, match="does not exist"):
        read_picked_file(tmp_path / "nope.txt")
    with pytest.raises(ToolError, match="is a folder"):
        read_picked_file(tmp_path)


def test_builtin_tools_have_valid_definitions() -> None:
    tools = {t.name: t for t in builtin_function_tools()}
    assert set(tools) == {"get_current_datetime", "calculate", "read_file"}
    assert tools["read_file"].default_approval.value == "pick_file"
    for t in tools.values():
        assert t.description and t.definition and t.definition["function"]["name"] == t.name
