"""The Model manager dialog driven with pytest-qt against a loopback Hugging Face server with faults."""

from __future__ import annotations

import itertools
import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QTimer, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication, QCheckBox, QFileDialog, QLabel, QMessageBox

from app.core.download import DownloadError, DownloadProgress, ErrorKind, Phase
from app.core.models import ModelLibrary, Source
from app.ui import downloads, model_manager, workers
from app.ui.downloads import DownloadController, State, describe_progress, error_view, format_eta
from app.ui.model_manager import ModelManagerDialog
from tests.fixtures.gguf_factory import write_llama_gguf
from tests.fixtures.hf_server import FakeHub, Fault
from tests.ui.download_helpers import BIG, SMALL, gets, make_controller, profile, publish_entry, serve_hub

assert SMALL is not None and BIG is not None
REQUEST = SMALL.download_request()


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    yield from serve_hub(monkeypatch)


@pytest.fixture
def open_dialog(qtbot) -> Iterator[Callable[..., ModelManagerDialog]]:  # type: ignore[no-untyped-def]
    made: list[ModelManagerDialog] = []

    def make(controller: DownloadController, **kw: object) -> ModelManagerDialog:
        kw.setdefault("hardware", profile(32))
        d = ModelManagerDialog(controller, **kw)  # type: ignore[arg-type]
        qtbot.addWidget(d)
        d.show()
        made.append(d)
        qtbot.waitUntil(lambda: d.discovery is not None, timeout=5000)
        return d

    yield make
    for d in made:
        d.controller.shutdown()
    workers.stop_all()


def answer_box(button: str, seen: list[tuple[str, bool | None]] | None = None, tick: bool | None = None) -> None:
    """When the next message box is up (polled; a modal box runs its own event loop), note its
    text and checkbox, optionally set the checkbox, and click `button`."""
    deadline = time.monotonic() + 5

    def poll() -> None:
        box = next((w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox) and w.isVisible()), None)
        if box is None:
            if time.monotonic() < deadline:
                QTimer.singleShot(20, poll)
            return
        check = box.checkBox()
        if seen is not None:
            seen.append(
                (box.text() + " " + box.informativeText(), check.isChecked() if isinstance(check, QCheckBox) else None)
            )
        if tick is not None and isinstance(check, QCheckBox):
            check.setChecked(tick)
        next(b for b in box.buttons() if b.text() == button).click()

    QTimer.singleShot(20, poll)


def settled(d: ModelManagerDialog) -> bool:
    """No scan running and its rows on screen (a layout shows new children one event later)."""
    return d.discovery is not None and not d.scanning and all(r.isVisible() for r in d.rows)


def card(d: ModelManagerDialog, entry_id: str = "gpt-oss-20b") -> model_manager.CatalogCard:
    return d.cards[entry_id]


def click(qtbot, button) -> None:  # type: ignore[no-untyped-def]
    assert button.isVisible() and button.isEnabled(), button.text()
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def wait_state(qtbot, controller: DownloadController, state: str, timeout: int = 10000) -> None:  # type: ignore[no-untyped-def]
    def reached() -> bool:
        st = controller.status(REQUEST)
        assert not (st.state == State.FAILED and state != State.FAILED), st.error
        return st.state == state

    qtbot.waitUntil(reached, timeout=timeout)


def downloaded(controller: DownloadController) -> int:
    p = controller.status(REQUEST).progress
    return p.downloaded if p is not None else 0


# -- download, progress, use ----------------------------------------------------------------------


