"""Connections: add a server (vLLM, llama-server, Ollama, LM Studio, Harmonica), add a GPU worker, manage both, and offline mode's LAN ranges."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.core.errors import HarmonicaError
from app.core.remote.dialects import KINDS
from app.core.remote.probe import ServerInfo
from app.core.remote.rpc import UNENCRYPTED_WARNING, WorkerInfo, probe_worker
from app.core.runtime import Runtime
from app.ui.workers import GeneratorWorker, start_worker

GiB = 1 << 30
WARNING_STYLE = "color: #8a5300; background: #fff4d6; border: 1px solid #e8c36a; border-radius: 4px; padding: 6px;"


def _wrapped(text: str, name: str = "DialogHint") -> QLabel:
    label = QLabel(text, objectName=name)
    label.setWordWrap(True)
    label.setTextFormat(Qt.TextFormat.PlainText)
    return label


def _has_selection(lst: QListWidget) -> bool:
    return lst.currentItem() is not None and bool(lst.selectedItems())


def worker_probe_job(host: str, port: int, label: str, *, cancel: Any) -> Any:
    yield probe_worker(host, port, label=label)


class ServerDialog(QDialog):
    """Add server…: address, key, kind; Test lists the server's models; Save (and use one)."""

    use_requested = Signal(str, str)  # connection id, model
    saved = Signal(str)

    def __init__(self, runtime: Runtime, parent: QWidget | None = None) -> None:
        super().__init__(parent, objectName="ServerConnectionDialog")
        self.setWindowTitle("Add a server")
        self.runtime = runtime
        self.info: ServerInfo | None = None
        self._worker: GeneratorWorker | None = None
        lay = QVBoxLayout(self)
        lay.addWidget(
            _wrapped(
                "Run gpt-oss on another computer: a vLLM or llama.cpp server, Ollama, LM Studio or another Harmonica. "
                "Chats keep their reasoning, tools and branches; the header says where a chat runs."
            )
        )
        form = QFormLayout()
        self.name = QLineEdit(placeholderText="studio-pc")
        self.address = QLineEdit(placeholderText="http://studio-pc:8000/v1")
        self.key = QLineEdit(placeholderText="optional")
        self.key.setEchoMode(QLineEdit.EchoMode.Password)
        self.kind = QComboBox()
        self.kind.addItem("Detect automatically", "")
        for kind in KINDS.values():
            self.kind.addItem(kind.label, kind.id)
        form.addRow("Name", self.name)
        form.addRow("Address", self.address)
        form.addRow("Key", self.key)
        form.addRow("Kind", self.kind)
        lay.addLayout(form)
        self.keyring_note = _wrapped(runtime.connections.keys.describe())
        lay.addWidget(self.keyring_note)
        if runtime.offline:
            lay.addWidget(
                _wrapped(
                    "Offline mode is on: only this computer and the LAN ranges allowed under Connections → Manage… "
                    "can be reached."
                )
            )
        row = QHBoxLayout()
        self.test_button = QPushButton("Test connection", objectName="SecondaryButton")
        self.test_button.clicked.connect(self.test)
        row.addWidget(self.test_button)
        self.status = _wrapped("", "DialogStatus")
        row.addWidget(self.status, 1)
        lay.addLayout(row)
        self.models = QComboBox()
        self.models.setEnabled(False)
        form2 = QFormLayout()
        form2.addRow("Model", self.models)
        lay.addLayout(form2)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        cancel = QPushButton("Cancel", objectName="SecondaryButton")
        cancel.clicked.connect(self.reject)
        self.save_button = QPushButton("Save", objectName="SecondaryButton")
        self.save_button.clicked.connect(lambda: self.save(use=False))
        self.use_button = QPushButton("Save and use", objectName="PrimaryButton")
        self.use_button.clicked.connect(lambda: self.save(use=True))
        self.use_button.setEnabled(False)
        for b in (cancel, self.save_button, self.use_button):
            buttons.addWidget(b)
        lay.addLayout(buttons)
        self.resize(560, 380)

    def test(self) -> None:
        if self._worker is not None:
            return
        self.status.setText("Asking the server…")
        self.test_button.setEnabled(False)
        w = GeneratorWorker(self.runtime.probe_job, self.address.text(), self.key.text(), self.kind.currentData())
        w.yielded.connect(self._on_info)
        w.errored.connect(self._on_error)
        w.finished.connect(self._on_done)
        self._worker = w
        start_worker(w)

    def _on_info(self, info: ServerInfo) -> None:
        self.info = info
        self.models.clear()
        for m in info.models:
            ctx = f" · {m.n_ctx:,} tokens" if m.n_ctx else ""
            self.models.addItem(m.id + ctx, m.id)
        gpt = next((i for i, m in enumerate(info.models) if m.gpt_oss), 0)
        self.models.setCurrentIndex(gpt)
        self.models.setEnabled(True)
        self.use_button.setEnabled(True)
        version = f" {info.version}" if info.version else ""
        notes = " ".join(dict.fromkeys(m.note for m in info.models if m.note))
        self.status.setText(f"✓ {info.kind_label}{version} answers with {len(info.models)} model(s). {notes}".strip())
        if not self.name.text().strip():
            from app.core.remote.http import display_host

            self.name.setText(display_host(info.api_url))

    def _on_error(self, exc: BaseException) -> None:
        self.status.setText(str(exc) if isinstance(exc, HarmonicaError) else f"The test failed: {exc}")
        self.use_button.setEnabled(False)

    def _on_done(self) -> None:
        self._worker = None
        self.test_button.setEnabled(True)

    def save(self, *, use: bool) -> None:
        try:
            conn = self.runtime.connections.save_server(
                self.name.text(),
                self.info.api_url if self.info is not None else self.address.text(),
                key=self.key.text(),
                kind=self.info.kind if self.info is not None else (self.kind.currentData() or ""),
                model=str(self.models.currentData() or ""),
            )
        except HarmonicaError as exc:
            self.status.setText(str(exc))
            return
        self.saved.emit(conn.id)
        if use and conn.model:
            self.use_requested.emit(conn.id, conn.model)
        self.accept()


