"""What a download is asked for, what the hub says about each file, and how a download ended."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.download.progress import Phase
from app.core.download.validation import check_relative_name, check_repo_id

DiskFree = Callable[[Path], int]


@dataclass(frozen=True)
class DownloadRequest:
    """What to download: one or more files of one repo revision, handled as one download."""

    repo_id: str
    filenames: tuple[str, ...]
    revision: str = "main"

    def __post_init__(self) -> None:
        if not self.filenames:
            raise ValueError("a download needs at least one file")
        check_repo_id(self.repo_id)
        for name in self.filenames:
            check_relative_name(name, "The file name")
        check_relative_name(self.revision, "The revision")

    @property
    def job_id(self) -> str:
        digest = hashlib.sha1(f"{self.repo_id}@{self.revision}:{'|'.join(self.filenames)}".encode()).hexdigest()
        readable = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{self.repo_id}_{Path(self.filenames[0]).stem}")
        return f"{readable[:80]}-{digest[:10]}"


@dataclass(frozen=True)
class RemoteFile:
    """One file as the hub describes it."""

    filename: str
    size: int
    sha256: str | None
    etag: str
    commit: str
    url: str
    xet: Any = None  # huggingface_hub XetFileData when the server offers Xet
    send_auth: bool = True  # False for signed CDN URLs: the token must not leave the Hub


@dataclass(frozen=True)
class DownloadResult:
    """How `run()` ended when it did not raise."""

    status: Phase  # DONE, PAUSED or CANCELLED
    paths: tuple[Path, ...] = ()  # snapshot paths of all parts (DONE only)
    bytes_transferred: int = 0  # received over the network in this run
    elapsed_s: float = 0.0
    # The parts Harmonica itself placed in the cache (in this or an earlier session), as opposed
    # to parts another tool had already downloaded; only these may Harmonica offer to delete.
    downloaded: tuple[Path, ...] = ()

    @property
    def path(self) -> Path | None:
        """The file to load (the first part of a split model)."""
        return self.paths[0] if self.paths else None


@dataclass(frozen=True)
class PendingDownload:
    """A download left unfinished by an earlier session (paused, failed or interrupted)."""

    request: DownloadRequest
    status: str
    downloaded: int
    total: int
    updated: float