def test_download_shows_live_progress_then_lists_the_model_and_uses_it(
    qtbot, hub: FakeHub, tmp_path: Path, open_dialog
) -> None:  # type: ignore[no-untyped-def]
    [data] = publish_entry(hub, SMALL, tmp_path)
    hub.rate_bps = 400_000
    controller = make_controller(hub)
    d = open_dialog(controller)
    panel = card(d).panel
    assert d.local_hint.isVisible() and not d.rows
    click(qtbot, panel.download_button)
    qtbot.waitUntil(
        lambda: (
            controller.status(REQUEST).progress is not None
            and controller.status(REQUEST).progress.phase == Phase.DOWNLOADING
            and downloaded(controller) > 150_000
            and controller.status(REQUEST).progress.speed_bps > 0
        ),
        timeout=8000,
    )
    text = panel.status_line.text()
    assert " of 722" in text or " of 7" in text, text
    assert "%" in text and "KiB/s" in text and "left" in text, text
    assert panel.pause_button.isVisible() and panel.cancel_button.isVisible()
    assert not panel.download_button.isVisible()
    assert 0 < panel.bar.value() < 1000
    wait_state(qtbot, controller, State.DONE)
    qtbot.waitUntil(lambda: settled(d) and len(d.rows) == 1, timeout=5000)
    row = d.rows[0]
    assert row.model.source == Source.HUGGINGFACE and row.model.downloaded_by_app
    assert "downloaded by Harmonica" in row.source.text() and row.size_label.text() == "705.6 KiB"
    assert panel.use_button.isVisible() and panel.verify_button.isVisible()
    assert "Downloaded" in panel.status_line.text()
    with qtbot.waitSignal(d.model_chosen, timeout=2000) as chosen:
        click(qtbot, panel.use_button)
    assert Path(chosen.args[0]).read_bytes() == data
    assert not d.isVisible()  # picking a model closes the dialog


def test_ui_updates_at_most_ten_times_a_second(qtbot, hub: FakeHub, tmp_path: Path, open_dialog) -> None:  # type: ignore[no-untyped-def]
    publish_entry(hub, SMALL, tmp_path)
    hub.rate_bps = 600_000
    controller = make_controller(hub, progress_interval=0)  # the core sends every chunk
    d = open_dialog(controller)
    refreshes: list[tuple[float, str, object]] = []
    panel = card(d).panel
    real = panel.refresh

    def counting() -> None:
        st = controller.status(REQUEST)
        refreshes.append((time.monotonic(), st.state, st.progress.phase if st.progress else None))
        real()

    panel.refresh = counting  # type: ignore[method-assign]
    click(qtbot, panel.download_button)
    wait_state(qtbot, controller, State.DONE)
    steady = [t for t, state, phase in refreshes if state == State.RUNNING and phase == Phase.DOWNLOADING]
    assert len(steady) >= 5
    gaps = [b - a for a, b in itertools.pairwise(steady)]
    assert min(gaps) >= 0.095, gaps
    assert len(steady) <= (steady[-1] - steady[0]) * 10 + 2


def test_pause_and_resume(qtbot, hub: FakeHub, tmp_path: Path, open_dialog) -> None:  # type: ignore[no-untyped-def]
    [data] = publish_entry(hub, SMALL, tmp_path)
    hub.rate_bps = 400_000
    controller = make_controller(hub)
    d = open_dialog(controller)
    panel = card(d).panel
    click(qtbot, panel.download_button)
    qtbot.waitUntil(lambda: downloaded(controller) > 100_000, timeout=8000)
    click(qtbot, panel.pause_button)
    wait_state(qtbot, controller, State.PAUSED, timeout=3000)
    kept = downloaded(controller)
    assert 100_000 < kept < len(data)
    assert panel.resume_button.isVisible() and not panel.pause_button.isVisible()
    assert panel.status_line.text().startswith("Paused"), panel.status_line.text()
    hub.rate_bps = None
    click(qtbot, panel.resume_button)
    wait_state(qtbot, controller, State.DONE)
    ranges = gets(hub)
    assert ranges[0] is None and ranges[-1] is not None and ranges[-1].startswith("bytes=")
    assert int(ranges[-1][6:-1]) >= 100_000  # continued from the kept bytes
    result = controller.status(REQUEST).result
    assert result is not None and result.path is not None and result.path.read_bytes() == data


def test_connection_dropped_mid_file_is_resumed_with_bytes_checked(
    qtbot, hub: FakeHub, tmp_path: Path, open_dialog
) -> None:  # type: ignore[no-untyped-def]
    [data] = publish_entry(hub, SMALL, tmp_path)
    hub.inject(Fault("drop", after_bytes=300_001))
    controller = make_controller(hub)
    seen: list[str] = []
    controller.changed.connect(
        lambda r: (
            seen.append(describe_progress(controller.status(r).progress)) if controller.status(r).progress else None
        )
    )
    d = open_dialog(controller)
    click(qtbot, card(d).panel.download_button)
    wait_state(qtbot, controller, State.DONE)
    assert gets(hub) == [None, "bytes=300001-"]
    assert any("retry 1 of 3" in s for s in seen), seen
    result = controller.status(REQUEST).result
    assert result is not None and result.path is not None and result.path.read_bytes() == data


