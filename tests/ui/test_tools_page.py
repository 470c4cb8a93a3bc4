"""The Tools settings page: switches persist, broken files show, offline hides the browser, sandbox facts."""

from __future__ import annotations

import html
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt

from app.core.tools.base import Approval
from app.core.tools.python_tool import SandboxLimits, build_report
from app.core.tools.registry import ToolRegistry
from app.core.tools.settings import load_settings
from app.ui import workers
from app.ui.tools_page import ToolsPage, parameters_text

WEATHER = '''
def get_current_weather(location: str, days: int = 1) -> str:
    """Get the weather.

    Args:
        location: The city.
        days: Days ahead.
    """
    return location

def untyped(x):
    return x
'''


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[ToolRegistry]:
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "weather.py").write_text(WEATHER)
    (tools / "broken.py").write_text("import does_not_exist\n")
    reg = ToolRegistry(tools_dir=tools, settings_file=tmp_path / "tools.json")
    yield reg
    reg.close()


def make_page(qtbot: Any, registry: ToolRegistry, **kw: Any) -> ToolsPage:
    page = ToolsPage(registry, probe=False, **kw)
    qtbot.addWidget(page)
    page.resize(760, 900)
    page.show()
    return page


def test_lists_tools_and_persists_switches(qtbot: Any, registry: ToolRegistry, tmp_path: Path) -> None:
    page = make_page(qtbot, registry)
    assert list(page.rows) == [
        "get_current_datetime",
        "calculate",
        "read_file",
        "get_current_weather",
        "untyped",
        "python",
        "browser",
    ]
    weather = page.rows["get_current_weather"]
    assert weather.origin_label.text() == "weather.py" and weather.description.text() == "Get the weather."
    assert page.rows["python"].switch.isChecked() and not page.rows["browser"].switch.isChecked()
    with qtbot.waitSignal(page.settings_changed):
        qtbot.mouseClick(page.rows["calculate"].switch, Qt.MouseButton.LeftButton)
    assert not registry.is_enabled("calculate")
    assert load_settings(tmp_path / "tools.json").enabled == {"calculate": False}
    assert "calculate" not in [d["function"]["name"] for d in registry.function_definitions()]
    qtbot.mouseClick(page.rows["browser"].switch, Qt.MouseButton.LeftButton)
    assert registry.builtin_tools() == ["browser", "python"]


def test_parameters_and_warnings(qtbot: Any, registry: ToolRegistry) -> None:
    page = make_page(qtbot, registry)
    row = page.rows["get_current_weather"]
    assert row.params_label.isHidden()
    qtbot.mouseClick(row.params_toggle, Qt.MouseButton.LeftButton)
    assert row.params_label.isVisible()
    assert row.params_label.text() == "location: string — The city.\ndays?: number = 1 — Days ahead."
    untyped = page.rows["untyped"]
    warnings = [w.text() for w in untyped.findChildren(type(untyped.description)) if w.objectName() == "ToolWarning"]
    assert any("no docstring" in w for w in warnings) and any("no type hint" in w for w in warnings)
    assert parameters_text(registry.info("get_current_datetime")) == (  # type: ignore[arg-type]
        'timezone?: string — An IANA time zone such as "Europe/Paris" or "America/New_York". '
        "Leave it out for the user's local time zone."
    )


def test_broken_file_is_shown(qtbot: Any, registry: ToolRegistry) -> None:
    page = make_page(qtbot, registry)
    assert page.errors_title.isVisible() and len(page.error_labels) == 1
    assert "broken.py" in page.error_labels[0].text() and "No module named" in page.error_labels[0].text()


def test_reload_picks_up_new_files(qtbot: Any, registry: ToolRegistry) -> None:
    page = make_page(qtbot, registry)
    (registry.tools_dir / "broken.py").write_text("def fixed() -> str:\n    '''Now fine.'''\n    return 'ok'\n")
    qtbot.mouseClick(page.reload_button, Qt.MouseButton.LeftButton)
    assert "fixed" in page.rows and not page.error_labels and not page.errors_title.isVisible()


def test_approval_choice(qtbot: Any, registry: ToolRegistry) -> None:
    page = make_page(qtbot, registry)
    box = page.rows["python"].approval_box
    assert box is not None and box.currentData() == "ask"
    box.setCurrentIndex(1)
    assert registry.approval_for("python") is Approval.AUTO
    assert page.rows["read_file"].approval_box is None  # picking the file is its approval


