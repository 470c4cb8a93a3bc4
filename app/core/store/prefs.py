"""App settings (key → JSON value) and named presets of conversation settings."""

from __future__ import annotations

import json
import time
from typing import Any, Final

from app.core.store.base import guarded, writes
from app.core.store.conversations import ConversationsMixin
from app.core.store.rows import ConversationSettings, Preset, StoreError
from app.core.store.schema import dumps, loads

# A setting deleted while the store could not write (kept until it can).
_DELETED: Final = object()


class PrefsMixin(ConversationsMixin):
    """App settings and presets.

    Settings are soft writes: while the store cannot write, a changed setting is kept in memory
    (and read back from there) and written when the store recovers, so no settings change fails.
    """

    @guarded
    def get_setting(self, key: str, default: Any = None) -> Any:
        if key in self._soft_settings:
            kept = self._soft_settings[key]
            return default if kept is _DELETED else json.loads(dumps(kept))
        row = self.db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        if row is None:
            return default
        try:
            return json.loads(row[0])
        except ValueError:
            return default

    @guarded
    def set_setting(self, key: str, value: Any) -> None:
        text = dumps(value)  # bad values fail here, now, not at recovery

        def keep() -> None:
            self._soft_settings[key] = json.loads(text)

        self._soft_write(lambda: self._write_setting(key, value), keep)
        if not self.read_only:
            self._soft_settings.pop(key, None)

    @guarded
    def delete_setting(self, key: str) -> None:
        self._soft_write(
            lambda: self._write_setting(key, _DELETED), lambda: self._soft_settings.update({key: _DELETED})
        )
        if not self.read_only:
            self._soft_settings.pop(key, None)

    def _write_setting(self, key: str, value: Any) -> None:
        if value is _DELETED:
            self.db.execute("DELETE FROM settings WHERE key = ?", (key,))
        else:
            self.db.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, dumps(value)),
            )

    @guarded
    def all_settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.db.execute("SELECT key, value FROM settings ORDER BY key"):
            try:
                out[key] = json.loads(value)
            except ValueError:
                continue  # a value damaged outside the app is skipped, not fatal
        for key, kept in self._soft_settings.items():
            if kept is _DELETED:
                out.pop(key, None)
            else:
                out[key] = kept
        return dict(sorted(out.items()))

    # ---- presets ----

    @writes
    def save_preset(self, name: str, settings: ConversationSettings) -> Preset:
        """Create or overwrite the preset called ``name``."""
        name = " ".join(name.split())
        if not name:
            raise StoreError("A preset needs a name.")
        now = time.time()
        self.db.execute(
            "INSERT INTO presets (name, settings, created, updated) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET settings = excluded.settings, updated = excluded.updated",
            (name, dumps(settings.without_runs_on().to_dict()), now, now),
        )
        preset = self.get_preset(name)
        assert preset is not None
        return preset

    @guarded
    def get_preset(self, name: str) -> Preset | None:
        row = self.db.execute(
            "SELECT id, name, settings, created, updated FROM presets WHERE name = ?", (" ".join(name.split()),)
        ).fetchone()
        if row is None:
            return None
        return Preset(row[0], row[1], ConversationSettings.from_dict(loads(row[2], {})), row[3], row[4])

    @guarded
    def list_presets(self) -> list[Preset]:
        rows = self.db.execute("SELECT id, name, settings, created, updated FROM presets ORDER BY name COLLATE NOCASE")
        return [Preset(r[0], r[1], ConversationSettings.from_dict(loads(r[2], {})), r[3], r[4]) for r in rows]

    @writes
    def delete_preset(self, name: str) -> bool:
        return self.db.execute("DELETE FROM presets WHERE name = ?", (" ".join(name.split()),)).rowcount > 0

    @writes
    def apply_preset(self, conversation_id: int, name: str) -> ConversationSettings:
        preset = self.get_preset(name)
        if preset is None:
            raise StoreError(f"There is no preset called {name!r}.")
        ran_on = self.conversation_settings(conversation_id).runs_on  # where the chat ran is not the preset's
        settings = preset.settings.ran_on(ran_on) if ran_on else preset.settings
        self.set_conversation_settings(conversation_id, settings)
        return settings
