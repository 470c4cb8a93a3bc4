"""User tool files: loaded in their own process; broken, hanging or exiting files are reported, others still load."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from app.core.tools.usertools import UserToolHost

WEATHER = '''
from typing import Literal

def get_current_weather(location: str, format: Literal["celsius", "fahrenheit"] = "celsius") -> str:
    """Get the current weather in a given location.

    Args:
        location: The city and state, e.g. San Francisco, CA
        format: The temperature unit to use.
    """
    print("a tool may print; it must not disturb the protocol")
    if location == "Atlantis":
        raise LookupError("no such city")
    return f"{location}: 21 degrees {format}"

def _helper():
    return 1
'''


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def host(tmp_path: Path):  # type: ignore[no-untyped-def]
    h = UserToolHost(tmp_path / "tools", reserved_names=["calculate"], load_timeout_s=3.0)
    yield h
    h.close()


def test_function_from_plain_python(host: UserToolHost) -> None:
    write(host.folder, "weather.py", WEATHER)
    tools, errors = host.load()
    assert errors == []
    assert [t.name for t in tools] == ["get_current_weather"]
    t = tools[0]
    assert t.origin == "user" and t.source == str(host.folder / "weather.py")
    params = t.parameters
    assert params["required"] == ["location"]
    assert params["properties"]["format"]["enum"] == ["celsius", "fahrenheit"]
    assert host.call("get_current_weather", {"location": "Paris"}).content == "Paris: 21 degrees celsius"


def test_tool_exception_becomes_error_result(host: UserToolHost) -> None:
    write(host.folder, "weather.py", WEATHER)
    host.load()
    out = host.call("get_current_weather", {"location": "Atlantis"})
    assert out.is_error and out.content == "Error: LookupError: no such city"
    assert out.output is not None and "weather.py" in out.output and "raise LookupError" in out.output
    bad = host.call("get_current_weather", {"city": "x"})
    assert (
        bad.is_error
        and "unknown argument(s) 'city'" in bad.content
        and "missing required argument 'location'" in bad.content
    )
    # the process survived both
    assert host.call("get_current_weather", {"location": "Oslo", "format": "fahrenheit"}).content.endswith("fahrenheit")


def test_broken_files_are_reported_and_others_load(host: UserToolHost) -> None:
    write(host.folder, "a_syntax.py", "def f(:\n    pass\n")
    write(host.folder, "b_raises.py", "raise RuntimeError('missing API key')\n")
    write(host.folder, "c_exits.py", "import sys\nsys.exit('bye')\n")
    write(host.folder, "d_kills.py", "import os\nos._exit(3)\n")
    write(host.folder, "e_hangs.py", "while True:\n    pass\n")
    write(host.folder, "f_empty.py", "X = 1\n")
    write(
        host.folder,
        "g_badname.py",
        "__all__ = ['calculate', 'ok']\ndef calculate(x: str) -> str:\n    '''Clash.'''\n    return x\ndef ok() -> str:\n    '''Fine.'''\n    return 'ok'\n",
    )
    write(host.folder, "weather.py", WEATHER)
    write(host.folder, "_helpers.py", "raise RuntimeError('helpers are not tool files')\n")
    t0 = time.monotonic()
    tools, errors = host.load()
    assert time.monotonic() - t0 < 20
    assert sorted(t.name for t in tools) == ["get_current_weather", "ok"]
    by_file = {Path(e.file).name: e.error for e in errors}
    assert by_file["a_syntax.py"].startswith("SyntaxError")
    assert by_file["b_raises.py"] == "RuntimeError: missing API key"
    assert by_file["c_exits.py"] == "SystemExit: bye"
    assert "stopped the tool process" in by_file["d_kills.py"] and "exit code 3" in by_file["d_kills.py"]
    assert "longer than 3 s" in by_file["e_hangs.py"]
    assert by_file["f_empty.py"] == "the file defines no public function"
    assert "already exists" in by_file["g_badname.py"]
    assert "_helpers.py" not in by_file
    assert host.call("get_current_weather", {"location": "Rome"}).content.startswith("Rome")


def test_call_timeout_kills_and_next_call_reloads(host: UserToolHost) -> None:
    write(
        host.folder,
        "slow.py",
        "import time\n\ndef slow(s: float) -> str:\n    '''Sleep.'''\n    time.sleep(s)\n    return 'woke'\n",
    )
    host.load()
    t0 = time.monotonic()
    out = host.call("slow", {"s": 30}, timeout_s=0.5)
    assert out.is_error and "did not finish within 0.5 s" in out.content and time.monotonic() - t0 < 5
    assert host.call("slow", {"s": 0}).content == "woke"


def test_call_cancel(host: UserToolHost) -> None:
    write(
        host.folder,
        "slow.py",
        "import time\n\ndef slow() -> str:\n    '''Sleep.'''\n    time.sleep(30)\n    return 'x'\n",
    )
    host.load()
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    out = host.call("slow", {}, cancel=cancel)
    assert out.status == "cancelled" and out.is_error


def test_crash_during_call_is_an_error_result(host: UserToolHost) -> None:
    write(host.folder, "crash.py", "import os\n\ndef crash() -> str:\n    '''Die.'''\n    os._exit(9)\n")
    host.load()
    out = host.call("crash", {})
    assert out.is_error and "crashed" in out.content and "exit code 9" in out.content


def test_return_values_become_text(host: UserToolHost) -> None:
    write(
        host.folder,
        "vals.py",
        "def d() -> dict:\n    '''D.'''\n    return {'a': [1, 2], 'é': None}\n\ndef n() -> None:\n    '''N.'''\n",
    )
    host.load()
    assert host.call("d", {}).content == '{"a": [1, 2], "é": null}'
    assert host.call("n", {}).content == ""


def test_empty_folder(host: UserToolHost) -> None:
    assert host.load() == ([], [])
