"""The Model manager dialog: download catalog models, import and remove local GGUFs, choose the one to use."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QCloseEvent, QDragEnterEvent, QDragLeaveEvent, QDropEvent, QResizeEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.core.download import human_bytes
from app.core.hardware import HardwareProfile
from app.core.models import (
    CatalogEntry,
    Discovery,
    LocalModel,
    ModelError,
    ModelLibrary,
    RefusedFile,
    Source,
    assess_fit,
    catalog,
    recommend,
)
from app.core.plain_errors import describe_error
from app.ui import style
from app.ui.downloads import DownloadController, DownloadPanel, State
from app.ui.notice import NoticeBar
from app.ui.workers import GeneratorWorker, start_worker

_SOURCE_NAMES = {
    Source.HUGGINGFACE: "Hugging Face cache",
    Source.IMPORTED: "Imported",
    Source.LMSTUDIO: "LM Studio",
    Source.LLAMA_CPP: "llama.cpp",
}


# -- background jobs (GeneratorWorker runs them off the UI thread) --------------------------------


def discover_job(library: ModelLibrary, *, cancel: threading.Event) -> Iterator[Discovery]:
    """Scan the registry, the HF cache and LM Studio / llama.cpp folders (local disk only)."""
    yield library.discover()


def import_job(
    library: ModelLibrary, paths: Sequence[str | Path], *, cancel: threading.Event
) -> Iterator[LocalModel | RefusedFile]:
    """Validate and register each file; a refused one comes back with its reason."""
    for path in paths:
        if cancel.is_set():
            return
        try:
            yield library.import_file(path)
        except ModelError as exc:
            yield RefusedFile(Path(path), str(exc))
        except OSError as exc:
            yield RefusedFile(Path(path), f"{Path(path).name} could not be read: {describe_error(exc)}.")


def detect_job(*, cancel: threading.Event) -> Iterator[HardwareProfile]:
    """Probe RAM and GPUs (a second or so: NVML, subprocesses, the llama.cpp library)."""
    from app.core.hardware import detect

    yield detect()


# -- questions --------------------------------------------------------------------------------------


def ask_remove(parent: QWidget | None, model: LocalModel) -> bool | None:
    """Confirm removal: None = keep it, False = forget it (file stays), True = also delete the file.

    Deleting is offered only for files Harmonica downloaded: other files belong to the user or
    to another tool (LM Studio, llama.cpp, a shared Hugging Face cache)."""
    box = QMessageBox(
        QMessageBox.Icon.Question, f"Remove {model.display_name}?", f"Remove {model.display_name}?", parent=parent
    )
    box.setObjectName("RemoveModelBox")
    check: QCheckBox | None = None
    if model.downloaded_by_app:
        box.setInformativeText("Harmonica will stop listing it.")
        check = QCheckBox(
            f"Also delete the downloaded file{'s' if len(model.parts) > 1 else ''} "
            f"(frees {human_bytes(model.size_bytes)})"
        )
        check.setChecked(True)
        box.setCheckBox(check)
    else:
        who = {
            Source.IMPORTED: "you imported it",
            Source.LMSTUDIO: "it belongs to LM Studio",
            Source.LLAMA_CPP: "it belongs to llama.cpp",
            Source.HUGGINGFACE: "another program downloaded it",
        }[model.source]
        box.setInformativeText(f"Harmonica will stop listing it. The file stays where it is ({who}):\n{model.path}")
    remove = box.addButton("Remove", QMessageBox.ButtonRole.DestructiveRole)
    keep = box.addButton("Keep", QMessageBox.ButtonRole.RejectRole)
    box.setDefaultButton(keep)
    box.setEscapeButton(keep)
    box.exec()
    if box.clickedButton() is not remove:
        return None
    return bool(check is not None and check.isChecked())


# -- pieces -------------------------------------------------------------------------------------------


def _label(text: str, name: str, *, wrap: bool = False, selectable: bool = False) -> QLabel:
    label = QLabel(text, objectName=name)
    label.setTextFormat(Qt.TextFormat.PlainText)
    label.setWordWrap(wrap)
    if selectable:
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


def _chip(text: str, kind: str = "") -> QLabel:
    chip = _label(text, "Chip")
    chip.setProperty("kind", kind)
    chip.setSizePolicy(QSizePolicy.Policy.Maximum, QSizePolicy.Policy.Fixed)
    return chip


class CatalogCard(QFrame):
    """One downloadable model: what it is, its size and memory, whether it fits, its download."""

    use_requested = Signal(str)

    def __init__(self, entry: CatalogEntry, controller: DownloadController, parent: QWidget | None = None) -> None:
        super().__init__(parent, objectName="ModelCard")
        self.entry = entry
        lay = QVBoxLayout(self)
        lay.setContentsMargins(18, 14, 18, 14)
        lay.setSpacing(6)
        head = QHBoxLayout()
        head.setSpacing(8)
        self.title = _label(entry.display_name, "ModelCardTitle")
        head.addWidget(self.title)
        self.recommended = _chip("Recommended", "accent")
        self.recommended.hide()
        head.addWidget(self.recommended)
        head.addStretch(1)
        self.repo = _label(entry.repo_id, "ModelCardRepo", selectable=True)
        head.addWidget(self.repo)
        lay.addLayout(head)
        self.description = _label(entry.description, "ModelCardText", wrap=True)
        lay.addWidget(self.description)
        parts = f" in {len(entry.files)} parts" if entry.is_split else ""
        approx = "about " if entry.size_is_approximate else ""
        self.facts = _label(
            f"{approx}{human_bytes(entry.size_bytes)} download{parts} · {entry.quant} · needs about "
            f"{human_bytes(entry.memory_bytes)} of memory",
            "ModelCardFacts",
            wrap=True,
        )
        lay.addWidget(self.facts)
        self.fit = _label("Checking this computer…", "FitLine", wrap=True)
        lay.addWidget(self.fit)
        lay.addSpacing(4)
        self.panel = DownloadPanel(controller, entry.download_request(), entry.display_name)
        self.panel.use_requested.connect(self.use_requested)
        lay.addWidget(self.panel)

    def set_profile(self, profile: HardwareProfile | None) -> None:
        if profile is None:
            self.fit.setText("")
            self.fit.hide()
            return
        fit = assess_fit(self.entry, profile)
        self.panel.set_caution(fit.summary if fit.fits is False else None)  # ask before a download that cannot run
        self.fit.setText(("✓ " if fit.fits else "⚠ " if fit.fits is False else "") + fit.summary)
        self.fit.setProperty("kind", "ok" if fit.fits else "warn" if fit.fits is False else "")
        self.fit.style().unpolish(self.fit)
        self.fit.style().polish(self.fit)
        self.fit.show()


class LocalModelRow(QFrame):
    """A model file on this computer: name, where it came from, size; Use and Remove."""

    use_requested = Signal(str)
    remove_requested = Signal(object)  # LocalModel

    def __init__(self, model: LocalModel, parent: QWidget | None = None, *, in_use: bool = False) -> None:
        super().__init__(parent, objectName="LocalModelRow")
        self.model = model
        lay = QHBoxLayout(self)
        lay.setContentsMargins(14, 10, 12, 10)
        lay.setSpacing(12)
        text = QVBoxLayout()
        text.setSpacing(2)
        top = QHBoxLayout()
        top.setSpacing(8)
        self.name = _label(model.display_name, "LocalModelName")
        top.addWidget(self.name)
        if len(model.parts) > 1:
            top.addWidget(_chip(f"{len(model.parts)} parts"))
        if in_use:
            top.addWidget(_chip("In use", "accent"))
        top.addStretch(1)
        text.addLayout(top)
        facts = QHBoxLayout()
        facts.setSpacing(0)
        source = _SOURCE_NAMES[model.source]
        if model.downloaded_by_app:
            source += " · downloaded by Harmonica"
        self.source = _label(source, "LocalModelFacts")
        self.size_label = _label(human_bytes(model.size_bytes), "LocalModelFacts")
        facts.addWidget(self.source)
        facts.addWidget(_label(" · ", "LocalModelFacts"))
        facts.addWidget(self.size_label)
        facts.addStretch(1)
        text.addLayout(facts)
        self.path = _label(str(model.path), "LocalModelPath", selectable=True)
        self.path.setToolTip(str(model.path))
        self.path.setMinimumWidth(50)
        self.path.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        text.addWidget(self.path)
        lay.addLayout(text, 1)
        self.use_button = QPushButton("Use this model", objectName="PrimaryButton")
        self.use_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.use_button.clicked.connect(lambda: self.use_requested.emit(str(model.path)))
        self.use_button.setVisible(not in_use)  # the model in use has its "In use" chip instead
        lay.addWidget(self.use_button)
        self.remove_button = QPushButton("Remove", objectName="SecondaryButton")
        self.remove_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.remove_button.clicked.connect(lambda: self.remove_requested.emit(model))
        lay.addWidget(self.remove_button)

    def resizeEvent(self, e: QResizeEvent) -> None:
        super().resizeEvent(e)
        # Long paths are elided in the middle so the file name stays visible.
        metrics = self.path.fontMetrics()
        self.path.setText(
            metrics.elidedText(str(self.model.path), Qt.TextElideMode.ElideMiddle, max(50, self.path.width()))
        )


class RefusedList(QWidget):
    """Files that were found or dropped but not offered, each with the reason; folded by default."""

    body: QWidget  # made after the toggle that shows it

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 4, 0, 0)
        lay.setSpacing(4)
        self.toggle = QToolButton(objectName="ReasoningToggle")
        self.toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.toggle.setIconSize(QSize(12, 12))
        self.toggle.clicked.connect(lambda: self.set_expanded(not self.body.isVisible()))
        lay.addWidget(self.toggle)
        self.body = QWidget()
        self.body_layout = QVBoxLayout(self.body)
        self.body_layout.setContentsMargins(18, 0, 0, 0)
        self.body_layout.setSpacing(6)
        lay.addWidget(self.body)
        self.items: list[RefusedFile] = []
        self.set_files([])
        self.set_expanded(False)

    def set_files(self, files: Sequence[RefusedFile]) -> None:
        self.items = list(files)
        style.clear_layout(self.body_layout)
        for f in self.items:
            row = QVBoxLayout()
            w = QWidget(objectName="RefusedRow")
            wl = QVBoxLayout(w)
            wl.setContentsMargins(0, 0, 0, 0)
            wl.setSpacing(0)
            name = _label(f.path.name or str(f.path), "RefusedName")
            name.setToolTip(str(f.path))
            wl.addWidget(name)
            wl.addWidget(_label(f.reason, "RefusedReason", wrap=True, selectable=True))
            row.addWidget(w)
            self.body_layout.addWidget(w)
        n = len(self.items)
        self.toggle.setText(f"{n} file{'s' if n != 1 else ''} not offered")
        self.setVisible(n > 0)

    def set_expanded(self, expanded: bool) -> None:
        self.body.setVisible(expanded)
        self.toggle.setIcon(style.icon("chevron-down" if expanded else "chevron-right"))


class DropOverlay(QLabel):
    def __init__(self, parent: QWidget) -> None:
        super().__init__("Drop .gguf files to import them", parent, objectName="DropOverlay")
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.hide()


# -- the dialog -------------------------------------------------------------------------------------


class ModelManagerDialog(QDialog):
    """Download gpt-oss, see and manage the model files on this computer, choose one.

    `controller` runs the downloads; pass the app's shared one so downloads go on when the
    dialog closes (a dialog that made its own pauses them on close). `hardware` skips the probe
    (tests); without it the machine is probed off the UI thread. Emits `model_chosen(path)`
    and closes when the user picks a model.
    """

    model_chosen = Signal(str)
    models_changed = Signal()  # discovery finished with a new list (after import, remove, download)

    def __init__(
        self,
        controller: DownloadController | None = None,
        library: ModelLibrary | None = None,
        hardware: HardwareProfile | None = None,
        parent: QWidget | None = None,
        *,
        current_model: str | Path | None = None,
    ) -> None:
        super().__init__(parent)
        self._owns_controller = controller is None
        self.library = library if library is not None else (controller.library if controller else ModelLibrary())
        self.controller = controller or DownloadController(library=self.library, parent=self)
        self.hardware = hardware
        self.discovery: Discovery | None = None
        self.session_refused: list[RefusedFile] = []
        self._current = str(Path(current_model).resolve()) if current_model else None
        self._discover_worker: GeneratorWorker | None = None
        self._rediscover = False
        self._workers: list[GeneratorWorker] = []

        self.setWindowTitle("Models — Harmonica")
        self.setObjectName("ModelManager")
        self.setAcceptDrops(True)
        self.resize(860, 780)
        self.setMinimumSize(480, 360)  # it scrolls: a small screen (or 2× scale) still fits it

        outer, scroll, content = style.scroll_page(self, "ManagerContent")
        scroll.setObjectName("ManagerScroll")
        lay = QVBoxLayout(content)
        lay.setContentsMargins(28, 22, 28, 18)
        lay.setSpacing(10)

        lay.addWidget(_label("Models", "DialogTitle"))
        lay.addWidget(
            _label(
                "Download gpt-oss from Hugging Face, or use a GGUF file you already have. "
                "Everything runs on this computer.",
                "DialogSubtitle",
                wrap=True,
            )
        )
        self.offline_notice = NoticeBar(closable=False)
        lay.addWidget(self.offline_notice)
        self.notice = NoticeBar()
        lay.addWidget(self.notice)
        self.done_notice = NoticeBar()  # what worked, never inside the error box beside what did not
        lay.addWidget(self.done_notice)

        lay.addSpacing(6)
        lay.addWidget(_label("Download", "SectionTitle"))
        self.cards: dict[str, CatalogCard] = {}
        for entry in catalog():
            card = CatalogCard(entry, self.controller)
            card.use_requested.connect(self._choose)
            self.cards[entry.id] = card
            lay.addWidget(card)

        lay.addSpacing(10)
        local_head = QHBoxLayout()
        local_head.addWidget(_label("On this computer", "SectionTitle"))
        local_head.addStretch(1)
        self.import_button = QPushButton("Import GGUF…", objectName="SecondaryButton")
        self.import_button.setIcon(style.icon("open"))
        self.import_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.import_button.clicked.connect(self.choose_files)
        local_head.addWidget(self.import_button)
        lay.addLayout(local_head)
        self.local_hint = _label("Looking for models on this computer…", "EmptyHint", wrap=True)
        lay.addWidget(self.local_hint)
        self.local_box = QVBoxLayout()
        self.local_box.setSpacing(8)
        lay.addLayout(self.local_box)
        self.rows: list[LocalModelRow] = []
        self.refused_list = RefusedList()
        lay.addWidget(self.refused_list)
        self.extra_box = QVBoxLayout()  # other sections (Panels adds the models on your connections)
        lay.addLayout(self.extra_box)
        lay.addStretch(1)

        footer = QFrame(objectName="DialogFooter")
        fl = QHBoxLayout(footer)
        fl.setContentsMargins(28, 10, 20, 12)
        fl.addWidget(
            _label(
                "Drop .gguf files on this window to import them. Models from the Hugging Face cache, "
                "LM Studio and llama.cpp are found by themselves.",
                "FooterHint",
                wrap=True,
            ),
            1,
        )
        self.close_button = QPushButton("Close", objectName="SecondaryButton")
        self.close_button.clicked.connect(self.close)
        fl.addWidget(self.close_button)
        outer.addWidget(footer)
        self.overlay = DropOverlay(self)

        # Bound methods, not lambdas: Qt drops these connections when the dialog is deleted,
        # while a shared controller lives on and keeps emitting.
        self.controller.finished.connect(self._download_ended)
        self.controller.failed.connect(self._download_ended)  # a damaged file was deleted
        self._update_offline()
        if self.hardware is not None:
            self._set_profile(self.hardware)
        else:
            self._run(GeneratorWorker(detect_job), self._set_profile)
        self.refresh_models()

    # -- public API ----------------------------------------------------------------------------
    def set_current_model(self, path: str | Path | None) -> None:
        """Mark the model the main window has loaded ("In use")."""
        self._current = str(Path(path).resolve()) if path else None
        if self.discovery is not None:
            self._show_models(self.discovery)

    @property
    def scanning(self) -> bool:
        """A scan for local models is running (or about to run again)."""
        return self._discover_worker is not None or self._rediscover

    def refresh_models(self) -> None:
        """Scan again (off the UI thread); the list updates when the scan ends."""
        if self._discover_worker is not None:
            self._rediscover = True
            return
        w = GeneratorWorker(discover_job, self.library)
        self._discover_worker = w
        w.yielded.connect(self._show_models)
        w.errored.connect(self._work_failed)
        w.finished.connect(self._discover_finished)
        start_worker(w)

    def import_files(self, paths: Sequence[str | Path]) -> None:
        """Validate and register files (off the UI thread); refusals are shown with their reason."""
        if not paths:
            return
        self.notice.hide()
        self.done_notice.hide()
        imported: list[str] = []
        refused: list[RefusedFile] = []

        def on_item(item: object) -> None:
            if isinstance(item, LocalModel):
                imported.append(item.display_name)
            elif isinstance(item, RefusedFile):
                refused.append(item)

        def on_done() -> None:
            self.session_refused = [
                r for r in self.session_refused if r.path not in {x.path for x in refused}
            ] + refused
            if refused:
                reasons = "\n".join(r.reason for r in refused)
                head = "Not imported: " if len(refused) == 1 else f"{len(refused)} files not imported:\n"
                self.notice.show_message(head + reasons, "error")
            if imported:
                self.done_notice.show_message(f"Imported {', '.join(imported)}.", "success", timeout_ms=10_000)
            self.refresh_models()

        self._run(GeneratorWorker(import_job, self.library, [str(p) for p in paths]), on_item, on_done)

    def choose_files(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(
            self, "Import gpt-oss models", str(Path.home()), "GGUF models (*.gguf);;All files (*)"
        )
        self.import_files(paths)

    # -- internals -----------------------------------------------------------------------------
    def _run(
        self, worker: GeneratorWorker, on_item: Callable[[object], None], on_done: Callable[[], None] | None = None
    ) -> None:
        self._workers.append(worker)
        worker.yielded.connect(on_item)
        worker.errored.connect(self._work_failed)
        if on_done is not None:
            worker.finished.connect(on_done)
        worker.finished.connect(lambda: self._workers.remove(worker) if worker in self._workers else None)
        start_worker(worker)

    def _work_failed(self, exc: BaseException) -> None:
        self.notice.show_message(f"Something went wrong: {describe_error(exc)}", exc=exc)

    def _download_ended(self, request: object, outcome: object) -> None:
        self.refresh_models()

    def _discover_finished(self) -> None:
        self._discover_worker = None
        if self._rediscover:
            self._rediscover = False
            self.refresh_models()

    def _set_profile(self, profile: object) -> None:
        if not isinstance(profile, HardwareProfile):
            return
        self.hardware = profile
        best = recommend(profile)
        for entry_id, card in self.cards.items():
            card.set_profile(profile)
            card.recommended.setVisible(entry_id == best.id)

    def _update_offline(self) -> None:
        if self.controller.offline:
            self.offline_notice.show_message(
                "Downloads are off: HF_HUB_OFFLINE is set, so Harmonica does not contact "
                "Hugging Face. Import a file you already have, or unset HF_HUB_OFFLINE "
                "and restart Harmonica to download.",
                "info",
            )
        else:
            self.offline_notice.hide()

    def _show_models(self, discovery: object) -> None:
        if not isinstance(discovery, Discovery):
            return
        self.discovery = discovery
        for row in self.rows:
            row.setParent(None)
            row.deleteLater()
        self.rows = []
        for model in discovery.models:
            row = LocalModelRow(model, in_use=self._current is not None and model.key == self._current)
            row.use_requested.connect(self._choose)
            row.remove_requested.connect(self._remove)
            self.local_box.addWidget(row)
            self.rows.append(row)
        if discovery.models:
            self.local_hint.hide()
        else:
            self.local_hint.setText(
                "No gpt-oss models on this computer yet. Download one above, or import a .gguf "
                "file (Import GGUF…, or drop it here)."
            )
            self.local_hint.show()
        known = {r.path for r in discovery.refused}
        self.refused_list.set_files(list(discovery.refused) + [r for r in self.session_refused if r.path not in known])
        for card in self.cards.values():
            entry = card.entry
            match = next(
                (
                    m
                    for m in discovery.models
                    if m.source == Source.HUGGINGFACE
                    and m.repo_id == entry.repo_id
                    and m.path.name == entry.primary_file
                ),
                None,
            )
            request = entry.download_request()
            if match is None and self.controller.status(request).state in (State.DONE, State.VERIFIED):
                if self._rediscover:
                    continue  # finished during this scan; the scan that sees it is on its way
                self.controller.forget(request)  # removed (or deleted outside Harmonica)
            card.panel.set_local_paths(match.parts if match is not None else ())
            card.panel.set_in_use(match is not None and self._current is not None and match.key == self._current)
        self.models_changed.emit()

    def _choose(self, path: str) -> None:
        self.model_chosen.emit(path)
        self.accept()

    def _remove(self, model: object) -> None:
        if not isinstance(model, LocalModel):
            return
        choice = ask_remove(self, model)
        if choice is None:
            return
        try:
            self.library.remove(model, delete_files=choice)
        except (ModelError, OSError) as exc:
            self.notice.show_message(str(exc))
            return
        done = "Removed and deleted" if choice else "Removed"
        self.done_notice.show_message(f"{done} {model.display_name}.", "success", timeout_ms=10_000)
        self.refresh_models()

    # -- drag and drop -------------------------------------------------------------------------
    def dragEnterEvent(self, e: QDragEnterEvent) -> None:
        urls = e.mimeData().urls() if e.mimeData().hasUrls() else []
        if any(u.isLocalFile() for u in urls):
            e.acceptProposedAction()
            self.overlay.setGeometry(self.rect().adjusted(12, 12, -12, -12))
            self.overlay.raise_()
            self.overlay.show()
        else:
            e.ignore()

    def dragLeaveEvent(self, e: QDragLeaveEvent) -> None:
        self.overlay.hide()
        super().dragLeaveEvent(e)

    def dropEvent(self, e: QDropEvent) -> None:
        self.overlay.hide()
        files = [u.toLocalFile() for u in e.mimeData().urls() if u.isLocalFile()]
        if not files:
            e.ignore()
            return
        e.acceptProposedAction()
        self.import_files(files)

    # -- closing -------------------------------------------------------------------------------
    def closeEvent(self, e: QCloseEvent) -> None:
        self._wind_down()
        super().closeEvent(e)

    def done(self, result: int) -> None:
        self._wind_down()
        super().done(result)

    def _wind_down(self) -> None:
        for w in list(self._workers):
            w.quit()
        if self._owns_controller:
            self.controller.shutdown()