class WorkerDialog(QDialog):
    """Add GPU worker…: host:port of a llama.cpp rpc-server; Test shows its devices and memory."""

    saved = Signal(str)

    def __init__(self, runtime: Runtime, parent: QWidget | None = None) -> None:
        super().__init__(parent, objectName="WorkerDialog")
        self.setWindowTitle("Add a GPU worker")
        self.runtime = runtime
        self._worker: GeneratorWorker | None = None
        lay = QVBoxLayout(self)
        lay.addWidget(
            _wrapped(
                "A GPU worker is another computer running llama.cpp's rpc-server (rpc-server -H 0.0.0.0 -p 50052). "
                "Its GPUs then hold part of a model that does not fit here, such as gpt-oss-120b."
            )
        )
        warning = _wrapped("⚠ " + UNENCRYPTED_WARNING, "RpcWarning")
        warning.setStyleSheet(WARNING_STYLE)
        lay.addWidget(warning)
        form = QFormLayout()
        self.endpoint = QLineEdit(placeholderText="192.168.1.20:50052")
        self.name = QLineEdit(placeholderText="gpu-box")
        form.addRow("Address", self.endpoint)
        form.addRow("Name", self.name)
        lay.addLayout(form)
        row = QHBoxLayout()
        self.test_button = QPushButton("Test", objectName="SecondaryButton")
        self.test_button.clicked.connect(self.test)
        row.addWidget(self.test_button)
        self.status = _wrapped("", "DialogStatus")
        row.addWidget(self.status, 1)
        lay.addLayout(row)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        cancel = QPushButton("Cancel", objectName="SecondaryButton")
        cancel.clicked.connect(self.reject)
        self.save_button = QPushButton("Add worker", objectName="PrimaryButton")
        self.save_button.clicked.connect(self.save)
        buttons.addWidget(cancel)
        buttons.addWidget(self.save_button)
        lay.addLayout(buttons)
        self.resize(560, 320)

    def test(self) -> None:
        from app.core.remote.connections import parse_endpoint

        try:
            host, port = parse_endpoint(self.endpoint.text())
            self.runtime.check_network(f"http://{self.endpoint.text().strip()}", "This GPU worker")
        except HarmonicaError as exc:
            self.status.setText(str(exc))
            return
        if self._worker is not None:
            return
        self.status.setText("Asking the worker…")
        w = GeneratorWorker(worker_probe_job, host, port, self.name.text().strip())
        w.yielded.connect(self._on_info)
        w.errored.connect(lambda exc: self.status.setText(str(exc)))
        w.finished.connect(lambda: setattr(self, "_worker", None))
        self._worker = w
        start_worker(w)

    def _on_info(self, info: WorkerInfo) -> None:
        devices = "; ".join(
            f"device {d.index}: {d.memory_free / GiB:.1f} GiB free of {d.memory_total / GiB:.1f} GiB"
            for d in info.devices
        )
        self.status.setText(f"✓ rpc-server {'.'.join(map(str, info.version))}: {devices or 'no devices'}")

    def save(self) -> None:
        try:
            worker = self.runtime.connections.add_worker(self.endpoint.text(), self.name.text())
        except HarmonicaError as exc:
            self.status.setText(str(exc))
            return
        self.saved.emit(worker.id)
        self.accept()


