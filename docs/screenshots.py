"""Make the screenshots in docs/: the model manager and first run (a real download from a loopback hub), and the
main window at 800×600, 1600×1000 and 2× scale in light and dark (docs/screenshots/).

The model manager shot shows a real, throttled download of a file of gpt-oss-20b's exact size
(12,109,566,560 bytes, sparse) from tests/fixtures/hf_server.py, resumed from a partial file so
it is mid-way; nothing is staged in the UI. Everything lives in a temporary HARMONICA_HOME/HF_HOME.

The window shots use demo mode (a scripted model, a sample chat). Under a real X server with a
window manager (Xvfb + openbox) the 2× shots are taken of the whole screen, so they show that the
window, sized and placed by Harmonica for a screen that is only 960×600 at 2×, is all on it.

    Xvfb :104 -screen 0 1920x1200x24 & DISPLAY=:104 openbox &
    DISPLAY=:104 python docs/screenshots.py [--quick] [--theme light|dark] [--only manager|first-run|window]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WORK = Path(tempfile.mkdtemp(prefix="harmonica-shots-"))
for name, sub in (("HARMONICA_HOME", "app"), ("HF_HOME", "hf"), ("XDG_CACHE_HOME", "cache"), ("HOME", "home")):
    os.environ[name] = str(WORK / sub)
    (WORK / sub).mkdir(parents=True, exist_ok=True)
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.pop("HF_HUB_OFFLINE", None)

REPO = "ggml-org/gpt-oss-20b-GGUF"
FILE = "gpt-oss-20b-mxfp4.gguf"
SIZE = 12_109_566_560


def sparse_file(path: Path, size: int) -> None:
    with path.open("wb") as f:
        f.write(b"GGUF" + (3).to_bytes(4, "little"))
        f.truncate(size)


def wait(app: object, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()  # type: ignore[attr-defined]
        time.sleep(0.02)


def shot_manager(app: object, out: Path, quick: bool) -> None:
    from app.core.download import DownloadManager
    from app.ui.downloads import DownloadController
    from app.ui.model_manager import ModelManagerDialog
    from tests.fixtures.hf_server import FakeHub

    size = 60_000_000 if quick else SIZE
    seeded = int(size * 0.4)
    source = WORK / "source.gguf"
    sparse_file(source, size)
    hub = FakeHub(rate_bps=41_000_000).start()
    print("hashing the served file…", flush=True)
    sha = hub.add_file(REPO, FILE, source)
    os.environ["HF_ENDPOINT"] = hub.url
    manager = DownloadManager(endpoint=hub.url)
    partial = manager.incomplete_path(REPO, sha)
    partial.parent.mkdir(parents=True, exist_ok=True)
    sparse_file(partial, seeded)  # a prefix of the same bytes: what an earlier session left

    controller = DownloadController(manager)
    dialog = ModelManagerDialog(controller)
    dialog.resize(880, 720)
    dialog.show()
    request = dialog.cards["gpt-oss-20b"].entry.download_request()
    controller.start(request)
    print("checking the kept bytes, then downloading…", flush=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        wait(app, 0.2)
        p = controller.status(request).progress
        if (
            p is not None
            and p.phase.value == "downloading"
            and p.downloaded > seeded + 4 * 41_000_000 * (0.1 if quick else 1)
        ):
            break
    wait(app, 0.3)
    dialog.grab().save(str(out))
    print("saved", out, controller.status(request).progress, flush=True)
    controller.shutdown()
    hub.stop()
    dialog.close()


def shot_first_run(app: object, out: Path) -> None:
    from PySide6.QtWidgets import QMainWindow

    from app.ui.first_run import FirstRunPage

    # A fresh user with the default cache folders: nothing downloaded, nothing left unfinished.
    for name, sub in (("HARMONICA_HOME", "app2"), ("HOME", "home2")):
        os.environ[name] = str(WORK / sub)
        (WORK / sub).mkdir(parents=True, exist_ok=True)
    for name in ("HF_HOME", "XDG_CACHE_HOME", "HF_HUB_CACHE"):
        os.environ.pop(name, None)

    window = QMainWindow()
    window.setWindowTitle("Harmonica")
    page = FirstRunPage()
    window.setCentralWidget(page)
    window.resize(1040, 820)
    window.show()
    deadline = time.monotonic() + 20
    while page.facts is None and time.monotonic() < deadline:
        wait(app, 0.1)
    wait(app, 0.5)
    window.grab().save(str(out))
    print("saved", out, flush=True)
    window.close()


# --- the main window at several sizes and scales ----------------------------------------------------
SIZES = {"800x600": (800, 600), "1600x1000": (1600, 1000)}


def _screen_capture(path: Path) -> bool:
    """The whole X screen, window manager frame included (Xvfb + openbox); False without `import`."""
    import shutil
    import subprocess

    if not os.environ.get("DISPLAY") or shutil.which("import") is None:
        return False
    subprocess.run(["import", "-window", "root", str(path)], check=True)
    return True


def shot_window(app: object, out_dir: Path, theme: str, scale: str) -> list[Path]:
    """The chat (focus on the answer's Copy, as after Tab), the first-run page and Chat settings."""
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication

    from app.ui.conversation_settings import ConversationSettingsDialog
    from app.ui.demo import start_demo

    made = []
    window = start_demo()
    window.show()
    wait(app, 0.5)
    sizes = {"2x": None} if scale == "2" else SIZES
    for label, size in sizes.items():
        if size is not None:
            window.resize(*size)
        wait(app, 0.6)
        window.activateWindow()
        window.chat.scroll_to_bottom()
        answer = window.chat.widgets[-1]
        copy = answer.actions.buttons["copy"]  # type: ignore[attr-defined]
        answer.actions.set_pinned(True)  # type: ignore[attr-defined]
        window.composer.edit.setFocus(Qt.FocusReason.TabFocusReason)
        copy.setFocus(Qt.FocusReason.TabFocusReason)  # the focus ring, as Tab leaves it
        wait(app, 0.4)
        path = out_dir / f"chat-{label}-{theme}.png"
        if not (size is None and _screen_capture(path)):
            window.grab().save(str(path))
        made.append(path)
    if scale != "2":
        window.resize(*SIZES["800x600"])
        settings = ConversationSettingsDialog(window.session.settings, window.runtime.store, 8192, window)
        settings.show()
        wait(app, 0.6)
        path = out_dir / f"chat-settings-{theme}.png"
        settings.grab().save(str(path))
        made.append(path)
        settings.close()
        window.view.show_shortcuts()
        wait(app, 0.5)
        shortcuts = next(w for w in QApplication.topLevelWidgets() if w.objectName() == "ShortcutsDialog")
        path = out_dir / f"shortcuts-{theme}.png"
        shortcuts.grab().save(str(path))
        made.append(path)
        shortcuts.close()
    window.close()
    return made


def shot_first_run_window(app: object, out_dir: Path, theme: str, scale: str) -> list[Path]:
    """The whole window of a first start: no model yet, what to expect here, the composer waiting."""
    from app.core.runtime import Runtime
    from app.ui.main_window import MainWindow

    window = MainWindow(Runtime())
    window.show()
    from PySide6.QtWidgets import QScrollArea

    sizes = {"2x": None} if scale == "2" else SIZES
    made = []
    for label, size in sizes.items():
        if size is not None:
            window.resize(*size)
        deadline = time.monotonic() + 20
        page = window.panels.first_run
        while (page is None or page.facts is None) and time.monotonic() < deadline:
            wait(app, 0.1)
            page = window.panels.first_run
        wait(app, 0.6)
        if page is not None:  # in a small window: the model and what to expect, not the logo
            scroll = page.findChild(QScrollArea)
            if scroll is not None:
                scroll.ensureWidgetVisible(page.expect_speed, 0, 24)
            wait(app, 0.3)
        path = out_dir / f"first-run-{label}-{theme}.png"
        if not (size is None and _screen_capture(path)):
            window.grab().save(str(path))
        made.append(path)
    window.close()
    return made


def shots_at_scale(out_dir: Path, scale: str) -> None:
    """Both themes at one scale, each in a fresh interpreter (QT_SCALE_FACTOR is read at start)."""
    import subprocess

    for theme in ("light", "dark"):
        env = dict(os.environ, QT_SCALE_FACTOR=scale)
        subprocess.run(
            [sys.executable, __file__, "--only", "window", "--theme", theme, "--scale", scale, "--out", str(out_dir)],
            env=env,
            check=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small file (layout checks only)")
    parser.add_argument("--theme", choices=("light", "dark"), default="light")
    parser.add_argument("--only", choices=("manager", "first-run", "window", "windows"))
    parser.add_argument("--scale", default="1", help=argparse.SUPPRESS)  # set by `windows` for each child
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    if args.only in (None, "windows"):
        # Every window shot: 1× and 2×, light and dark, one child process each (fresh Qt each time).
        folder = args.out / "screenshots" if args.out.name != "screenshots" else args.out
        folder.mkdir(parents=True, exist_ok=True)
        for scale in ("1", "2"):
            shots_at_scale(folder, scale)
        if args.only == "windows":
            return 0
    from PySide6.QtWidgets import QApplication

    from app.ui import style

    app = QApplication.instance() or QApplication(sys.argv[:1])
    style.apply(app, args.theme == "dark")  # type: ignore[arg-type]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.only == "window":
        for path in shot_window(app, args.out, args.theme, args.scale) + shot_first_run_window(
            app, args.out, args.theme, args.scale
        ):
            print("saved", path, flush=True)
        return 0
    if args.only in (None, "manager"):
        shot_manager(app, args.out / "screenshot-model-manager.png", args.quick)
    if args.only in (None, "first-run"):
        shot_first_run(app, args.out / "screenshot-first-run.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