def test_stall_is_retried(qtbot, hub: FakeHub, tmp_path: Path, open_dialog) -> None:  # type: ignore[no-untyped-def]
    [data] = publish_entry(hub, SMALL, tmp_path)
    hub.inject(Fault("stall", after_bytes=200_000, seconds=20))
    controller = make_controller(hub, read_timeout=0.3)
    d = open_dialog(controller)
    started = time.monotonic()
    click(qtbot, card(d).panel.download_button)
    wait_state(qtbot, controller, State.DONE)
    assert time.monotonic() - started < 5
    assert gets(hub) == [None, "bytes=200000-"]
    result = controller.status(REQUEST).result
    assert result is not None and result.path is not None and result.path.read_bytes() == data


# -- errors ---------------------------------------------------------------------------------------


def error_shown(d: ModelManagerDialog, entry_id: str = "gpt-oss-20b") -> tuple[str, str, str | None]:
    box = card(d, entry_id).panel.error_box
    assert box.isVisible()
    return box.headline.text(), box.text.text(), box.buttons[0].text() if box.buttons else None


def test_404_has_a_clear_message(qtbot, hub: FakeHub, open_dialog) -> None:  # type: ignore[no-untyped-def]
    controller = make_controller(hub)  # nothing published: the repo does not exist on this server
    d = open_dialog(controller)
    click(qtbot, card(d).panel.download_button)
    wait_state(qtbot, controller, State.FAILED)
    headline, message, action = error_shown(d)
    assert headline == "Not found on the server" and "404" in message and hub.url in message
    assert action == "Try again" and card(d).panel.download_button.isHidden()


def test_500_has_a_clear_message_and_try_again_works(qtbot, hub: FakeHub, tmp_path: Path, open_dialog) -> None:  # type: ignore[no-untyped-def]
    [data] = publish_entry(hub, SMALL, tmp_path)
    hub.inject(Fault("status", target="API", status=500, times=-1))
    controller = make_controller(hub, max_retries=1)
    d = open_dialog(controller)
    click(qtbot, card(d).panel.download_button)
    wait_state(qtbot, controller, State.FAILED)
    headline, message, action = error_shown(d)
    assert headline == "The server has a problem" and "HTTP 500" in message and "try again later" in message
    assert action == "Try again"
    hub.clear_faults()
    click(qtbot, card(d).panel.error_box.buttons[0])
    wait_state(qtbot, controller, State.DONE)
    assert not card(d).panel.error_box.isVisible()
    result = controller.status(REQUEST).result
    assert result is not None and result.path is not None and result.path.read_bytes() == data


def test_wrong_bytes_are_refused_and_download_again_fixes_it(qtbot, hub: FakeHub, tmp_path: Path, open_dialog) -> None:  # type: ignore[no-untyped-def]
    [data] = publish_entry(hub, SMALL, tmp_path)
    hub.inject(Fault("corrupt"))
    controller = make_controller(hub)
    d = open_dialog(controller)
    click(qtbot, card(d).panel.download_button)
    wait_state(qtbot, controller, State.FAILED)
    headline, message, action = error_shown(d)
    assert headline == "The file was damaged" and "SHA-256" in message and action == "Download again"
    assert not card(d).panel.bar.isVisible()  # nothing partial is kept
    assert not list(controller.manager.repo_dir(SMALL.repo_id).glob("blobs/*"))
    click(qtbot, card(d).panel.error_box.buttons[0])
    wait_state(qtbot, controller, State.DONE)
    result = controller.status(REQUEST).result
    assert result is not None and result.path is not None and result.path.read_bytes() == data