class ConnectionsDialog(QDialog):
    """Manage…: the saved servers (use, remove), the GPU workers (on/off, remove), offline mode's allowed ranges."""

    use_requested = Signal(str, str)
    add_server_requested = Signal()
    add_worker_requested = Signal()

    def __init__(self, runtime: Runtime, parent: QWidget | None = None) -> None:
        super().__init__(parent, objectName="ConnectionsDialog")
        self.setWindowTitle("Connections")
        self.runtime = runtime
        lay = QVBoxLayout(self)
        self.now = _wrapped("", "DialogStatus")
        lay.addWidget(self.now)
        lay.addWidget(QLabel("Servers", objectName="SectionTitle"))
        self.servers, self.no_servers = self._list(
            lay,
            "ServerList",
            "Saved servers",
            "No servers yet. Add a gpt-oss server on your network (vLLM, llama-server, Ollama, LM Studio or another"
            " Harmonica) to chat with its model here.",
        )
        self.servers.itemDoubleClicked.connect(lambda _item: self._use())
        row = QHBoxLayout()
        self.use_button = QPushButton("Use", objectName="PrimaryButton")
        self.use_button.clicked.connect(self._use)
        add = QPushButton("Add server…", objectName="SecondaryButton")
        add.clicked.connect(self.add_server_requested)
        self.remove_server = QPushButton("Remove", objectName="SecondaryButton")
        self.remove_server.clicked.connect(self._remove_server)
        for b in (self.use_button, add, self.remove_server):
            row.addWidget(b)
        row.addStretch(1)
        lay.addLayout(row)
        lay.addWidget(QLabel("GPU workers (llama.cpp RPC)", objectName="SectionTitle"))
        warning = _wrapped("⚠ " + UNENCRYPTED_WARNING, "RpcWarning")
        warning.setStyleSheet(WARNING_STYLE)
        lay.addWidget(warning)
        self.workers, self.no_workers = self._list(
            lay,
            "WorkerList",
            "GPU workers",
            "No GPU workers. A worker is another computer running llama.cpp's rpc-server; its GPU then holds"
            " part of the model.",
        )
        self.workers.itemChanged.connect(self._worker_toggled)
        row = QHBoxLayout()
        addw = QPushButton("Add GPU worker…", objectName="SecondaryButton")
        addw.clicked.connect(self.add_worker_requested)
        self.remove_worker = QPushButton("Remove", objectName="SecondaryButton")
        self.remove_worker.clicked.connect(self._remove_worker)
        row.addWidget(addw)
        row.addWidget(self.remove_worker)
        row.addStretch(1)
        lay.addLayout(row)
        lay.addWidget(QLabel("Offline mode", objectName="SectionTitle"))
        lay.addWidget(
            _wrapped(
                ("Offline mode is ON. " if runtime.offline else "Offline mode is off. ")
                + "In offline mode connections reach only this computer and these LAN address ranges:"
            )
        )
        row = QHBoxLayout()
        self.ranges = QLineEdit(placeholderText="192.168.1.0/24, 10.0.0.0/8")
        self.ranges.setText(runtime.settings.connections.allowed_ranges)
        lan = QPushButton("Allow private ranges", objectName="SecondaryButton")
        lan.clicked.connect(self._allow_private)
        save = QPushButton("Save", objectName="SecondaryButton")
        save.clicked.connect(self._save_ranges)
        row.addWidget(self.ranges, 1)
        row.addWidget(lan)
        row.addWidget(save)
        lay.addLayout(row)
        self.status = _wrapped("", "DialogStatus")
        lay.addWidget(self.status)
        lay.addWidget(_wrapped(runtime.connections.keys.describe()))
        self.resize(620, 640)
        self.refresh()

    def _list(self, lay: QVBoxLayout, name: str, accessible: str, empty: str) -> tuple[QListWidget, QLabel]:
        """A list, and the sentence shown in its place while it is empty (refresh swaps them)."""
        lst = QListWidget(objectName=name)
        lst.setAccessibleName(accessible)
        lst.itemSelectionChanged.connect(self._update_buttons)
        hint = _wrapped(empty, "EmptyHint")
        lay.addWidget(lst)
        lay.addWidget(hint)
        return lst, hint

    def refresh(self) -> None:
        where = self.runtime.where_it_runs()
        remote = self.runtime.remote
        self.now.setText(
            f"Now: {self.runtime.model_name} {where} ({remote.kind_label}, {remote.mode_label})."
            if remote is not None
            else "Now: chats run on this computer."
        )
        self.servers.clear()
        for s in self.runtime.connections.servers():
            item = QListWidgetItem(f"{s.name} — {s.url}" + (f" — {s.model}" if s.model else ""))
            item.setData(Qt.ItemDataRole.UserRole, s.id)
            self.servers.addItem(item)
        self.workers.blockSignals(True)
        self.workers.clear()
        for w in self.runtime.connections.workers():
            item = QListWidgetItem(f"{w.label}" + (f" — {w.endpoint}" if w.name else ""))
            item.setData(Qt.ItemDataRole.UserRole, w.id)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if w.enabled else Qt.CheckState.Unchecked)
            self.workers.addItem(item)
        self.workers.blockSignals(False)
        for lst, empty in ((self.servers, self.no_servers), (self.workers, self.no_workers)):
            lst.setVisible(lst.count() > 0)
            empty.setVisible(lst.count() == 0)
            # a short list stays short: the dialog's room goes to what has content
            lst.setMaximumHeight(max(48, min(lst.count(), 6) * (lst.sizeHintForRow(0) + 2) + 8))
        self._update_buttons()

    def _update_buttons(self) -> None:
        # Use and Remove act on the selected row: without one they are off rather than answering "choose first".
        has_server = _has_selection(self.servers)
        self.use_button.setEnabled(has_server)
        self.remove_server.setEnabled(has_server)
        self.remove_worker.setEnabled(_has_selection(self.workers))

    def _selected(self, lst: QListWidget) -> str | None:
        item = lst.currentItem()
        return str(item.data(Qt.ItemDataRole.UserRole)) if item is not None else None

    def _use(self) -> None:
        cid = self._selected(self.servers)
        if cid is None:
            self.status.setText("Choose a server first.")
            return
        try:
            conn = self.runtime.connections.server(cid)
        except HarmonicaError as exc:
            self.status.setText(str(exc))
            return
        if not conn.model:
            self.status.setText("This server has no model chosen yet; add it again to pick one.")
            return
        self.use_requested.emit(conn.id, conn.model)

    def _remove_server(self) -> None:
        cid = self._selected(self.servers)
        if cid is not None:
            self.runtime.connections.remove_server(cid)
            self.refresh()

    def _remove_worker(self) -> None:
        wid = self._selected(self.workers)
        if wid is not None:
            self.runtime.connections.remove_worker(wid)
            self.refresh()

    def _worker_toggled(self, item: QListWidgetItem) -> None:
        self.runtime.connections.set_worker_enabled(
            str(item.data(Qt.ItemDataRole.UserRole)), item.checkState() == Qt.CheckState.Checked
        )
        self.status.setText("GPU workers take effect at the next model load.")

    def _allow_private(self) -> None:
        from app.core.remote.netpolicy import PRIVATE_RANGES

        self.ranges.setText(", ".join(PRIVATE_RANGES))
        self._save_ranges()

    def _save_ranges(self) -> None:
        try:
            self.runtime.connections.set_allowed_ranges(self.ranges.text())
        except HarmonicaError as exc:
            self.status.setText(str(exc))
            return
        self.ranges.setText(self.runtime.settings.connections.allowed_ranges)
        self.status.setText("Saved.")


