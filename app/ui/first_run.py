"""First-run setup: what this computer has, the recommended gpt-oss model, one Download button or a local file."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app.core.download import DownloadManager, DownloadRequest, Phase, human_bytes
from app.core.hardware import HardwareProfile
from app.core.models import CatalogEntry, LocalModel, ModelLibrary, RefusedFile, assess_fit, catalog, recommend
from app.core.plain_errors import describe_error, describe_os_error, plain_text
from app.core.speed import SpeedEstimate, expected_speed
from app.core.units import exact_bytes, format_rate
from app.ui import style
from app.ui.downloads import DownloadController, DownloadPanel, State, format_eta
from app.ui.model_manager import import_job
from app.ui.notice import NoticeBar
from app.ui.workers import GeneratorWorker, start_worker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MachineFacts:
    """What the page shows about this computer (found off the UI thread)."""

    profile: HardwareProfile | None
    disk_free: int | None
    cache_dir: Path
    local: dict[str, tuple[Path, ...]]  # catalog id → its files, for entries already in the HF cache
    speeds: dict[str, SpeedEstimate | None] = field(default_factory=dict)  # catalog id → what to expect here


def machine_job(
    manager: DownloadManager, library: ModelLibrary, hardware: HardwareProfile | None, *, cancel: threading.Event
) -> Iterator[MachineFacts]:
    """Probe the hardware (unless given), the free disk space and the catalog models already cached."""
    local: dict[str, tuple[Path, ...]] = {}
    for entry in catalog():
        found = library.find_catalog_model(entry)
        if found is not None:
            local[entry.id] = found.parts
    try:
        free: int | None = manager.disk_free(manager.cache_dir)
    except OSError:
        free = None
    if hardware is None:
        from app.core.hardware import detect

        hardware = detect()
    speeds = {}
    for entry in catalog():
        try:
            speeds[entry.id] = expected_speed(entry.id, hardware)
        except Exception:
            log.warning("No speed estimate for %s", entry.id, exc_info=True)
            speeds[entry.id] = None
    yield MachineFacts(hardware, free, manager.cache_dir, local, speeds)


def describe_machine(profile: HardwareProfile) -> list[tuple[str, str]]:
    """(label, value) rows: memory and GPUs, in words."""
    rows = [("Memory", f"{human_bytes(profile.ram_total)} RAM" if profile.ram_total else "unknown")]
    if profile.apple is not None:
        rows.append(
            (
                "GPU",
                (
                    f"{profile.apple.chip}, unified memory (the GPU may use about "
                    f"{human_bytes(profile.apple.gpu_budget)})"
                ),
            )
        )
    else:
        gpus = [g for g in profile.gpus if g.vram_total > 0]
        if gpus:
            for g in gpus:
                rows.append(("GPU", f"{g.name}, {human_bytes(g.vram_total)}"))
        else:
            rows.append(("GPU", "none found: the model runs on the CPU"))
    return rows


class FirstRunPage(QWidget):
    """Shown in the main window's place while no model is known.

    Emits `model_ready(path)` when a model can be loaded: the download finished, the user picked
    a valid file, or the recommended model turned out to be on disk already. `controller` is the
    app's shared DownloadController (one is made when omitted); `hardware` skips the probe.
    `manage_requested` asks the main window to open the model manager ("More options").
    """

    model_ready = Signal(str)
    manage_requested = Signal()

    def __init__(
        self,
        controller: DownloadController | None = None,
        library: ModelLibrary | None = None,
        hardware: HardwareProfile | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent, objectName="FirstRunPage")
        self.library = library if library is not None else (controller.library if controller else ModelLibrary())
        self.controller = controller or DownloadController(library=self.library, parent=self)
        self.hardware = hardware
        self.facts: MachineFacts | None = None
        self._workers: list[GeneratorWorker] = []

        _outer, scroll, content = style.scroll_page(self, "FirstRunContent")
        scroll.setObjectName("FirstRunScroll")
        row = QHBoxLayout(content)
        row.addStretch(1)
        column = QWidget()
        column.setMaximumWidth(640)
        column.setMinimumWidth(420)
        row.addWidget(column, 100)
        row.addStretch(1)
        lay = QVBoxLayout(column)
        lay.setContentsMargins(8, 28, 8, 28)
        lay.setSpacing(12)
        lay.addStretch(1)  # with the one at the end: centred in a tall window, scrolls in a small one

        logo = QLabel()
        logo.setPixmap(style.icon("harmonica").pixmap(QSize(64, 64)))
        logo.setAlignment(Qt.AlignmentFlag.AlignCenter)
        lay.addWidget(logo)
        title = QLabel("Welcome to Harmonica", objectName="FirstRunTitle")
        title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        lay.addWidget(title)
        subtitle = QLabel(
            "Private chat with OpenAI's gpt-oss, entirely on this computer. To begin, Harmonica needs the model file.",
            objectName="FirstRunSubtitle",
        )
        subtitle.setWordWrap(True)
        subtitle.setAlignment(Qt.AlignmentFlag.AlignCenter)
        lay.addWidget(subtitle)
        lay.addSpacing(6)

        # This computer
        self.machine_card = QFrame(objectName="ModelCard")
        mc = QVBoxLayout(self.machine_card)
        mc.setContentsMargins(18, 14, 18, 14)
        mc.setSpacing(6)
        mc.addWidget(QLabel("This computer", objectName="CardHeading"))
        self.machine_grid = QGridLayout()
        self.machine_grid.setHorizontalSpacing(16)
        self.machine_grid.setVerticalSpacing(4)
        self.machine_grid.setColumnStretch(1, 1)
        mc.addLayout(self.machine_grid)
        self.machine_status = QLabel("Checking this computer…", objectName="ModelCardText")
        mc.addWidget(self.machine_status)
        lay.addWidget(self.machine_card)

        # The model
        self.model_card = QFrame(objectName="ModelCard")
        mo = QVBoxLayout(self.model_card)
        mo.setContentsMargins(18, 14, 18, 16)
        mo.setSpacing(6)
        head = QHBoxLayout()
        self.model_title = QLabel("", objectName="ModelCardTitle")
        head.addWidget(self.model_title)
        self.recommended_chip = QLabel("Recommended", objectName="Chip")
        self.recommended_chip.setProperty("kind", "accent")
        head.addWidget(self.recommended_chip)
        head.addStretch(1)
        mo.addLayout(head)
        self.model_text = QLabel("", objectName="ModelCardText")
        self.model_text.setWordWrap(True)
        mo.addWidget(self.model_text)
        self.model_facts = QLabel("", objectName="ModelCardFacts")
        mo.addWidget(self.model_facts)
        self.model_fit = QLabel("", objectName="FitLine")
        self.model_fit.setWordWrap(True)
        mo.addWidget(self.model_fit)
        # What to expect: the speed the plan gives on this computer, then the download's measured time.
        self.expect_speed = QLabel("", objectName="ExpectLine")
        self.expect_speed.setWordWrap(True)
        self.expect_speed.hide()
        mo.addWidget(self.expect_speed)
        self.expect_download = QLabel("", objectName="ExpectLine")
        self.expect_download.setWordWrap(True)
        self.expect_download.hide()
        mo.addWidget(self.expect_download)
        self.offline_notice = NoticeBar(closable=False)
        mo.addWidget(self.offline_notice)
        mo.addSpacing(6)
        self.panels = QStackedWidget()
        self.panel_for: dict[str, DownloadPanel] = {}
        for entry in catalog():
            panel = DownloadPanel(
                self.controller,
                entry.download_request(),
                entry.display_name,
                large=True,
                download_label=f"Download {entry.display_name} · {human_bytes(entry.size_bytes)}",
                verify=False,
            )
            panel.use_requested.connect(self._ready)
            self.panel_for[entry.id] = panel
            self.panels.addWidget(panel)
        mo.addWidget(self.panels)
        self.switch = QPushButton("", objectName="LinkButton")
        self.switch.setCursor(Qt.CursorShape.PointingHandCursor)
        self.switch.clicked.connect(self._switch_entry)
        mo.addWidget(self.switch, 0, Qt.AlignmentFlag.AlignHCenter)
        lay.addWidget(self.model_card)

        # A file the user already has
        have = QHBoxLayout()
        have.addStretch(1)
        self.have_button = QPushButton("I already have the file…", objectName="SecondaryButton")
        self.have_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.have_button.clicked.connect(self.choose_file)
        have.addWidget(self.have_button)
        self.manage_button = QPushButton("More options…", objectName="SecondaryButton")
        self.manage_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.manage_button.clicked.connect(self.manage_requested)
        have.addWidget(self.manage_button)
        have.addStretch(1)
        lay.addLayout(have)
        self.file_notice = NoticeBar()
        lay.addWidget(self.file_notice)
        self.footnote = QLabel("", objectName="FooterHint")
        self.footnote.setWordWrap(True)
        self.footnote.setAlignment(Qt.AlignmentFlag.AlignCenter)
        lay.addWidget(self.footnote)
        lay.addStretch(1)

        self.entry: CatalogEntry = recommend(hardware)
        self.recommended: CatalogEntry = self.entry
        self._show_entry(self.entry)
        self._update_offline()
        self.controller.finished.connect(self._download_finished)
        self.controller.changed.connect(self._download_changed)
        w = GeneratorWorker(machine_job, self.controller.manager, self.library, hardware)
        w.yielded.connect(self._set_facts)
        w.errored.connect(self._facts_failed)
        self._start(w)

    # -- public API ----------------------------------------------------------------------------
    def choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Choose a gpt-oss model file", str(Path.home()), "GGUF models (*.gguf);;All files (*)"
        )
        if path:
            self.use_file(path)

    def use_file(self, path: str | Path) -> None:
        """Validate `path` (off the UI thread); a valid model is registered and becomes ready."""
        self.file_notice.hide()
        self.have_button.setEnabled(False)
        w = GeneratorWorker(import_job, self.library, [str(path)])
        w.yielded.connect(self._file_checked)
        w.errored.connect(self._file_check_failed)
        w.finished.connect(self._file_check_done)
        self._start(w)

    @property
    def panel(self) -> DownloadPanel:
        return self.panel_for[self.entry.id]

    # -- internals -----------------------------------------------------------------------------
    def _start(self, worker: GeneratorWorker) -> None:
        self._workers.append(worker)
        worker.finished.connect(lambda: self._workers.remove(worker) if worker in self._workers else None)
        start_worker(worker)

    def _facts_failed(self, exc: BaseException) -> None:
        self.machine_status.setText(f"Could not check this computer: {describe_error(exc)}")

    def _file_check_failed(self, exc: BaseException) -> None:
        words = describe_os_error(exc) if isinstance(exc, OSError) else plain_text(exc)
        self.file_notice.show_message(f"Could not check the file: {words}.")

    def _file_check_done(self) -> None:
        self.have_button.setEnabled(True)

    def _show_entry(self, entry: CatalogEntry) -> None:
        self.entry = entry
        self.model_title.setText(entry.display_name)
        self.recommended_chip.setVisible(entry.id == self.recommended.id)
        self.model_text.setText(entry.description)
        parts = f" in {len(entry.files)} parts" if entry.is_split else ""
        approx = "about " if entry.size_is_approximate else ""
        self.model_facts.setText(
            f"{approx}{human_bytes(entry.size_bytes)} download{parts} · needs about "
            f"{human_bytes(entry.memory_bytes)} of memory"
        )
        self.model_facts.setToolTip(exact_bytes(entry.size_bytes))
        self.panels.setCurrentWidget(self.panel_for[entry.id])
        others = [e for e in catalog() if e.id != entry.id]
        if others:
            other = others[0]
            word = "the smaller" if other.size_bytes < entry.size_bytes else "the larger"
            self.switch.setText(f"Or get {word} {other.display_name} ({human_bytes(other.size_bytes)}) instead")
        self.switch.setVisible(bool(others))
        self.footnote.setText(
            f"The file comes from Hugging Face ({entry.repo_id}) into its standard cache, so other "
            "tools can use it too. Nothing you type ever leaves this computer."
        )
        self._show_fit()

    def _switch_entry(self) -> None:
        other = next((e for e in catalog() if e.id != self.entry.id), None)
        if other is not None:
            self._show_entry(other)

    def _show_fit(self) -> None:
        profile = self.facts.profile if self.facts is not None else self.hardware
        if profile is None:
            self.model_fit.setText("")
            self.model_fit.hide()
            return
        fit = assess_fit(self.entry, profile)
        self.panel.set_caution(fit.summary if fit.fits is False else None)  # ask before a download that cannot run
        speed = self.facts.speeds.get(self.entry.id) if self.facts is not None else None
        self.expect_speed.setVisible(speed is not None)
        self.expect_speed.setToolTip(
            "An estimate from how the model will run here (the load plan) and typical memory speeds; "
            "the status bar shows the real speed after the first answer."
        )
        if speed is not None:
            self.expect_speed.setText(
                f"Expected speed here: {speed.tokens_per_s()} {speed.where}; a few paragraphs with their "
                f"reasoning take {speed.answer_time()}."
            )
        self.model_fit.setText(("✓ " if fit.fits else "⚠ " if fit.fits is False else "") + fit.summary)
        self.model_fit.setProperty("kind", "ok" if fit.fits else "warn" if fit.fits is False else "")
        self.model_fit.style().unpolish(self.model_fit)
        self.model_fit.style().polish(self.model_fit)
        self.model_fit.show()

    def _update_offline(self) -> None:
        offline = self.controller.offline
        if offline:
            self.offline_notice.show_message(
                "Downloads are off: HF_HUB_OFFLINE is set, so Harmonica does not contact "
                "Hugging Face. Use a model file you already have.",
                "info",
            )
        else:
            self.offline_notice.hide()
        # Offline, the local file is the way forward: make it the primary action.
        self.have_button.setObjectName("PrimaryButton" if offline else "SecondaryButton")
        self.have_button.style().unpolish(self.have_button)
        self.have_button.style().polish(self.have_button)

    def _set_facts(self, facts: object) -> None:
        if not isinstance(facts, MachineFacts):
            return
        self.facts = facts
        style.clear_layout(self.machine_grid)
        rows = describe_machine(facts.profile) if facts.profile is not None else []
        if facts.disk_free is not None:
            rows.append(("Disk", f"{human_bytes(facts.disk_free)} free for downloads ({_short(facts.cache_dir)})"))
        for i, (label, value) in enumerate(rows):
            key = QLabel(label, objectName="FactLabel")
            val = QLabel(value, objectName="FactValue")
            val.setWordWrap(True)
            self.machine_grid.addWidget(key, i, 0, Qt.AlignmentFlag.AlignTop)
            self.machine_grid.addWidget(val, i, 1)
        self.machine_status.hide()
        if facts.profile is not None and self.hardware is None:
            best = recommend(facts.profile)
            if best.id != self.recommended.id:
                self.recommended = best
                if not self.controller.status(self.entry.download_request()).busy:
                    self._show_entry(best)
        self.recommended_chip.setVisible(self.entry.id == self.recommended.id)
        for entry_id, parts in facts.local.items():
            self.panel_for[entry_id].set_local_paths(parts)
        if self.entry.id not in facts.local and facts.local:
            self._show_entry(next(e for e in catalog() if e.id in facts.local))
        self._show_fit()

    def _download_changed(self, request: object) -> None:
        """The download's time left at the speed measured now (the status line has the details)."""
        if request != self.entry.download_request():
            return
        st = self.controller.status(self.entry.download_request())
        p = st.progress
        measured = p is not None and st.state == State.RUNNING and p.phase == Phase.DOWNLOADING and p.speed_bps >= 1
        if measured and p is not None:
            left = format_eta(p.eta_s) or "a moment left"
            self.expect_download.setText(f"Download: {left} at the {format_rate(p.speed_bps)} measured now.")
        self.expect_download.setVisible(measured)

    def _download_finished(self, request: object, result: object) -> None:
        path = getattr(result, "path", None)
        mine = isinstance(request, DownloadRequest) and request in {e.download_request() for e in catalog()}
        if mine and path is not None:
            self._ready(str(path))

    def _file_checked(self, item: object) -> None:
        if isinstance(item, LocalModel):
            self._ready(str(item.path))
        elif isinstance(item, RefusedFile):
            self.file_notice.show_message(f"This file cannot be used: {item.reason}", "error")

    def _ready(self, path: str) -> None:
        self.model_ready.emit(path)


def _short(path: Path) -> str:
    home = str(Path.home())
    text = str(path)
    return "~" + text[len(home) :] if text.startswith(home + "/") else text
