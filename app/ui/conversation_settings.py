"""Per-conversation settings: instructions, identity, effort, sampling, context, and saved presets."""

from __future__ import annotations

import dataclasses

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.core.chat import EFFORTS
from app.core.harmony import DEFAULT_IDENTITY
from app.core.store import ConversationSettings, Store, StoreError
from app.ui import style
from app.ui.window_state import fit_to_screen

CONTEXT_CHOICES = (2048, 4096, 8192, 16384, 32768, 65536, 131072)


class ConversationSettingsDialog(QDialog):
    """Edits a copy of a conversation's settings; `settings()` returns the result after accept."""

    def __init__(
        self,
        settings: ConversationSettings,
        store: Store | None = None,
        loaded_n_ctx: int | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent, objectName="SettingsDialog")
        self.setWindowTitle("Chat settings")
        self.store = store
        self._extra = dict(settings.extra)
        # The form scrolls and the buttons stay: on a small screen (or at 2× scale) it still fits.
        outer, self.body_scroll, body = style.scroll_page(self, "SettingsBody")
        outer.setContentsMargins(12, 12, 12, 12)
        outer.setSpacing(10)
        lay = QVBoxLayout(body)
        lay.setContentsMargins(0, 0, 6, 0)
        lay.setSpacing(12)

        presets = QHBoxLayout()
        presets.addWidget(QLabel("Preset"))
        self.preset_box = QComboBox(objectName="PresetBox")
        self.preset_box.setMinimumWidth(180)
        presets.addWidget(self.preset_box, 1)
        self.apply_preset = QPushButton("Apply", objectName="SecondaryButton")
        self.apply_preset.clicked.connect(self._apply_preset)
        self.save_preset = QPushButton("Save as preset…", objectName="SecondaryButton")
        self.save_preset.clicked.connect(self._save_preset)
        self.delete_preset = QPushButton("Delete", objectName="SecondaryButton")
        self.delete_preset.clicked.connect(self._delete_preset)
        for b in (self.apply_preset, self.save_preset, self.delete_preset):
            presets.addWidget(b)
        lay.addLayout(presets)

        behaviour = QGroupBox("Behaviour")
        form = QFormLayout(behaviour)
        self.instructions = QPlainTextEdit(objectName="InstructionsEdit")
        self.instructions.setPlaceholderText(
            "How the model should behave in this chat, e.g. “Answer briefly, in French.” "
            "Sent as gpt-oss's developer message."
        )
        self.instructions.setMinimumHeight(90)
        self.instructions.setMaximumHeight(160)
        form.addRow("Instructions", self.instructions)
        self.identity = QLineEdit()
        self.identity.setPlaceholderText(DEFAULT_IDENTITY)
        self.identity.setToolTip("The first line of the system message. Leave empty for the model's own.")
        form.addRow("Model identity", self.identity)
        self.effort = QComboBox()
        for e in EFFORTS:
            self.effort.addItem(e.capitalize(), e)
        form.addRow("Default effort", self.effort)
        lay.addWidget(behaviour)

        sampling = QGroupBox("Sampling")
        sf = QFormLayout(sampling)
        self.temperature = _double(0.0, 2.0, 0.05, "1.0 is gpt-oss's recommended value")
        sf.addRow("Temperature", self.temperature)
        self.top_p = _double(0.0, 1.0, 0.01, "1.0 (off) is gpt-oss's recommended value")
        sf.addRow("Top P", self.top_p)
        self.top_k = QSpinBox()
        self.top_k.setRange(0, 1000)
        self.top_k.setSpecialValueText("Off")
        sf.addRow("Top K", self.top_k)
        self.min_p = _double(0.0, 1.0, 0.01, "0 is off")
        sf.addRow("Min P", self.min_p)
        self.repeat_penalty = _double(0.5, 2.5, 0.05, "1.0 is off")
        sf.addRow("Repeat penalty", self.repeat_penalty)
        self.seed = QSpinBox()
        self.seed.setRange(-1, 2**31 - 1)
        self.seed.setSpecialValueText("Random")
        sf.addRow("Seed", self.seed)
        self.max_tokens = QSpinBox()
        self.max_tokens.setRange(0, 131072)
        self.max_tokens.setSingleStep(256)
        self.max_tokens.setSpecialValueText("No limit")
        sf.addRow("Max tokens", self.max_tokens)
        lay.addWidget(sampling)

        context = QGroupBox("Context")
        cf = QFormLayout(context)
        self.context = QComboBox()
        self.context.addItem("Model default", None)
        for n in CONTEXT_CHOICES:
            self.context.addItem(f"{n:,} tokens", n)
        cf.addRow("Context size", self.context)
        note = "Takes effect when the model is (re)loaded."
        if loaded_n_ctx:
            note += f" Loaded now: {loaded_n_ctx:,} tokens."
        hint = QLabel(note, objectName="FormHint")
        hint.setWordWrap(True)
        cf.addRow("", hint)
        self.trim = QCheckBox("When the chat is too long, leave the oldest turns out of the prompt")
        cf.addRow("", self.trim)
        lay.addWidget(context)

        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok
            | QDialogButtonBox.StandardButton.Cancel
            | QDialogButtonBox.StandardButton.RestoreDefaults
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        buttons.button(QDialogButtonBox.StandardButton.RestoreDefaults).clicked.connect(
            lambda: self.load(ConversationSettings(extra=self._extra))
        )
        self.buttons = buttons
        outer.addWidget(buttons)
        self.load(settings)
        self._refresh_presets()
        body.setMinimumWidth(body.minimumSizeHint().width())
        self.body_scroll.setMinimumWidth(min(body.sizeHint().width() + 20, 600))
        fit_to_screen(self, (body.sizeHint().width() + 40, min(940, body.sizeHint().height() + 70)))

    # --- settings ↔ widgets ----------------------------------------------------------------------
    def load(self, s: ConversationSettings) -> None:
        self.instructions.setPlainText(s.developer_instructions)
        self.identity.setText(s.model_identity or "")
        self.effort.setCurrentIndex(EFFORTS.index(s.reasoning_effort) if s.reasoning_effort in EFFORTS else 1)
        self.temperature.setValue(s.temperature)
        self.top_p.setValue(s.top_p)
        self.top_k.setValue(s.top_k)
        self.min_p.setValue(s.min_p)
        self.repeat_penalty.setValue(s.repeat_penalty)
        self.seed.setValue(-1 if s.seed is None else max(0, min(s.seed, 2**31 - 1)))
        self.max_tokens.setValue(s.max_tokens or 0)
        i = self.context.findData(s.context_size) if s.context_size else 0
        if i < 0:
            self.context.addItem(f"{s.context_size:,} tokens", s.context_size)
            i = self.context.count() - 1
        self.context.setCurrentIndex(i)
        self.trim.setChecked(s.trim_oldest)

    def settings(self) -> ConversationSettings:
        identity = self.identity.text().strip()
        return ConversationSettings(
            developer_instructions=self.instructions.toPlainText().strip(),
            model_identity=identity or None,
            reasoning_effort=str(self.effort.currentData()),
            temperature=round(self.temperature.value(), 4),
            top_p=round(self.top_p.value(), 4),
            top_k=self.top_k.value(),
            min_p=round(self.min_p.value(), 4),
            repeat_penalty=round(self.repeat_penalty.value(), 4),
            seed=None if self.seed.value() < 0 else self.seed.value(),
            max_tokens=self.max_tokens.value() or None,
            context_size=self.context.currentData(),
            trim_oldest=self.trim.isChecked(),
            extra=dict(self._extra),
        )

    # --- presets ---------------------------------------------------------------------------------
    def _refresh_presets(self, select: str | None = None) -> None:
        self.preset_box.clear()
        names = [p.name for p in self.store.list_presets()] if self.store is not None else []
        for n in names:
            self.preset_box.addItem(n)
        if not names:
            self.preset_box.addItem("No presets yet")
            self.preset_box.setEnabled(False)
        else:
            self.preset_box.setEnabled(True)
            if select in names:
                self.preset_box.setCurrentText(select)
        self.apply_preset.setEnabled(bool(names))
        self.delete_preset.setEnabled(bool(names))
        self.save_preset.setEnabled(self.store is not None)

    def _apply_preset(self) -> None:
        if self.store is None:
            return
        preset = self.store.get_preset(self.preset_box.currentText())
        if preset is not None:
            self.load(dataclasses.replace(preset.settings, extra=self._extra))

    def save_as_preset(self, name: str) -> bool:
        if self.store is None:
            return False
        try:
            self.store.save_preset(name, dataclasses.replace(self.settings(), extra={}))
        except StoreError as exc:
            QMessageBox.warning(self, "Preset not saved", str(exc))
            return False
        self._refresh_presets(select=" ".join(name.split()))
        return True

    def _save_preset(self) -> None:
        name, ok = QInputDialog.getText(self, "Save preset", "Name for these settings:")
        if ok and name.strip():
            self.save_as_preset(name)

    def _delete_preset(self) -> None:
        if self.store is not None and self.preset_box.isEnabled():
            self.store.delete_preset(self.preset_box.currentText())
            self._refresh_presets()


def _double(lo: float, hi: float, step: float, tip: str) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setRange(lo, hi)
    box.setSingleStep(step)
    box.setDecimals(2)
    box.setToolTip(tip)
    box.setAlignment(Qt.AlignmentFlag.AlignLeft)
    return box
