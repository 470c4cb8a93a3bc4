"""Make the model manager and first-run screenshots in docs/ (a real download from a loopback hub).

The model manager shot shows a real, throttled download of a file of gpt-oss-20b's exact size
(12,109,566,560 bytes, sparse) from tests/fixtures/hf_server.py, resumed from a partial file so
it is mid-way; nothing is staged in the UI. Everything lives in a temporary HARMONICA_HOME/HF_HOME.

    DISPLAY=:104 python docs/screenshots.py [--quick] [--theme light|dark] [--only manager|first-run]
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small file (layout checks only)")
    parser.add_argument("--theme", choices=("light", "dark"), default="light")
    parser.add_argument("--only", choices=("manager", "first-run"))
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    from PySide6.QtWidgets import QApplication

    from app.ui import style

    app = QApplication.instance() or QApplication(sys.argv[:1])
    style.apply(app, args.theme == "dark")  # type: ignore[arg-type]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.only in (None, "manager"):
        shot_manager(app, args.out / "screenshot-model-manager.png", args.quick)
    if args.only in (None, "first-run"):
        shot_first_run(app, args.out / "screenshot-first-run.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