def test_too_little_disk_space_is_refused_before_any_byte(qtbot, hub: FakeHub, tmp_path: Path, open_dialog) -> None:  # type: ignore[no-untyped-def]
    publish_entry(hub, SMALL, tmp_path)
    controller = make_controller(hub, disk_free=lambda path: 200_000_000)
    d = open_dialog(controller)
    click(qtbot, card(d).panel.download_button)
    wait_state(qtbot, controller, State.FAILED)
    headline, message, action = error_shown(d)
    assert headline == "Not enough disk space"
    assert "only 190.7 MiB is free" in message and "Free up" in message and action == "Try again"
    assert gets(hub) == []
    controller.manager.disk_free = lambda path: 10**12  # the user freed space
    click(qtbot, card(d).panel.error_box.buttons[0])
    wait_state(qtbot, controller, State.DONE)


def test_offline_mode_disables_downloads_and_says_why(
    qtbot, hub: FakeHub, tmp_path: Path, open_dialog, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    publish_entry(hub, SMALL, tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    controller = make_controller(hub)
    d = open_dialog(controller)
    assert d.offline_notice.isVisible() and "HF_HUB_OFFLINE" in d.offline_notice.text.text()
    button = card(d).panel.download_button
    assert button.isVisible() and not button.isEnabled() and "HF_HUB_OFFLINE" in button.toolTip()
    controller.start(REQUEST)  # however a download gets started, it is refused without a request
    wait_state(qtbot, controller, State.FAILED)
    headline, message, action = error_shown(d)
    assert headline == "Downloads are off" and "HF_HUB_OFFLINE" in message and action is None
    assert hub.requests() == []


def test_every_error_kind_has_a_headline_and_the_right_action() -> None:
    for kind in ErrorKind:
        view = error_view(DownloadError(kind, f"message for {kind.value}"))
        assert view.headline and view.message == f"message for {kind.value}"
    assert error_view(DownloadError(ErrorKind.CHECKSUM, "x")).action == "Download again"
    assert error_view(DownloadError(ErrorKind.OFFLINE, "x")).action is None
    assert error_view(DownloadError(ErrorKind.NETWORK, "x")).action == "Resume"
    assert (
        "unexpected" in error_view(RuntimeError("boom")).message and "boom" in error_view(RuntimeError("boom")).message
    )


def test_progress_words() -> None:
    p = DownloadProgress(Phase.DOWNLOADING, 4_870_000_000, 12_109_566_560, speed_bps=38_500_000, eta_s=188)
    assert describe_progress(p) == "4.5 GiB of 11.3 GiB · 40% · 36.7 MiB/s · about 3 min left"
    even = DownloadProgress(Phase.DOWNLOADING, 5_000_000_000, 12_109_566_560, speed_bps=41_000_000, eta_s=30)
    assert describe_progress(even) == "4.7 GiB of 11.3 GiB · 41% · 39.1 MiB/s · less than a minute left"
    split = DownloadProgress(Phase.DOWNLOADING, 10, 1000, speed_bps=0, file_index=1, file_count=3)
    assert describe_progress(split) == "10 B of 1000 B · 1% · waiting for data… · part 2 of 3"
    assert describe_progress(DownloadProgress(Phase.PAUSED, 500, 1000)) == "Paused · 500 B of 1000 B · 50%"
    assert describe_progress(DownloadProgress(Phase.CHECKING, 0, 10, checked=5, check_total=10)).startswith("Checking")
    almost = DownloadProgress(Phase.DOWNLOADING, 999_999, 1_000_000, speed_bps=10, eta_s=0.1)
    assert "99%" in describe_progress(almost)
    assert [format_eta(s) for s in (None, 5, 61, 3600, 3660 * 2, 86400 * 3)] == [
        "",
        "less than a minute left",
        "about 1 min left",
        "about 1 h left",
        "about 2 h 2 min left",
        "about 3 days left",
    ]


# -- cancel, restart, verify ----------------------------------------------------------------------


@pytest.mark.parametrize("delete", [True, False], ids=["delete-partial", "keep-partial"])
def test_cancel_asks_whether_to_delete_partial_files(
    qtbot, hub: FakeHub, tmp_path: Path, open_dialog, delete: bool
) -> None:  # type: ignore[no-untyped-def]
    [data] = publish_entry(hub, SMALL, tmp_path)
    hub.rate_bps = 400_000
    controller = make_controller(hub)
    d = open_dialog(controller)
    panel = card(d).panel
    click(qtbot, panel.download_button)
    qtbot.waitUntil(lambda: downloaded(controller) > 100_000, timeout=8000)
    seen: list[tuple[str, bool | None]] = []
    answer_box("Delete partial files" if delete else "Keep partial files", seen)
    click(qtbot, panel.cancel_button)
    wait_state(qtbot, controller, State.IDLE, timeout=3000)
    assert "Cancel the download of gpt-oss-20b?" in seen[0][0]
    assert panel.download_button.isVisible() and not panel.bar.isVisible()
    assert controller.manager.pending() == []
    partial = list(controller.manager.repo_dir(SMALL.repo_id).glob("blobs/*.incomplete"))
    if delete:
        assert partial == []
        return
    assert len(partial) == 1 and partial[0].stat().st_size > 100_000
    hub.rate_bps = None
    click(qtbot, panel.download_button)  # a new download continues from the kept bytes
    wait_state(qtbot, controller, State.DONE)
    assert gets(hub)[-1] is not None
    result = controller.status(REQUEST).result
    assert result is not None and result.path is not None and result.path.read_bytes() == data


def test_dont_cancel_keeps_downloading(
    qtbot, hub: FakeHub, tmp_path: Path, open_dialog, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    publish_entry(hub, SMALL, tmp_path)
    hub.rate_bps = 400_000
    controller = make_controller(hub)
    d = open_dialog(controller)
    monkeypatch.setattr(downloads, "ask_cancel", lambda parent, name: None)
    click(qtbot, card(d).panel.download_button)
    qtbot.waitUntil(lambda: downloaded(controller) > 50_000, timeout=8000)
    click(qtbot, card(d).panel.cancel_button)
    assert controller.status(REQUEST).state == State.RUNNING
    hub.rate_bps = None
    wait_state(qtbot, controller, State.DONE)


def test_app_restart_mid_download_is_offered_and_resumed_by_a_new_dialog(
    qtbot, hub: FakeHub, tmp_path: Path, open_dialog
) -> None:  # type: ignore[no-untyped-def]
    [data] = publish_entry(hub, SMALL, tmp_path)
    hub.rate_bps = 400_000
    first = make_controller(hub)
    d1 = open_dialog(first)
    click(qtbot, card(d1).panel.download_button)
    qtbot.waitUntil(lambda: downloaded(first) > 150_000, timeout=8000)
    first.shutdown()  # the app quits mid-download
    d1.close()
    kept = next(first.manager.repo_dir(SMALL.repo_id).glob("blobs/*.incomplete")).stat().st_size
    assert 150_000 <= kept < len(data)
    # Even a hard kill leaves the state as "running": the next start must offer it all the same.
    [state_file] = first.manager.state_dir.glob("*.json")
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "status": "running"}))

    hub.rate_bps = None
    second = make_controller(hub)  # a new process: it learns about the download from disk only
    d2 = open_dialog(second)
    panel = card(d2).panel
    assert panel.resume_button.isVisible() and panel.bar.isVisible()
    assert panel.status_line.text().startswith("Unfinished download from an earlier session"), panel.status_line.text()
    assert f"{kept / 1024:.1f} KiB of" in panel.status_line.text()
    click(qtbot, panel.resume_button)
    wait_state(qtbot, second, State.DONE)
    assert gets(hub)[-1] == f"bytes={kept}-"
    result = second.status(REQUEST).result
    assert result is not None and result.path is not None and result.path.read_bytes() == data
    assert result.bytes_transferred == len(data) - kept