class RemoteModelsBox(QWidget):
    """For the Models dialog: the models on your connections, each with Use."""

    use_requested = Signal(str, str)
    add_requested = Signal()

    def __init__(self, runtime: Runtime, parent: QWidget | None = None) -> None:
        super().__init__(parent, objectName="RemoteModelsBox")
        self.runtime = runtime
        self._lay = QVBoxLayout(self)
        self._lay.setContentsMargins(0, 10, 0, 0)
        self.refresh()

    def refresh(self) -> None:
        while self._lay.count():
            item = self._lay.takeAt(0)
            w = item.widget() if item is not None else None
            if w is not None:
                w.deleteLater()
        title = QLabel("On other computers", objectName="SectionTitle")
        add = QPushButton("Add server…", objectName="SecondaryButton")
        add.clicked.connect(self.add_requested)
        holder = QWidget()
        hl = QHBoxLayout(holder)
        hl.setContentsMargins(0, 0, 0, 0)
        hl.addWidget(title)
        hl.addStretch(1)
        hl.addWidget(add)
        self._lay.addWidget(holder)
        servers = [s for s in self.runtime.connections.servers() if s.model]
        if not servers:
            self._lay.addWidget(
                _wrapped("No servers yet: Connections → Add server… runs gpt-oss on another computer.", "EmptyHint")
            )
        for s in servers:
            row = QWidget(objectName="RemoteModelRow")
            rl = QHBoxLayout(row)
            rl.setContentsMargins(0, 0, 0, 0)
            rl.addWidget(_wrapped(f"{s.model} on {s.name}  ({s.url})"), 1)
            use = QPushButton("Use this model", objectName="PrimaryButton")
            use.clicked.connect(lambda _=False, cid=s.id, m=s.model: self.use_requested.emit(cid, m))
            rl.addWidget(use)
            self._lay.addWidget(row)
