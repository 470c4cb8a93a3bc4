"""Shared setup for the model manager and first-run tests: a loopback hub serving catalog models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.core.download import DownloadManager
from app.core.hardware import GpuInfo, HardwareProfile
from app.core.models import CatalogEntry, ModelLibrary, find_entry
from app.ui.downloads import DownloadController
from tests.fixtures.gguf_factory import write_gpt_oss_gguf
from tests.fixtures.hf_server import FakeHub

GB = 1 << 30  # machines come in GiB (RAM, VRAM)
SMALL = find_entry("gpt-oss-20b")
BIG = find_entry("gpt-oss-120b")
assert SMALL is not None and BIG is not None


def profile(ram_gb: float = 32, gpus: tuple[tuple[str, float], ...] = ()) -> HardwareProfile:
    return HardwareProfile(
        ram_total=int(ram_gb * GB),
        ram_available=int(ram_gb * GB * 0.7),
        cores_physical=8,
        cores_logical=16,
        os="Linux",
        machine="x86_64",
        gpus=[GpuInfo("nvidia", n, int(v * GB), int(v * GB)) for n, v in gpus],
    )


def serve_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """Body of each test module's `hub` fixture: a loopback hub that HF_ENDPOINT points at."""
    with FakeHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


def publish_entry(hub: FakeHub, entry: CatalogEntry, folder: Path, **shape: object) -> list[bytes]:
    """Serve real (tiny) gpt-oss GGUFs under the entry's repo and file names."""
    blobs = []
    count = len(entry.files)
    for i, name in enumerate(entry.files):
        extra = {"split.count": count, "split.no": i} if count > 1 else None
        path = write_gpt_oss_gguf(folder / f"src-{i}-{name}", seed=i, extra_metadata=extra, **shape)  # type: ignore[arg-type]
        hub.add_file(entry.repo_id, name, path)
        blobs.append(path.read_bytes())
    return blobs


def make_manager(hub: FakeHub, **overrides: object) -> DownloadManager:
    settings: dict[str, object] = {
        "endpoint": hub.url,
        "read_timeout": 0.5,
        "connect_timeout": 2.0,
        "backoff_base": 0.01,
        "backoff_max": 0.05,
        "max_retries": 3,
    }
    settings.update(overrides)
    return DownloadManager(**settings)  # type: ignore[arg-type]


def make_controller(hub: FakeHub, library: ModelLibrary | None = None, **overrides: object) -> DownloadController:
    return DownloadController(make_manager(hub, **overrides), library or ModelLibrary(search_dirs=[]))


def gets(hub: FakeHub) -> list[str | None]:
    """Range headers of the file GETs, in order."""
    return [r.range for r in hub.requests("GET") if "/resolve/" in r.path or "/cdn/" in r.path]
