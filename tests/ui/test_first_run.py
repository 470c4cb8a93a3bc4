"""The first-run setup page: machine facts off the UI thread, recommendation, one-button download, local file."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog

from app.core import hardware
from app.core.hardware import HardwareProfile
from app.ui import workers
from app.ui.downloads import DownloadController, State
from app.ui.first_run import FirstRunPage, describe_machine
from tests.fixtures.gguf_factory import write_llama_gguf
from tests.fixtures.hf_server import FakeHub
from tests.ui.download_helpers import BIG, SMALL, gets, make_controller, profile, publish_entry, serve_hub

assert SMALL is not None and BIG is not None


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    yield from serve_hub(monkeypatch)


@pytest.fixture
def open_page(qtbot) -> Iterator[Callable[..., FirstRunPage]]:  # type: ignore[no-untyped-def]
    made: list[FirstRunPage] = []

    def make(controller: DownloadController, hardware: HardwareProfile | None = None) -> FirstRunPage:
        page = FirstRunPage(controller, hardware=hardware if hardware is not None else profile(16))
        qtbot.addWidget(page)
        page.resize(900, 800)
        page.show()
        made.append(page)
        qtbot.waitUntil(lambda: page.facts is not None, timeout=10000)
        return page

    yield make
    for page in made:
        page.controller.shutdown()
    workers.stop_all()


def test_shows_the_machine_and_recommends_20b_on_a_16_gb_laptop(qtbot, hub: FakeHub, open_page) -> None:  # type: ignore[no-untyped-def]
    page = open_page(make_controller(hub))
    assert page.entry.id == "gpt-oss-20b" and page.recommended_chip.isVisible()
    facts = {
        page.machine_grid.itemAtPosition(r, 0).widget().text(): page.machine_grid.itemAtPosition(r, 1).widget().text()
        for r in range(page.machine_grid.rowCount())
        if page.machine_grid.itemAtPosition(r, 0) is not None
    }
    assert (
        facts["Memory"] == "16 GiB RAM" and "runs on the CPU" in facts["GPU"] and "free for downloads" in facts["Disk"]
    )
    assert page.model_fit.text().startswith("✓") and "16 GiB" in page.model_fit.text()
    assert page.panel.download_button.text() == "Download gpt-oss-20b · 11.3 GiB"
    assert page.panel.download_button.isVisible() and page.panel.download_button.isEnabled()
    assert "larger gpt-oss-120b" in page.switch.text()
    page.switch.click()
    assert page.entry.id == "gpt-oss-120b" and not page.recommended_chip.isVisible()
    assert page.model_fit.text().startswith("⚠")
    assert hub.requests() == []


def test_recommends_120b_where_it_fits(qtbot, hub: FakeHub, open_page) -> None:  # type: ignore[no-untyped-def]
    page = open_page(make_controller(hub), profile(128, (("NVIDIA RTX 6000 Ada", 48),)))
    assert page.entry.id == "gpt-oss-120b" and page.recommended_chip.isVisible()
    assert "smaller gpt-oss-20b" in page.switch.text()
    assert describe_machine(profile(128, (("NVIDIA RTX 6000 Ada", 48),)))[1] == ("GPU", "NVIDIA RTX 6000 Ada, 48 GiB")


def test_hardware_is_probed_off_the_ui_thread(qtbot, hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    threads: list[int] = []

    def fake_detect() -> HardwareProfile:
        threads.append(threading.get_ident())
        return profile(128, (("NVIDIA RTX 6000 Ada", 48),))

    monkeypatch.setattr(hardware, "detect", fake_detect)
    page = FirstRunPage(make_controller(hub))
    qtbot.addWidget(page)
    assert page.machine_status.text() == "Checking this computer…"
    qtbot.waitUntil(lambda: page.facts is not None, timeout=5000)
    assert threads and threads[0] != threading.get_ident()
    assert page.entry.id == "gpt-oss-120b"  # the recommendation follows the probe
    page.controller.shutdown()
    workers.stop_all()


def test_one_button_download_with_inline_progress_then_model_ready(
    qtbot, hub: FakeHub, tmp_path: Path, open_page
) -> None:  # type: ignore[no-untyped-def]
    [data] = publish_entry(hub, SMALL, tmp_path)
    hub.rate_bps = 500_000
    controller = make_controller(hub)
    page = open_page(controller)
    request = SMALL.download_request()
    with qtbot.waitSignal(page.model_ready, timeout=15000) as ready:
        qtbot.mouseClick(page.panel.download_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: "KiB/s" in page.panel.status_line.text(), timeout=8000)
        assert page.panel.bar.isVisible() and page.panel.pause_button.isVisible()
        assert not page.panel.download_button.isVisible()
        # The time left at the speed measured now, in words, beside what to expect of the model.
        qtbot.waitUntil(lambda: page.expect_download.isVisible(), timeout=8000)
        assert (
            page.expect_download.text().startswith("Download: ") and "KiB/s measured now" in page.expect_download.text()
        )
    assert Path(ready.args[0]).read_bytes() == data
    assert controller.status(request).state == State.DONE


def test_pause_and_resume_inline(qtbot, hub: FakeHub, tmp_path: Path, open_page) -> None:  # type: ignore[no-untyped-def]
    publish_entry(hub, SMALL, tmp_path)
    hub.rate_bps = 400_000
    controller = make_controller(hub)
    page = open_page(controller)
    request = SMALL.download_request()
    qtbot.mouseClick(page.panel.download_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(
        lambda: (
            (controller.status(request).progress or None) is not None
            and controller.status(request).progress.downloaded > 100_000
        ),
        timeout=8000,
    )
    qtbot.mouseClick(page.panel.pause_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: controller.status(request).state == State.PAUSED, timeout=3000)
    assert page.panel.resume_button.isVisible()
    hub.rate_bps = None
    with qtbot.waitSignal(page.model_ready, timeout=10000):
        qtbot.mouseClick(page.panel.resume_button, Qt.MouseButton.LeftButton)
    assert gets(hub)[-1] is not None


def test_i_already_have_the_file(
    qtbot, hub: FakeHub, tiny_model_path: Path, tmp_path: Path, open_page, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    page = open_page(make_controller(hub))
    llama = write_llama_gguf(tmp_path / "llama.gguf")
    picked = [str(llama)]
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (picked[0], "")))
    ready: list[str] = []
    page.model_ready.connect(ready.append)
    qtbot.mouseClick(page.have_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.file_notice.isVisible(), timeout=5000)
    assert "cannot be used" in page.file_notice.text.text() and "'llama'" in page.file_notice.text.text()
    assert ready == []
    picked[0] = str(tiny_model_path)
    qtbot.waitUntil(page.have_button.isEnabled, timeout=5000)
    with qtbot.waitSignal(page.model_ready, timeout=5000) as got:
        qtbot.mouseClick(page.have_button, Qt.MouseButton.LeftButton)
    assert got.args == [str(tiny_model_path)]
    assert hub.requests() == []


def test_offline_says_downloads_are_off_and_a_local_file_works_without_network(
    qtbot, hub: FakeHub, tiny_model_path: Path, open_page, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access {args}")

    page = open_page(make_controller(hub))
    monkeypatch.setattr(socket.socket, "connect", refuse)
    assert page.offline_notice.isVisible() and "Downloads are off" in page.offline_notice.text.text()
    assert not page.panel.download_button.isEnabled()
    assert page.have_button.objectName() == "PrimaryButton"
    with qtbot.waitSignal(page.model_ready, timeout=5000) as got:
        page.use_file(tiny_model_path)
    assert got.args == [str(tiny_model_path)]


def test_model_already_in_the_cache_is_offered_at_once(qtbot, hub: FakeHub, tmp_path: Path, open_page) -> None:  # type: ignore[no-untyped-def]
    [data] = publish_entry(hub, SMALL, tmp_path)
    make_controller(hub).manager.job(SMALL.download_request()).run()  # e.g. `hf download` earlier
    before = len(hub.requests())
    page = open_page(make_controller(hub))
    assert page.panel.use_button.isVisible() and not page.panel.download_button.isVisible()
    with qtbot.waitSignal(page.model_ready, timeout=3000) as got:
        qtbot.mouseClick(page.panel.use_button, Qt.MouseButton.LeftButton)
    assert Path(got.args[0]).read_bytes() == data
    assert len(hub.requests()) == before


def test_the_page_says_what_speed_to_expect_on_this_computer(qtbot, hub: FakeHub, open_page) -> None:  # type: ignore[no-untyped-def]
    page = open_page(make_controller(hub))  # a 16 GiB laptop, no GPU
    text = page.expect_speed.text()
    assert page.expect_speed.isVisible() and text.startswith("Expected speed here: about ")
    assert "tokens a second on the CPU (8 threads)" in text and "take about" in text
    assert "estimate" in page.expect_speed.toolTip()
    gpu = open_page(make_controller(hub), profile(32, (("NVIDIA GeForce RTX 4090", 24),)))
    assert "on the GPU" in gpu.expect_speed.text()
    page.switch.click()  # gpt-oss-120b does not fit this laptop: no speed to promise
    assert page.entry.id == "gpt-oss-120b" and not page.expect_speed.isVisible()


def test_a_model_that_does_not_fit_asks_before_downloading(
    qtbot, hub: FakeHub, open_page, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    from app.ui import downloads

    page = open_page(make_controller(hub))  # 16 GiB: 120b needs ~60
    assert page.panel.download_button.objectName() == "PrimaryButton"  # 20b fits: the primary action
    page.switch.click()
    button = page.panel.download_button
    assert page.entry.id == "gpt-oss-120b" and button.objectName() == "SecondaryButton"  # not primary
    asked: list[str] = []
    monkeypatch.setattr(downloads, "ask_download_anyway", lambda parent, name, reason: asked.append(reason) or False)
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    assert asked and "Needs about" in asked[0] and hub.requests() == []  # asked first; "no" downloads nothing
    monkeypatch.setattr(downloads, "ask_download_anyway", lambda parent, name, reason: True)
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.controller.status(page.entry.download_request()).state != State.IDLE, timeout=3000)
    page.controller.cancel(page.entry.download_request(), delete_partial=True)