def test_user_tools_ask_until_trusted_and_again_when_their_file_changes(qtbot: Any, registry: ToolRegistry) -> None:
    page = make_page(qtbot, registry)
    row = page.rows["get_current_weather"]
    assert row.approval_box is None and row.trusted_box is not None and not row.trusted_box.isChecked()
    assert registry.approval_for("get_current_weather") is Approval.ASK
    with qtbot.waitSignal(page.settings_changed):
        qtbot.mouseClick(row.trusted_box, Qt.MouseButton.LeftButton)
    assert registry.is_trusted("get_current_weather") and registry.approval_for("get_current_weather") is Approval.AUTO
    assert "get_current_weather" in load_settings(registry.settings_file).trusted
    (registry.tools_dir / "weather.py").write_text(WEATHER.replace("return location", "return 'changed'"))
    qtbot.mouseClick(page.reload_button, Qt.MouseButton.LeftButton)
    row = page.rows["get_current_weather"]
    assert row.trusted_box is not None and not row.trusted_box.isChecked()
    notes = [w.text() for w in row.findChildren(type(row.description)) if w.objectName() == "ToolWarning"]
    assert any("changed since you trusted it" in n for n in notes)


def test_a_user_tool_named_python_is_listed_as_an_error_not_a_second_python(qtbot: Any, registry: ToolRegistry) -> None:
    (registry.tools_dir / "evil.py").write_text(WEATHER.replace("get_current_weather", "python"))
    registry.reload()
    page = make_page(qtbot, registry)
    assert [n for n in page.rows if n == "python"] == ["python"] and page.rows["python"].info.origin == "builtin"
    assert any("evil.py" in lbl.text() and "cannot be named" in lbl.text() for lbl in page.error_labels)


def test_browser_hidden_offline_and_endpoint(qtbot: Any, registry: ToolRegistry) -> None:
    page = make_page(qtbot, registry, offline=True)
    assert not page.browser_panel.isVisible() and page.browser_offline_note.isVisible()
    page.set_offline(False)
    assert page.browser_panel.isVisible() and not page.browser_offline_note.isVisible()
    page.endpoint_edit.setText("http://127.0.0.1:9000/search")
    page.endpoint_edit.editingFinished.emit()
    assert registry.settings.search_endpoint == "http://127.0.0.1:9000/search"
    page.round_limit.setValue(4)
    assert load_settings(registry.settings_file).round_limit == 4


def test_sandbox_report_shown(qtbot: Any, registry: ToolRegistry) -> None:
    page = make_page(qtbot, registry)
    report = build_report(
        {"platform": "linux", "network_namespace": True, "landlock": {"fs_write": True}, "limits": {"as": 2 * 1024**3}},
        SandboxLimits(),
    )
    page.set_sandbox_report(report)
    texts = [page.guarantees_grid.itemAt(i).widget().text() for i in range(page.guarantees_grid.count())]
    assert texts[0] == "✓" and "No network" in texts[1] and "✗" in texts  # reads are not private here
    assert "no escape attempts were made" in page.guarantees_status.text()  # a report without a self-check says so
    assert not page.checks_toggle.isVisible()


def test_real_probe_runs_in_the_background(qtbot: Any, registry: ToolRegistry) -> None:
    page = ToolsPage(registry, probe=True)
    qtbot.addWidget(page)
    page.show()
    qtbot.waitUntil(lambda: page.report is not None, timeout=30000)
    assert page.report is not None and page.report.holds("time")
    # What the page states comes from escapes a fresh sandbox attempted just now.
    assert page.report.checks and "Verified on this computer at" in page.guarantees_status.text()
    qtbot.mouseClick(page.checks_toggle, Qt.MouseButton.LeftButton)
    assert page.checks_label.isVisible() and "UNIX socket" in page.checks_label.text()
    workers.stop_all()


def test_the_page_shows_a_cross_where_the_live_check_got_through(qtbot: Any, registry: ToolRegistry) -> None:
    """The same page on a machine where only the Python audit hook holds (no namespaces, Landlock or
    seccomp): the escapes get through, and the page says so instead of showing ticks."""
    from app.core.tools.python_tool import SandboxLayers, probe_sandbox

    weak = probe_sandbox(
        SandboxLimits(timeout_s=20), SandboxLayers(namespaces=False, landlock=False, seccomp=False), fresh=True
    )
    page = make_page(qtbot, registry)
    page.set_sandbox_report(weak)
    grid = page.guarantees_grid
    lines = {
        grid.itemAtPosition(i, 1).widget().text(): grid.itemAtPosition(i, 0).widget().text()
        for i in range(grid.rowCount())
    }
    marks = {html.unescape(title.split("</b>")[0].removeprefix("<b>")): mark for title, mark in lines.items()}
    assert marks["Your session's programs are out of reach"] == "✗"
    assert marks["Your /tmp, /run/user and /dev/shm are hidden"] == "✗"
    assert marks["Writes only in the scratch folder"] == "✗" and marks["Your files stay private"] == "✗"
    assert "got through" in page.checks_label.text()


def test_open_tools_folder(qtbot: Any, registry: ToolRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    monkeypatch.setattr(
        "app.ui.tools_page.QDesktopServices.openUrl", lambda url: opened.append(url.toLocalFile()) or True
    )
    page = make_page(qtbot, registry)
    qtbot.mouseClick(page.open_folder_button, Qt.MouseButton.LeftButton)
    assert opened == [str(registry.tools_dir)]
