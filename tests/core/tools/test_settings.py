"""Tool settings persist in a JSON file in the config folder; a damaged file is set aside."""

from __future__ import annotations

from pathlib import Path

from app.core import paths
from app.core.tools.settings import ToolSettings, load_settings, save_settings, settings_path


def test_defaults_and_round_trip(tmp_path: Path) -> None:
    s = load_settings(tmp_path / "t.json")
    assert s == ToolSettings() and not s.browser_enabled and s.python_enabled and s.round_limit == 10
    s.set_enabled("calculate", False)
    s.set_enabled("browser", True)
    s.approval["python"] = "auto"
    s.search_endpoint = "http://127.0.0.1:9999/search"
    s.round_limit = 3
    save_settings(s, tmp_path / "t.json")
    again = load_settings(tmp_path / "t.json")
    assert again == s and not again.is_enabled("calculate") and again.is_enabled("browser")
    assert again.is_enabled("unknown_tool") and not again.is_enabled("unknown_tool", default=False)


def test_default_location_is_config_dir() -> None:
    assert settings_path() == paths.config_dir() / "tools.json"
    save_settings(ToolSettings(round_limit=4))
    assert load_settings().round_limit == 4


def test_damaged_file_is_moved_aside(tmp_path: Path) -> None:
    p = tmp_path / "t.json"
    p.write_text("{not json")
    assert load_settings(p) == ToolSettings()
    assert (tmp_path / "t.json.bad").read_text() == "{not json" and not p.exists()


def test_bad_values_fall_back_to_defaults(tmp_path: Path) -> None:
    p = tmp_path / "t.json"
    p.write_text(
        '{"round_limit": -1, "python_enabled": "yes", "enabled": {"a": true, "b": 3}, '
        '"approval": {"x": "auto", "y": "sometimes"}, "search_endpoint": 5, "extra": 1}'
    )
    s = load_settings(p)
    assert s.round_limit == 10 and s.python_enabled is True and s.enabled == {"a": True}
    assert s.approval == {"x": "auto"} and s.search_endpoint == ToolSettings().search_endpoint
