"""The log file: where it is, what reaches it, no conversation text unless asked, rotation, diagnostics."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.core import logs, paths


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    logs.shutdown()  # a test before may have configured it (app.__main__.main does)
    path = logs.configure(folder=tmp_path / "logs")
    try:
        yield path
    finally:
        logs.shutdown()


def _text(path: Path) -> str:
    logs.flush()
    return path.read_text(encoding="utf-8") if path.exists() else ""


def test_the_log_lives_in_the_data_folder() -> None:
    assert logs.log_dir() == paths.data_dir() / "logs" and logs.log_dir().is_dir()


def test_own_records_reach_the_file_and_others_only_from_warning(log_file: Path) -> None:
    logging.getLogger("app.core.engine").info("loaded the model in %.1f s", 1.5)
    logging.getLogger("httpx").info("a request nobody needs to read")
    logging.getLogger("uvicorn").warning("port in use")
    text = _text(log_file)
    assert "loaded the model in 1.5 s" in text and "INFO" in text
    assert "a request nobody needs" not in text and "port in use" in text
    assert "Harmonica" in text.splitlines()[0]  # the start-up line names the version


def test_conversation_text_stays_out_unless_debug_logging_is_on(log_file: Path) -> None:
    log = logging.getLogger("app.core.harmony")
    log.warning("parser failed on %r", "my secret question", extra=logs.PRIVATE)
    logging.getLogger(logs.PRIVATE_LOGGER).info("user said %s", "my other secret")
    text = _text(log_file)
    assert "parser failed on" in text and logs.HIDDEN in text
    assert "secret" not in text

    logs.set_debug(True)
    assert logs.debug_enabled()
    log.warning("parser failed on %r", "visible now", extra=logs.PRIVATE)
    logging.getLogger(logs.PRIVATE_LOGGER).info("user said %s", "also visible")
    logging.getLogger("app.ui").debug("a debug detail")
    text = _text(log_file)
    assert "visible now" in text and "also visible" in text and "a debug detail" in text
    logs.set_debug(False)
    logging.getLogger("app.ui").debug("not written")
    assert "not written" not in _text(log_file)


def test_errors_keep_their_traceback_and_are_read_back(log_file: Path) -> None:
    log = logging.getLogger("app.ui")
    for i in range(3):
        try:
            raise ValueError(f"bad value {i}")
        except ValueError:
            log.exception("Shown to the user: it broke (%d)", i)
    log.warning("only a warning")
    text = _text(log_file)
    assert "Traceback (most recent call last)" in text and "ValueError: bad value 2" in text
    errors = logs.recent_errors(2, log_file)
    assert len(errors) == 2 and "it broke (1)" in errors[0] and "ValueError: bad value 2" in errors[1]
    assert not any("only a warning" in e for e in errors)


def test_the_file_rotates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    logs.shutdown()
    monkeypatch.setattr(logs, "MAX_BYTES", 2000)
    path = logs.configure(folder=tmp_path)
    try:
        for i in range(200):
            logging.getLogger("app").info("line %d %s", i, "x" * 40)
        logs.flush()
    finally:
        logs.shutdown()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["harmonica.log", "harmonica.log.1", "harmonica.log.2", "harmonica.log.3"]
    assert path.stat().st_size <= 2000


def test_an_unusable_folder_falls_back_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs.shutdown()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    try:
        logs.configure(folder=blocker / "logs")  # a folder under a file cannot exist
        logging.getLogger("app").error("still reported")
        logs.flush()
    finally:
        logs.shutdown()
    err = capsys.readouterr().err
    assert "logging to stderr only" in err and "still reported" in err


def test_diagnostics_name_versions_facts_and_errors_but_no_conversation(log_file: Path) -> None:
    logging.getLogger("app.core.harmony").error("parser failed on %r", "what I asked", extra=logs.PRIVATE)
    report = logs.diagnostics([("Qt", "6.9.0"), ("Load plan", "CPU only\nwhy: no GPU")])
    assert "Harmonica diagnostics" in report and "Python" in report and "llama-cpp-python" in report
    assert "Qt" in report and "6.9.0" in report and "why: no GPU" in report
    assert "parser failed on" in report and "what I asked" not in report
    assert str(log_file) in report