def test_verify_then_damage_then_download_again(qtbot, hub: FakeHub, tmp_path: Path, open_dialog) -> None:  # type: ignore[no-untyped-def]
    [data] = publish_entry(hub, SMALL, tmp_path)
    controller = make_controller(hub)
    d = open_dialog(controller)
    panel = card(d).panel
    click(qtbot, panel.download_button)
    wait_state(qtbot, controller, State.DONE)
    qtbot.waitUntil(lambda: bool(panel.local_paths), timeout=5000)
    click(qtbot, panel.verify_button)
    wait_state(qtbot, controller, State.VERIFIED)
    assert panel.status_line.text().startswith("Verified"), panel.status_line.text()
    blob = panel.local_paths[0].resolve()
    raw = bytearray(blob.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    blob.write_bytes(bytes(raw))
    before = len(gets(hub))
    click(qtbot, panel.verify_button)
    wait_state(qtbot, controller, State.FAILED)
    headline, message, action = error_shown(d)
    assert headline == "The file was damaged" and action == "Download again" and "deleted" in message
    assert len(gets(hub)) == before  # verifying never touches the network
    qtbot.waitUntil(lambda: not d.rows, timeout=5000)  # the damaged file is gone from the list
    click(qtbot, panel.error_box.buttons[0])
    wait_state(qtbot, controller, State.DONE)
    assert panel.local_paths == () or panel.local_paths[0].read_bytes() == data
    result = controller.status(REQUEST).result
    assert result is not None and result.path is not None and result.path.read_bytes() == data


def test_split_model_downloads_as_one(qtbot, hub: FakeHub, tmp_path: Path, open_dialog) -> None:  # type: ignore[no-untyped-def]
    blobs = publish_entry(hub, BIG, tmp_path)
    hub.rate_bps = 1_500_000
    controller = make_controller(hub)
    d = open_dialog(controller, hardware=profile(128, (("NVIDIA RTX 6000 Ada", 48),)))
    big = card(d, "gpt-oss-120b")
    assert big.recommended.isVisible() and not card(d).recommended.isVisible()
    assert big.fit.text().startswith("✓")
    lines: list[str] = []
    request = BIG.download_request()
    controller.changed.connect(lambda r: lines.append(big.panel.status_line.text()) if r == request else None)
    click(qtbot, big.panel.download_button)
    qtbot.waitUntil(lambda: controller.status(request).state == State.DONE, timeout=15000)
    assert any("part 2 of 3" in line for line in lines) and any("part 3 of 3" in line for line in lines)
    qtbot.waitUntil(lambda: settled(d) and len(d.rows) == 1, timeout=5000)
    model = d.rows[0].model
    assert model.display_name == "gpt-oss-120b" and [p.read_bytes() for p in model.parts] == blobs
    assert model.size_bytes == sum(len(b) for b in blobs) and model.downloaded_by_app


# -- local models ---------------------------------------------------------------------------------


def test_import_by_file_dialog(
    qtbot, hub: FakeHub, tiny_model_path: Path, open_dialog, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    d = open_dialog(make_controller(hub))
    monkeypatch.setattr(QFileDialog, "getOpenFileNames", staticmethod(lambda *a, **k: ([str(tiny_model_path)], "")))
    click(qtbot, d.import_button)
    qtbot.waitUntil(lambda: settled(d) and len(d.rows) == 1, timeout=5000)
    row = d.rows[0]
    assert row.model.path == tiny_model_path and row.model.source == Source.IMPORTED
    assert row.source.text() == "Imported" and d.done_notice.isVisible() and "Imported" in d.done_notice.text.text()
    assert d.done_notice.kind == "success" and not d.notice.isVisible()  # good news is not shown as an error
    assert hub.requests() == []


def drop(d: ModelManagerDialog, paths: list[Path]) -> tuple[bool, bool]:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    enter = QDragEnterEvent(
        QPointF(d.rect().center()),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    QApplication.sendEvent(d, enter)
    overlay = d.overlay.isVisible()
    event = QDropEvent(
        QPointF(d.rect().center()),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    QApplication.sendEvent(d, event)
    return enter.isAccepted() and overlay, event.isAccepted()


def test_import_by_drop_and_refused_files_show_their_reason(
    qtbot, hub: FakeHub, tiny_model_path: Path, tmp_path: Path, open_dialog
) -> None:  # type: ignore[no-untyped-def]
    d = open_dialog(make_controller(hub))
    llama = write_llama_gguf(tmp_path / "llama-3.gguf")
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model")
    entered, dropped = drop(d, [tiny_model_path, llama, notes])
    assert entered and dropped and not d.overlay.isVisible()
    qtbot.waitUntil(lambda: settled(d) and len(d.rows) == 1 and len(d.refused_list.items) == 2, timeout=5000)
    assert d.rows[0].model.path == tiny_model_path
    text = d.notice.text.text()
    assert "2 files not imported" in text and "'llama'" in text and "gpt-oss" in text and "not a .gguf file" in text
    assert "Imported" not in text and d.notice.kind == "error"  # the success is out of the red box …
    assert d.done_notice.isVisible() and d.done_notice.text.text() == "Imported tiny-gpt-oss."  # … in its own
    assert d.refused_list.isVisible() and d.refused_list.toggle.text() == "2 files not offered"
    d.refused_list.toggle.click()
    reasons = [w.text() for w in d.refused_list.body.findChildren(model_manager.QLabel, "RefusedReason")]
    assert any("llama" in r for r in reasons) and any("notes.txt" in r for r in reasons)


def test_discovered_files_that_are_refused_are_listed_with_the_reason(
    qtbot, hub: FakeHub, tiny_model_path: Path, tmp_path: Path, open_dialog
) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "lmstudio"
    folder.mkdir()
    shutil.copy(tiny_model_path, folder / "gpt-oss-20b-MXFP4.gguf")
    (folder / "half.gguf").write_bytes(tiny_model_path.read_bytes()[:-4000])
    library = ModelLibrary(search_dirs=[(Source.LMSTUDIO, folder)])
    d = open_dialog(make_controller(hub, library=library))
    assert [r.model.source for r in d.rows] == [Source.LMSTUDIO] and d.rows[0].source.text() == "LM Studio"
    [refused] = d.refused_list.items
    assert refused.path.name == "half.gguf" and "half.gguf" in refused.reason
    assert "incomplete" in refused.reason or "truncated" in refused.reason


def test_remove_asks_first_and_deletes_only_harmonicas_downloads(
    qtbot, hub: FakeHub, tmp_path: Path, tiny_model_path: Path, open_dialog, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    publish_entry(hub, SMALL, tmp_path)
    own = tmp_path / "mine.gguf"
    shutil.copy(tiny_model_path, own)
    controller = make_controller(hub)
    controller.library.import_file(own)
    d = open_dialog(controller)
    click(qtbot, card(d).panel.download_button)
    wait_state(qtbot, controller, State.DONE)
    qtbot.waitUntil(lambda: settled(d) and len(d.rows) == 2, timeout=5000)
    rows = {r.model.source: r for r in d.rows}
    seen: list[tuple[str, bool | None]] = []
    # "Keep": nothing happens.
    answer_box("Keep", seen)
    click(qtbot, rows[Source.IMPORTED].remove_button)
    assert seen and len(d.rows) == 2 and own.exists()
    # The user's own file: only forgotten, never deleted, and no option to delete it.
    answer_box("Remove", seen)
    click(qtbot, rows[Source.IMPORTED].remove_button)
    qtbot.waitUntil(lambda: settled(d) and len(d.rows) == 1, timeout=5000)
    assert own.exists() and seen[-1][1] is None and "stays where it is" in seen[-1][0]
    # Harmonica's download: the box offers deletion (ticked by default) and deletes it.
    downloaded_path = d.rows[0].model.path
    blob = downloaded_path.resolve()
    answer_box("Remove", seen)
    click(qtbot, d.rows[0].remove_button)
    qtbot.waitUntil(lambda: settled(d) and not d.rows, timeout=5000)
    assert seen[-1][1] is True
    assert not blob.exists() and not downloaded_path.exists()
    assert "Removed and deleted gpt-oss-20b" in d.done_notice.text.text()
    assert card(d).panel.download_button.isVisible()


def test_removing_a_download_but_keeping_the_file(qtbot, hub: FakeHub, tmp_path: Path, open_dialog) -> None:  # type: ignore[no-untyped-def]
    publish_entry(hub, SMALL, tmp_path)
    controller = make_controller(hub)
    d = open_dialog(controller)
    click(qtbot, card(d).panel.download_button)
    wait_state(qtbot, controller, State.DONE)
    qtbot.waitUntil(lambda: settled(d) and len(d.rows) == 1, timeout=5000)
    path = d.rows[0].model.path
    answer_box("Remove", tick=False)
    click(qtbot, d.rows[0].remove_button)
    qtbot.waitUntil(lambda: settled(d) and not d.rows, timeout=5000)
    assert path.exists() and d.done_notice.text.text() == "Removed gpt-oss-20b."
    # Downloading it again finds it in the cache at once and shows it again.
    before = len(gets(hub))
    click(qtbot, card(d).panel.download_button)
    wait_state(qtbot, controller, State.DONE)
    qtbot.waitUntil(lambda: settled(d) and len(d.rows) == 1, timeout=5000)
    assert len(gets(hub)) == before


def test_in_use_model_is_marked(qtbot, hub: FakeHub, tiny_model_path: Path, open_dialog) -> None:  # type: ignore[no-untyped-def]
    controller = make_controller(hub)
    controller.library.import_file(tiny_model_path)
    d = open_dialog(controller, current_model=tiny_model_path)
    chips = [w.text() for w in d.rows[0].findChildren(model_manager.QLabel, "Chip")]
    assert "In use" in chips


def test_a_shared_controller_outlives_the_dialog(qtbot, hub: FakeHub, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The lead's controller keeps downloading after the dialog is closed and deleted."""
    from PySide6.QtCore import QCoreApplication, QEvent

    [data] = publish_entry(hub, SMALL, tmp_path)
    hub.rate_bps = 400_000
    controller = make_controller(hub)
    d = ModelManagerDialog(controller, hardware=profile(32))
    d.show()
    qtbot.waitUntil(lambda: d.discovery is not None, timeout=5000)
    click(qtbot, card(d).panel.download_button)
    qtbot.waitUntil(lambda: downloaded(controller) > 50_000, timeout=8000)
    d.close()
    d.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    hub.rate_bps = None
    try:
        wait_state(qtbot, controller, State.DONE)  # no slot of the deleted dialog may run (pytest-qt fails on it)
        result = controller.status(REQUEST).result
        assert result is not None and result.path is not None and result.path.read_bytes() == data
        again = ModelManagerDialog(controller, hardware=profile(32))  # reopened: shows the finished download
        again.show()
        qtbot.addWidget(again)
        qtbot.waitUntil(lambda: settled(again) and len(again.rows) == 1, timeout=5000)
        assert card(again).panel.use_button.isVisible()
    finally:
        controller.shutdown()
        workers.stop_all()


def test_retry_now_ends_a_long_wait_after_a_dropped_connection(
    qtbot, hub: FakeHub, tmp_path: Path, open_dialog
) -> None:  # type: ignore[no-untyped-def]
    [data] = publish_entry(hub, SMALL, tmp_path)
    hub.inject(Fault("drop", after_bytes=300_001))
    controller = make_controller(hub, backoff_base=60.0, backoff_max=60.0)  # a minute's wait before retrying
    d = open_dialog(controller)
    panel = card(d).panel
    click(qtbot, panel.download_button)
    qtbot.waitUntil(lambda: panel.retry_button.isVisible(), timeout=10_000)
    assert "trying again in" in panel.status_line.text() and not panel.download_button.isVisible()
    click(qtbot, panel.retry_button)
    wait_state(qtbot, controller, State.DONE, timeout=10_000)  # long before the minute is over
    assert gets(hub) == [None, "bytes=300001-"] and not panel.retry_button.isVisible()
    result = controller.status(REQUEST).result
    assert result is not None and result.path is not None and result.path.read_bytes() == data


def test_the_model_in_use_offers_no_use_this_model(
    qtbot, hub: FakeHub, tiny_model_path: Path, open_dialog, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    d = open_dialog(make_controller(hub))
    d.import_files([tiny_model_path])
    qtbot.waitUntil(lambda: settled(d) and len(d.rows) == 1, timeout=5000)
    assert d.rows[0].use_button.isVisible()  # not loaded: it can be used
    d.set_current_model(tiny_model_path)
    qtbot.waitUntil(lambda: len(d.rows) == 1 and not d.rows[0].use_button.isVisible(), timeout=5000)
    chips = [c.text() for c in d.rows[0].findChildren(QLabel, "Chip")]
    assert "In use" in chips


def test_a_download_that_cannot_run_here_is_not_the_primary_button(qtbot, hub: FakeHub, open_dialog) -> None:  # type: ignore[no-untyped-def]
    d = open_dialog(make_controller(hub), hardware=profile(16))
    small, big = d.cards["gpt-oss-20b"].panel, d.cards["gpt-oss-120b"].panel
    qtbot.waitUntil(lambda: big.download_button.objectName() == "SecondaryButton", timeout=5000)
    assert small.download_button.objectName() == "PrimaryButton"
