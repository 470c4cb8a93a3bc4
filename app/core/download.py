"""Download model files from the Hugging Face Hub into the standard HF cache: resumable, verified, interruptible.

How it works (and why):

* Metadata comes from huggingface_hub itself: `HfApi.model_info(files_metadata=True)` gives the
  commit and each file's size and LFS sha256; `get_hf_file_metadata` (a HEAD on the resolve URL)
  gives the ETag (= blob name in the cache), the download location and whether the file is on Xet.
* Plain HTTP transfers are done here, not by `hf_hub_download`: huggingface_hub 2.4 writes to a
  process-unique `blobs/<etag>.<uuid>.incomplete` and deletes it on any failure (see
  `_download_to_tmp_and_move`), so an interrupted download there always starts over. Harmonica
  appends to `blobs/<etag>.incomplete` in the same cache and resumes it with `Range: bytes=N-`,
  across retries, pauses and app restarts. The finished blob is renamed to `blobs/<etag>` and
  linked from `snapshots/<commit>/<file>` exactly as huggingface_hub does, so other tools share it.
* Pause/cancel set a flag that the transfer loop checks after every chunk; to interrupt a read
  that is blocked on a silent server, the controlling thread also shuts down the active socket
  (found through httpx's `network_stream` extension). Either way the loop stops within a chunk
  or immediately, never waiting for the read timeout.
* A stall is a read that gets no byte for `read_timeout` seconds; stalls and dropped connections
  are retried with exponential backoff, each attempt resuming from the bytes already on disk.
* The sha256 is computed while bytes arrive (the prefix of a resumed file is hashed first), so
  verification costs no second pass over a 12 GB file.
* Xet (opt-in, `use_xet=True`): when hf_xet is installed, the server offers Xet and no partial
  HTTP download exists, the file is fetched by `hf_hub_download` (which uses hf_xet) with a
  progress hook, then hashed; pause/cancel abort the Xet session. Xet keeps no byte-level partial
  file, so a paused Xet transfer restarts the file. Plain HTTP is the default because pausing
  and resuming a 12 GB file over a home connection matters more than Xet's speed-up; the Hub's
  resolve URLs serve Xet-stored files over plain HTTP (with Range) too.
* Nothing here touches the network until `DownloadJob.run()` (or `fetch_remote_files`) is called.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from app.core import paths
from app.core.bridge import iterate_callbacks
from app.core.errors import HarmonicaError
from app.core.fsutil import Sha256Reader, atomic_write, sha256_file
from app.core.plain_errors import connection_problem, describe_os_error, http_status_words, plain_text
from app.core.units import format_bytes

ProgressCallback = Callable[["DownloadProgress"], None]
DiskFree = Callable[[Path], int]

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# What the Hub sends, and so the only forms that may become names in the cache: an ETag is the
# file's sha256 (LFS) or its git blob sha1; a commit is a sha1.
_ETAG_RE = re.compile(r"^(?:[0-9a-fA-F]{40}|[0-9a-fA-F]{64})$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_REPO_PART_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
# Names Windows gives to devices in every folder ("nul.txt" too), whatever the extension.
_WINDOWS_DEVICES = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{port}{n}" for port in ("COM", "LPT") for n in [*"123456789", "\u00b9", "\u00b2", "\u00b3"]}
)
_STATE_VERSION = 1
# Keep this much free beyond the download itself: a full disk breaks more than the download.
DISK_MARGIN_BYTES = 300_000_000


class ErrorKind(str, Enum):
    OFFLINE = "offline"
    NOT_FOUND = "not_found"
    AUTH = "auth"
    SERVER = "server"
    NETWORK = "network"
    DISK_SPACE = "disk_space"
    CHECKSUM = "checksum"
    LOCAL_IO = "local_io"
    BUSY = "busy"


class DownloadError(HarmonicaError):
    """A download failed; `message` is written for the user, `kind` lets the UI choose actions."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    @property
    def can_retry(self) -> bool:
        """Whether offering "Try again" makes sense (a checksum failure means: download again)."""
        return self.kind in (ErrorKind.SERVER, ErrorKind.NETWORK, ErrorKind.CHECKSUM, ErrorKind.BUSY)


def _unsafe_part(part: str) -> str | None:
    """Why `part` may not be one component of a path in the cache, or None if it may."""
    if not part or part in (".", ".."):
        return "an empty, '.' or '..' component"
    if any(ord(ch) < 32 or ch in '\\/:*?"<>|' for ch in part):
        return "a separator, drive letter, control or wildcard character"
    if part != part.rstrip(". "):
        return "a trailing dot or space (Windows drops them)"
    if part.split(".", 1)[0].rstrip(" ").upper() in _WINDOWS_DEVICES:
        return "a Windows device name"
    if len(part.encode("utf-8", "surrogatepass")) > 255:
        return "a component longer than 255 bytes"
    return None


def check_relative_name(name: str, what: str) -> str:
    """`name` (a repo file name or a revision) as a relative path of safe components, else ValueError.

    Slashes separate folders (a repo may keep files in folders, a revision may be `refs/pr/1`);
    everything that could leave the folder it is joined to, or name a device, is refused on every OS.
    """
    if not isinstance(name, str) or not name or len(name) > 1000 or name.startswith("/"):
        raise ValueError(f"{what} {name!r} is not a relative name")
    for part in name.split("/"):
        problem = _unsafe_part(part)
        if problem is not None:
            raise ValueError(f"{what} {name!r} contains {problem}")
    return name


def check_repo_id(repo_id: str) -> str:
    """`owner/name` as the Hub spells repository ids, else ValueError."""
    parts = repo_id.split("/") if isinstance(repo_id, str) else []
    if len(parts) != 2 or not all(_REPO_PART_RE.match(p) and ".." not in p for p in parts):
        raise ValueError(f"{repo_id!r} is not a Hugging Face repository id (owner/name)")
    for part in parts:
        check_relative_name(part, "The repository id")
    return repo_id


def _inside(path: Path, root: Path, what: str) -> Path:
    """`path` if it stays inside `root` (compared without following links, as huggingface_hub does)."""
    real_root = Path(os.path.abspath(root))
    if real_root not in Path(os.path.abspath(path)).parents:
        raise DownloadError(
            ErrorKind.SERVER,
            f"Refused to write {what} outside the Hugging Face cache folder {root}; nothing was written there.",
        )
    return path


class Phase(str, Enum):
    METADATA = "metadata"  # asking the hub for sizes and checksums
    CHECKING = "checking"  # hashing the partial bytes kept from an earlier session
    DOWNLOADING = "downloading"
    RETRYING = "retrying"  # waiting before the next attempt after a network error
    VERIFYING = "verifying"  # comparing the sha256 (Xet path: hashing the finished file)
    DONE = "done"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    FAILED = "failed"


@dataclass(frozen=True)
class DownloadProgress:
    """A snapshot of one download (all parts together) for the UI."""

    phase: Phase
    downloaded: int
    total: int
    speed_bps: float = 0.0
    eta_s: float | None = None
    file_index: int = 0
    file_count: int = 1
    filename: str = ""
    checked: int = 0  # bytes hashed in CHECKING/VERIFYING
    check_total: int = 0
    attempt: int = 0
    message: str = ""

    @property
    def fraction(self) -> float:
        return self.downloaded / self.total if self.total > 0 else 0.0


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


class _Stopped(Exception):
    """Raised inside the transfer when pause or cancel was requested."""


class _RetryableStatus(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def human_bytes(n: float) -> str:
    """12_109_566_560 → '11.3 GiB': the app's one convention for sizes (app/core/units.py)."""
    return format_bytes(n)


def is_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as set now, or as huggingface_hub read it at import."""
    from huggingface_hub import constants

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
            return True
    return bool(constants.HF_HUB_OFFLINE)


def xet_available() -> bool:
    """hf_xet installed and not disabled (HF_HUB_DISABLE_XET read now, not only at import)."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_DISABLE_XET", "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
        return False
    if constants.HF_HUB_DISABLE_XET:
        return False
    try:
        import hf_xet  # noqa: F401
    except ImportError:
        return False
    return True


def _default_disk_free(path: Path) -> int:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


@dataclass(frozen=True)
class VerifyReport:
    """How a check of files on disk ended (a mismatch raises DownloadError instead)."""

    verified: tuple[Path, ...] = ()  # hashed and equal to the published sha256
    unknown: tuple[Path, ...] = ()  # no sha256 known for these (not from the HF cache), not checked
    stopped: bool = False  # cancelled before every file was checked


def expected_sha256(path: Path) -> str | None:
    """The sha256 a file in the HF cache must have, known offline: the name of its blob (the
    cache names blobs by ETag, and an LFS file's ETag is its sha256)."""
    try:
        name = Path(path).resolve().name.lower()
    except OSError:
        return None
    return name if _SHA256_RE.match(name) else None


def verify_events(
    paths: Sequence[Path],
    *,
    cancel: threading.Event | None = None,
    expected: Mapping[Path, str] | None = None,
    interval: float = 0.1,
) -> Iterator[DownloadProgress | VerifyReport]:
    """Hash files already on disk against their published sha256 (no network); yields VERIFYING
    progress at most every `interval` seconds, then a VerifyReport. A damaged file is deleted
    (with its cache link) and DownloadError(CHECKSUM) raised, exactly like a damaged download."""
    files = [Path(p) for p in paths]
    sizes = []
    for f in files:
        try:
            sizes.append(f.stat().st_size)
        except OSError as exc:
            raise DownloadError(ErrorKind.LOCAL_IO, f"Could not read {f}: {describe_os_error(exc)}") from exc
    total = sum(sizes)
    verified: list[Path] = []
    unknown: list[Path] = []
    checked = 0
    last = float("-inf")
    for index, (path, size) in enumerate(zip(files, sizes, strict=False)):
        want = (expected or {}).get(path) or expected_sha256(path)
        if want is None:
            unknown.append(path)
            checked += size
            continue
        blob = path.resolve()
        reader = Sha256Reader(blob)
        for n in reader:
            checked += n
            if cancel is not None and cancel.is_set():
                yield VerifyReport(tuple(verified), tuple(unknown), stopped=True)
                return
            now = time.monotonic()
            if now - last >= interval:
                last = now
                yield DownloadProgress(
                    Phase.VERIFYING,
                    downloaded=total,
                    total=total,
                    file_index=index,
                    file_count=len(files),
                    filename=path.name,
                    checked=checked,
                    check_total=total,
                    message=f"Verifying {path.name}",
                )
        actual = reader.hexdigest
        if actual != want.lower():
            blob.unlink(missing_ok=True)
            if path.is_symlink():
                path.unlink(missing_ok=True)  # no link to a deleted blob
            raise DownloadError(
                ErrorKind.CHECKSUM,
                (
                    f"{path.name} is damaged: its SHA-256 ({actual[:12]}…) is not the one published for it "
                    f"({want[:12]}…). The damaged file was deleted. Download it again."
                ),
            )
        verified.append(path)
    yield DownloadProgress(
        Phase.VERIFYING,
        downloaded=total,
        total=total,
        file_index=max(0, len(files) - 1),
        file_count=len(files),
        filename=files[-1].name if files else "",
        checked=total,
        check_total=total,
        message="Verified",
    )
    yield VerifyReport(tuple(verified), tuple(unknown))


def verify_files(
    paths: Sequence[Path], on_progress: ProgressCallback | None = None, *, expected: Mapping[Path, str] | None = None
) -> VerifyReport:
    """verify_events as a plain call."""
    report = VerifyReport()
    for item in verify_events(paths, expected=expected):
        if isinstance(item, VerifyReport):
            report = item
        elif on_progress is not None:
            on_progress(item)
    return report


class _StreamHasher:
    """sha256 on a helper thread, so hashing overlaps network reads (hashlib releases the GIL);
    on a 2-core machine this keeps verification from costing ~25% of the throughput."""

    def __init__(self, digest: Any = None) -> None:
        self._start(digest if digest is not None else hashlib.sha256())

    def _start(self, digest: Any) -> None:
        import queue

        self._digest = digest
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=128)
        self._thread = threading.Thread(target=self._work, name="sha256", daemon=True)
        self._thread.start()

    def reset(self) -> None:
        """Start over from zero bytes (the partial file was discarded)."""
        self.close()
        self._start(hashlib.sha256())

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            self._digest.update(item)

    def update(self, data: bytes) -> None:
        self._queue.put(data)

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def hexdigest(self) -> str:
        self.close()
        return str(self._digest.hexdigest())


class _Reporter:
    """Aggregates bytes over all parts, computes speed over a sliding window, throttles callbacks."""

    def __init__(
        self, callback: ProgressCallback | None, total: int, file_count: int, interval: float, window_s: float = 5.0
    ) -> None:
        self.callback = callback
        self.total = total
        self.file_count = file_count
        self.interval = interval
        self.window_s = window_s
        self.done_before = 0  # bytes of parts already complete
        self.current = 0  # bytes of the current part on disk
        self.file_index = 0
        self.filename = ""
        self.phase = Phase.METADATA
        self.transferred = 0  # received over the network in this run
        self._samples: deque[tuple[float, int]] = deque()
        self._last_emit = float("-inf")
        # Emits come from the job thread and the ticker; the lock keeps them ordered so a
        # late tick can never follow the final PAUSED/DONE event.
        self._lock = threading.RLock()

    @property
    def downloaded(self) -> int:
        return self.done_before + self.current

    def speed(self, now: float) -> float:
        samples = self._samples
        while len(samples) > 2 and now - samples[1][0] > self.window_s:
            samples.popleft()
        if len(samples) < 2:
            return 0.0
        (t0, b0), (t1, b1) = samples[0], samples[-1]
        # A window that ended long ago means nothing is arriving now.
        span = max(now, t1) - t0
        return (b1 - b0) / span if span > 0 else 0.0

    def add(self, n: int) -> None:
        self.current += n
        self.transferred += n
        now = time.monotonic()
        samples = self._samples
        # One sample per 50 ms is plenty for a 5 s window and keeps the deque small at 1 GB/s.
        if len(samples) >= 2 and now - samples[-2][0] < 0.05:
            samples[-1] = (now, self.transferred)
        else:
            samples.append((now, self.transferred))
        self.emit(Phase.DOWNLOADING, now=now)

    def reset_speed(self) -> None:
        self._samples.clear()

    def tick(self, quiet_s: float) -> None:
        """Re-send the state when nothing arrived for `quiet_s`, so a stall shows speed falling."""
        with self._lock:
            if self.phase == Phase.DOWNLOADING and time.monotonic() - self._last_emit >= quiet_s:
                self.emit(Phase.DOWNLOADING, force=True)

    def emit(self, phase: Phase, *, force: bool = False, now: float | None = None, **extra: Any) -> None:
        if self.callback is None:
            return
        with self._lock:
            self._emit(phase, force, now, extra)

    def _emit(self, phase: Phase, force: bool, now: float | None, extra: dict[str, Any]) -> None:
        assert self.callback is not None
        now = time.monotonic() if now is None else now
        changed = phase != self.phase
        self.phase = phase
        if not (force or changed) and now - self._last_emit < self.interval:
            return
        self._last_emit = now
        speed = self.speed(now) if phase == Phase.DOWNLOADING else 0.0
        remaining = max(0, self.total - self.downloaded)
        eta = remaining / speed if speed > 0 else None
        self.callback(
            DownloadProgress(
                phase=phase,
                downloaded=self.downloaded,
                total=self.total,
                speed_bps=speed,
                eta_s=eta,
                file_index=self.file_index,
                file_count=self.file_count,
                filename=self.filename,
                **extra,
            )
        )


class DownloadManager:
    """Creates download jobs and remembers unfinished ones across app restarts.

    All network settings are resolved when a job runs: `endpoint` (else HF_ENDPOINT), `token`
    (else HF_TOKEN / the stored huggingface token), HF_HUB_OFFLINE, and the HF cache folder.
    """

    def __init__(
        self,
        *,
        cache_dir: Path | None = None,
        state_dir: Path | None = None,
        endpoint: str | None = None,
        token: str | None = None,
        read_timeout: float = 30.0,
        connect_timeout: float = 15.0,
        max_retries: int = 8,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        progress_interval: float = 0.1,
        disk_free: DiskFree | None = None,
        use_xet: bool = False,
    ) -> None:
        self._cache_dir = cache_dir
        self._state_dir = state_dir
        self._endpoint = endpoint
        self._token = token
        self.read_timeout = read_timeout
        self.connect_timeout = connect_timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.progress_interval = progress_interval
        self.disk_free: DiskFree = disk_free or _default_disk_free
        self.use_xet = use_xet

    # -- settings resolved at call time --------------------------------------------------------
    @property
    def cache_dir(self) -> Path:
        return Path(self._cache_dir) if self._cache_dir is not None else paths.hf_hub_cache_dir()

    @property
    def state_dir(self) -> Path:
        return Path(self._state_dir) if self._state_dir is not None else paths.data_dir() / "downloads"

    @property
    def endpoint(self) -> str:
        from huggingface_hub import constants

        value = self._endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
        return value.rstrip("/")

    @property
    def token(self) -> str | None:
        if self._token:
            return self._token
        from huggingface_hub import get_token

        return get_token()

    # -- jobs ----------------------------------------------------------------------------------
    def job(self, request: DownloadRequest) -> DownloadJob:
        return DownloadJob(self, request)

    def state_path(self, request: DownloadRequest) -> Path:
        return self.state_dir / f"{request.job_id}.json"

    def pending(self) -> list[PendingDownload]:
        """Unfinished downloads from earlier sessions (newest first); reads local files only."""
        found: list[PendingDownload] = []
        folder = self.state_dir
        if not folder.is_dir():
            return found
        for state_file in folder.glob("*.json"):
            try:
                state = json.loads(state_file.read_text("utf-8"))
                request = DownloadRequest(state["repo_id"], tuple(state["filenames"]), state.get("revision", "main"))
                total, downloaded = 0, 0
                for name in request.filenames:
                    info = state.get("files", {}).get(name, {})
                    total += int(info.get("size", 0))
                    downloaded += self._bytes_on_disk(request.repo_id, info.get("etag"), int(info.get("size", 0)))
                found.append(
                    PendingDownload(
                        request, str(state.get("status", "paused")), downloaded, total, float(state.get("updated", 0.0))
                    )
                )
            except (OSError, ValueError, KeyError, TypeError, DownloadError):
                continue  # a damaged state file only loses the resume offer, never crashes
        found.sort(key=lambda p: p.updated, reverse=True)
        return found

    def discard(self, request: DownloadRequest, *, delete_partial: bool = True) -> None:
        """Forget an unfinished download, deleting its partial files unless asked to keep them.

        "Partial files" include the finished parts of an unfinished split model that this
        download placed in the cache (useless without the rest); parts another tool downloaded stay.
        """
        state = self._read_state(request)
        if delete_partial and state is not None:
            for name, info in state.get("files", {}).items():
                if not info.get("etag"):
                    continue
                try:
                    self.incomplete_path(request.repo_id, info["etag"]).unlink(missing_ok=True)
                except DownloadError:
                    continue  # a tampered state file names no file of ours
                if info.get("placed") and info.get("commit"):
                    self._delete_placed(request.repo_id, info["etag"], info["commit"], name)
        self.state_path(request).unlink(missing_ok=True)

    def _delete_placed(self, repo_id: str, etag: str, commit: str, filename: str) -> None:
        try:
            snapshot = self.snapshot_path(repo_id, commit, filename)
        except DownloadError:
            return  # a tampered state file names no file of ours
        try:
            if snapshot.is_symlink() or snapshot.is_file():
                snapshot.unlink()
            self.blob_path(repo_id, etag).unlink(missing_ok=True)
            folder = snapshot.parent
            while folder != self.repo_dir(repo_id) / "snapshots" and not any(folder.iterdir()):
                folder.rmdir()  # empty snapshot folders would show up as empty revisions
                folder = folder.parent
        except (OSError, DownloadError):
            pass  # best effort: what is left is a finished file, not a corrupt one

    # -- cache layout (same as huggingface_hub) ------------------------------------------------
    # Every name below may come from a server (an ETag, X-Repo-Commit) or from a state file: each
    # is checked for its exact format, and the joined path must stay in its folder of the cache.
    def repo_dir(self, repo_id: str) -> Path:
        try:
            check_repo_id(repo_id)
        except ValueError as exc:
            raise DownloadError(ErrorKind.NOT_FOUND, f"{exc}.") from None
        return _inside(self.cache_dir / ("models--" + repo_id.replace("/", "--")), self.cache_dir, repo_id)

    def blob_path(self, repo_id: str, etag: str) -> Path:
        blobs = self.repo_dir(repo_id) / "blobs"
        return _inside(blobs / _checked_etag(etag), blobs, "a file")

    def incomplete_path(self, repo_id: str, etag: str) -> Path:
        blobs = self.repo_dir(repo_id) / "blobs"
        return _inside(blobs / f"{_checked_etag(etag)}.incomplete", blobs, "a partial file")

    def snapshot_path(self, repo_id: str, commit: str, filename: str) -> Path:
        snapshots = self.repo_dir(repo_id) / "snapshots"
        try:
            check_relative_name(filename, "The file name")
        except ValueError as exc:
            raise DownloadError(ErrorKind.SERVER, f"{exc}; nothing was written.") from None
        return _inside(snapshots / _checked_commit(commit) / filename, snapshots, filename)

    def refs_path(self, repo_id: str, revision: str) -> Path:
        refs = self.repo_dir(repo_id) / "refs"
        try:
            check_relative_name(revision, "The revision")
        except ValueError as exc:
            raise DownloadError(ErrorKind.SERVER, f"{exc}; nothing was written.") from None
        return _inside(refs / revision, refs, f"the revision {revision!r}")

    def _bytes_on_disk(self, repo_id: str, etag: str | None, size: int) -> int:
        if not etag:
            return 0
        if self.blob_path(repo_id, etag).exists():
            return size
        try:
            return self.incomplete_path(repo_id, etag).stat().st_size
        except OSError:
            return 0

    def _read_state(self, request: DownloadRequest) -> dict[str, Any] | None:
        try:
            data = json.loads(self.state_path(request).read_text("utf-8"))
            return data if isinstance(data, dict) else None
        except (OSError, ValueError):
            return None

    def _write_state(
        self,
        request: DownloadRequest,
        remote: list[RemoteFile],
        status: str,
        placed: set[str] | frozenset[str] = frozenset(),
    ) -> None:
        folder = self.state_dir
        folder.mkdir(parents=True, exist_ok=True)
        state = {
            "version": _STATE_VERSION,
            "repo_id": request.repo_id,
            "revision": request.revision,
            "filenames": list(request.filenames),
            "status": status,
            "updated": time.time(),
            "cache_dir": str(self.cache_dir),
            "files": {
                r.filename: {
                    "etag": r.etag,
                    "size": r.size,
                    "sha256": r.sha256,
                    "commit": r.commit,
                    "placed": r.filename in placed,
                }
                for r in remote
            },
        }
        atomic_write(self.state_path(request), json.dumps(state, indent=1))

    # -- metadata ------------------------------------------------------------------------------
    def fetch_remote_files(self, request: DownloadRequest) -> list[RemoteFile]:
        """Ask the hub for commit, sizes, sha256 and ETags of the request's files (network!)."""
        if is_offline():
            raise DownloadError(
                ErrorKind.OFFLINE,
                "Downloads are off: HF_HUB_OFFLINE is set, so Harmonica does not "
                "contact Hugging Face. Unset it to download, or import a file you already have.",
            )
        from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url

        endpoint, token = self.endpoint, self.token
        info = HfApi(endpoint=endpoint, token=token).model_info(
            request.repo_id, revision=request.revision, files_metadata=True, timeout=self.connect_timeout
        )
        commit = _checked_commit(info.sha)  # becomes part of the resolve URL and, maybe, the snapshot folder
        siblings = {s.rfilename: s for s in (info.siblings or [])}
        remote: list[RemoteFile] = []
        for name in request.filenames:
            sibling = siblings.get(name)
            if sibling is None:
                raise DownloadError(
                    ErrorKind.NOT_FOUND,
                    f"{name} is not in {request.repo_id} (revision {request.revision}) on {endpoint}.",
                )
            lfs = sibling.lfs
            size = int(lfs.size) if lfs is not None else int(sibling.size or 0)
            sha = str(lfs.sha256).lower() if lfs is not None else None
            resolve_url = hf_hub_url(request.repo_id, name, revision=commit, endpoint=endpoint)
            meta = get_hf_file_metadata(resolve_url, token=token, timeout=self.connect_timeout, endpoint=endpoint)
            if not meta.etag:
                raise DownloadError(
                    ErrorKind.SERVER,
                    f"{endpoint} gave no ETag for {name}; cannot place it in the Hugging Face cache safely.",
                )
            etag = _checked_etag(meta.etag)
            if sha is not None and not _SHA256_RE.match(sha):
                raise DownloadError(
                    ErrorKind.SERVER,
                    f"{endpoint} gave an invalid sha256 for {name} ({sha[:80]!r}); nothing was written.",
                )
            if sha is None and _SHA256_RE.match(etag):
                sha = etag  # LFS files' ETag is their sha256
            final_size = int(meta.size) if meta.size is not None else size
            if final_size < 0:
                raise DownloadError(ErrorKind.SERVER, f"{endpoint} gave {name} a negative size; nothing was written.")
            remote.append(
                RemoteFile(
                    filename=name,
                    size=final_size,
                    sha256=sha,
                    etag=etag,
                    commit=_checked_commit(meta.commit_hash or commit),
                    url=_checked_location(meta.location, name),
                    xet=meta.xet_file_data,
                    send_auth=_same_or_hub_host(resolve_url, meta.location),
                )
            )
        return remote


def _checked_etag(etag: object) -> str:
    if not isinstance(etag, str) or not _ETAG_RE.match(etag):
        raise DownloadError(
            ErrorKind.SERVER,
            f"The server gave the file an invalid ETag ({str(etag)[:80]!r}); a Hugging Face ETag is a "
            "sha256 or sha1 in hex. Nothing was written. If you use a mirror (HF_ENDPOINT), it is "
            "broken or hostile.",
        )
    return etag


def _checked_commit(commit: object) -> str:
    if not isinstance(commit, str) or not _COMMIT_RE.match(commit):
        raise DownloadError(
            ErrorKind.SERVER,
            f"The server gave an invalid commit id ({str(commit)[:80]!r}); a Hugging Face commit is a "
            "40-character sha1 in hex. Nothing was written. If you use a mirror (HF_ENDPOINT), it is "
            "broken or hostile.",
        )
    return commit


def _checked_location(url: object, filename: str) -> str:
    """The download URL the server redirects to: http(s) with a host and no credentials."""
    from urllib.parse import urlsplit

    parts = urlsplit(url) if isinstance(url, str) else None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username is not None
        or any(ord(ch) < 33 for ch in str(url))
    ):
        raise DownloadError(
            ErrorKind.SERVER,
            f"The server sent {filename} to an invalid location ({str(url)[:120]!r}); only http and https "
            "addresses are followed. Nothing was downloaded.",
        )
    return str(url)


def _same_or_hub_host(url: str, target: str) -> bool:
    """Whether `target` is on the Hub (so the token may go there), as huggingface_hub decides it."""
    try:
        from huggingface_hub.utils._http import _is_same_or_hub_host

        return bool(_is_same_or_hub_host(url, target))
    except (ImportError, AttributeError):
        from urllib.parse import urlsplit

        return urlsplit(url).netloc == urlsplit(target).netloc


def _range_start(content_range: str | None) -> int | None:
    """`bytes 100-199/200` → 100."""
    m = re.match(r"^\s*bytes\s+(\d+)-", content_range or "")
    return int(m.group(1)) if m else None


def _classify(exc: BaseException, endpoint: str, what: str) -> DownloadError:
    """Turn a huggingface_hub / httpx exception into a message a user can act on."""
    import httpx2
    from huggingface_hub import errors

    if isinstance(exc, DownloadError):
        return exc
    if isinstance(exc, errors.OfflineModeIsEnabled):
        return DownloadError(ErrorKind.OFFLINE, "Downloads are off: HF_HUB_OFFLINE is set.")
    if isinstance(exc, errors.GatedRepoError):
        return DownloadError(ErrorKind.AUTH, f"{what} is gated: accept its terms on the Hub and set HF_TOKEN.")
    if isinstance(
        exc,
        (
            errors.RepositoryNotFoundError,
            errors.RevisionNotFoundError,
            errors.EntryNotFoundError,
            errors.RemoteEntryNotFoundError,
        ),
    ):
        return DownloadError(
            ErrorKind.NOT_FOUND,
            f"{what} was not found on {endpoint} (HTTP 404). Check the model name, or HF_ENDPOINT if you use a mirror.",
        )
    if isinstance(exc, errors.HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else 0
        if status in (401, 403):
            return DownloadError(
                ErrorKind.AUTH,
                f"{endpoint} refused access to {what}: {http_status_words(status)} (HTTP {status}). "
                "If the model needs a Hugging Face login, set HF_TOKEN and try again.",
            )
        if status == 404:
            return DownloadError(ErrorKind.NOT_FOUND, f"{what} was not found on {endpoint} (HTTP 404).")
        return DownloadError(ErrorKind.SERVER, _server_trouble(endpoint, what, status))
    if isinstance(exc, _RetryableStatus):
        return DownloadError(ErrorKind.SERVER, _server_trouble(endpoint, what, exc.status))
    if isinstance(exc, (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError, OSError)):
        return DownloadError(
            ErrorKind.NETWORK,
            f"Could not reach {endpoint} for {what}: {connection_problem(exc)}. Check that this computer is "
            "online; the bytes already downloaded are kept, so Resume continues from there.",
        )
    return DownloadError(ErrorKind.NETWORK, f"Download of {what} failed: {plain_text(exc)}")


def _server_trouble(endpoint: str, what: str, status: int) -> str:
    return (
        f"{endpoint} could not send {what}: {http_status_words(status)} (HTTP {status}). "
        "This is on the server's side; try again later."
    )


def _interruption(exc: BaseException, read_timeout: float) -> str:
    """What went wrong with a transfer that will be retried, in the user's words."""
    import httpx2

    if isinstance(exc, _RetryableStatus):
        words = http_status_words(exc.status)
        return f"{words[0].upper()}{words[1:]} (HTTP {exc.status})"
    if isinstance(exc, httpx2.ConnectTimeout):
        return "The server did not answer"
    if isinstance(exc, (httpx2.ReadTimeout, TimeoutError)):
        return f"The server stopped sending data for {read_timeout:g} s"
    if isinstance(exc, httpx2.ConnectError):
        words = connection_problem(exc)
        return f"Could not connect: {words}"
    return "The connection was interrupted"


def _retryable(exc: BaseException) -> bool:
    import httpx2
    from huggingface_hub import errors

    if isinstance(exc, (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError, _RetryableStatus)):
        return True
    if isinstance(exc, errors.HfHubHTTPError) and not isinstance(
        exc,
        (
            errors.RepositoryNotFoundError,
            errors.RevisionNotFoundError,
            errors.EntryNotFoundError,
            errors.GatedRepoError,
        ),
    ):
        status = exc.response.status_code if exc.response is not None else 0
        return status in (408, 429) or status >= 500
    return False


class DownloadJob:
    """One download (all parts of one model). `run()` blocks; `pause()`/`cancel()` may be called
    from any thread and take effect within about a second."""

    def __init__(self, manager: DownloadManager, request: DownloadRequest) -> None:
        self.manager = manager
        self.request = request
        self._stop = threading.Event()
        self._wake = threading.Event()  # retry_now(): end a back-off wait early
        self._stop_reason: Phase = Phase.PAUSED
        self._cleanup = False
        self._io_lock = threading.Lock()
        self._active_response: Any = None
        self._xet_active = False
        self._running = threading.Lock()
        self._runs = 0
        self._placed: set[str] = set()  # parts this download put in the cache (see DownloadResult)
        self._oversize = False  # the server sent more bytes than it announced for the current file

    # -- control (any thread) ------------------------------------------------------------------
    def pause(self) -> None:
        """Stop transferring; partial bytes and the state file stay so a later run resumes."""
        self._request_stop(Phase.PAUSED, cleanup=False)

    def cancel(self, *, cleanup: bool = False) -> None:
        """Stop and forget this download; with `cleanup`, delete its partial files too."""
        self._request_stop(Phase.CANCELLED, cleanup=cleanup)

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def _request_stop(self, reason: Phase, cleanup: bool) -> None:
        # Cancel wins over pause if both arrive.
        if not self._stop.is_set() or reason == Phase.CANCELLED:
            self._stop_reason = reason
            self._cleanup = cleanup
        self._stop.set()
        self._abort_io()

    def _abort_io(self) -> None:
        with self._io_lock:
            response = self._active_response
            xet = self._xet_active
        if response is not None:
            # A read blocked on a silent server only returns when its socket is shut down.
            try:
                stream = response.extensions.get("network_stream")
                sock = stream.get_extra_info("socket") if stream is not None else None
                if sock is not None:
                    sock.shutdown(socket.SHUT_RDWR)
            except (OSError, AttributeError):
                pass
        if xet:
            try:
                from huggingface_hub.utils._xet import abort_xet_session

                abort_xet_session()  # type: ignore[no-untyped-call]
            except Exception:  # noqa: BLE001 - best effort; the progress hook also stops it
                pass

    # -- generator form for UI workers ---------------------------------------------------------
    def events(self, cancel: threading.Event | None = None) -> Iterator[DownloadProgress | DownloadResult]:
        """Run in a helper thread and yield progress events, then the result (errors are raised).

        Made for app.ui.workers.GeneratorWorker, which passes its `cancel` event: setting it
        pauses the download (the partial bytes stay), so quitting the app never loses them.
        """

        def pause_if_cancelled() -> None:
            # Polled, not waited for: `cancel` must work while no event comes (a backoff wait).
            if cancel is not None and cancel.is_set() and not self._stop.is_set():
                self.pause()

        result = yield from iterate_callbacks(
            self.run, name=f"download-{self.request.job_id}", poll=pause_if_cancelled, stop=self.pause
        )
        yield result

    # -- the download --------------------------------------------------------------------------
    def run(self, on_progress: ProgressCallback | None = None) -> DownloadResult:
        """Download every part, verify it and place it in the HF cache. Raises DownloadError."""
        if not self._running.acquire(blocking=False):
            raise DownloadError(ErrorKind.BUSY, "This download is already running.")
        # A job may be run again after a pause ("Resume" in the UI): the old stop request is spent.
        # Only then: a pause that arrives before the first run has even started must still count.
        if self._runs:
            self._stop.clear()
            self._cleanup = False
        self._runs += 1
        started = time.monotonic()
        reporter = _Reporter(on_progress, 0, len(self.request.filenames), self.manager.progress_interval)
        remote: list[RemoteFile] = []
        finished = threading.Event()
        ticker = threading.Thread(target=self._tick, args=(reporter, finished), name="download-ticker", daemon=True)
        ticker.start()
        try:
            reporter.emit(Phase.METADATA, force=True, message="Asking Hugging Face for file sizes and checksums")
            remote = self._fetch_with_retry(reporter)
            reporter.total = sum(r.size for r in remote)
            self._discard_stale_partials(remote)
            self._save_state_quietly(remote, "running")
            self._check_disk(remote)
            self._check_stop()
            out: list[Path] = []
            for index, rf in enumerate(remote):
                reporter.file_index, reporter.filename, reporter.current = index, rf.filename, 0
                path, placed = self._download_one(rf, reporter)
                out.append(path)
                if placed:
                    self._placed.add(rf.filename)
                    self._save_state_quietly(remote, "running")
                reporter.done_before += rf.size
                reporter.current = 0
            self.manager.state_path(self.request).unlink(missing_ok=True)
            reporter.emit(Phase.DONE, force=True, message="Download complete and verified")
            ours = tuple(p for p, rf in zip(out, remote, strict=False) if rf.filename in self._placed)
            return DownloadResult(Phase.DONE, tuple(out), reporter.transferred, time.monotonic() - started, ours)
        except _Stopped:
            return self._finish_stopped(remote, reporter, started)
        except DownloadError as exc:
            if self._stop.is_set() and exc.kind in (ErrorKind.NETWORK, ErrorKind.SERVER):
                return self._finish_stopped(remote, reporter, started)
            if exc.kind == ErrorKind.CHECKSUM:
                # The damaged bytes are gone; there is nothing left to resume.
                self.manager.state_path(self.request).unlink(missing_ok=True)
            elif remote:
                self._save_state_quietly(remote, "failed")
            reporter.emit(Phase.FAILED, force=True, message=exc.message)
            raise
        except OSError as exc:
            # The cache folder itself is unusable (permissions, read-only or missing drive).
            error = DownloadError(
                ErrorKind.LOCAL_IO,
                f"Could not write to the Hugging Face cache at "
                f"{self.manager.cache_dir}: {describe_os_error(exc)}. Check that the folder is writable, or set "
                "HF_HOME to another folder.",
            )
            reporter.emit(Phase.FAILED, force=True, message=error.message)
            raise error from exc
        finally:
            finished.set()
            self._running.release()

    @staticmethod
    def _tick(reporter: _Reporter, finished: threading.Event, quiet_s: float = 0.5) -> None:
        while not finished.wait(quiet_s):
            reporter.tick(quiet_s)

    def _finish_stopped(self, remote: list[RemoteFile], reporter: _Reporter, started: float) -> DownloadResult:
        reason = self._stop_reason
        if reason == Phase.CANCELLED:
            if self._cleanup:
                for rf in remote:
                    self.manager.incomplete_path(self.request.repo_id, rf.etag).unlink(missing_ok=True)
                    if rf.filename in self._placed:
                        self.manager._delete_placed(self.request.repo_id, rf.etag, rf.commit, rf.filename)
                self.manager.discard(self.request, delete_partial=True)
            else:
                self.manager.state_path(self.request).unlink(missing_ok=True)
            reporter.emit(Phase.CANCELLED, force=True, message="Download cancelled")
        else:
            if remote:
                self._save_state_quietly(remote, "paused")
            reporter.emit(Phase.PAUSED, force=True, message="Paused; resume continues where it stopped")
        return DownloadResult(reason, (), reporter.transferred, time.monotonic() - started)

    def _save_state_quietly(self, remote: list[RemoteFile], status: str) -> None:
        try:
            self.manager._write_state(self.request, remote, status, self._placed)
        except OSError:
            pass  # losing the resume offer is better than hiding the real error

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise _Stopped

    def _backoff_delay(self, attempt: int) -> float:
        m = self.manager
        delay = min(m.backoff_max, m.backoff_base * (2.0 ** (attempt - 1)))
        return delay * (0.75 + 0.5 * random.random())  # jitter so many clients don't retry in lockstep

    def retry_now(self) -> None:
        """Skip the rest of a back-off wait: the next attempt starts at once (the user's "Retry now")."""
        self._wake.set()

    def _sleep_backoff(self, attempt: int, delay: float | None = None) -> None:
        if delay is None:
            delay = self._backoff_delay(attempt)
        end = time.monotonic() + delay
        while (left := end - time.monotonic()) > 0:
            if self._stop.wait(min(left, 0.1)):
                raise _Stopped
            if self._wake.is_set():
                break
        self._wake.clear()

    def _fetch_with_retry(self, reporter: _Reporter) -> list[RemoteFile]:
        what = f"{self.request.repo_id}/{self.request.filenames[0]}"
        attempt = 0
        while True:
            self._check_stop()
            try:
                return self.manager.fetch_remote_files(self.request)
            except DownloadError:
                raise
            except Exception as exc:
                if self._stop.is_set():
                    raise _Stopped from exc
                attempt += 1
                if not _retryable(exc) or attempt > self.manager.max_retries:
                    raise _classify(exc, self.manager.endpoint, what) from exc
                reporter.emit(
                    Phase.RETRYING,
                    force=True,
                    attempt=attempt,
                    message=f"{_classify(exc, self.manager.endpoint, what).message} Retrying…",
                )
                self._sleep_backoff(attempt)

    def _discard_stale_partials(self, remote: list[RemoteFile]) -> None:
        """If the hub now has a different version of a file, its old partial bytes are useless."""
        state = self.manager._read_state(self.request)
        if not state:
            return
        current = {r.filename: r.etag for r in remote}
        for name, info in state.get("files", {}).items():
            old = info.get("etag")
            if old and current.get(name) not in (None, old):
                try:
                    self.manager.incomplete_path(self.request.repo_id, old).unlink(missing_ok=True)
                except DownloadError:
                    continue  # a tampered state file names no file of ours
            elif old and info.get("placed"):
                self._placed.add(name)  # finished by Harmonica in an earlier session

    def _check_disk(self, remote: list[RemoteFile]) -> None:
        m = self.manager
        needed = sum(max(0, rf.size - m._bytes_on_disk(self.request.repo_id, rf.etag, rf.size)) for rf in remote)
        if needed == 0:
            return
        target = m.repo_dir(self.request.repo_id)
        try:
            free = m.disk_free(target)
        except OSError:
            return  # cannot measure: let the write itself report a full disk
        if free < needed + DISK_MARGIN_BYTES:
            raise DownloadError(
                ErrorKind.DISK_SPACE,
                (
                    f"Not enough disk space: the download needs {human_bytes(needed)} more (plus "
                    f"{human_bytes(DISK_MARGIN_BYTES)} to spare) in {m.cache_dir}, but only {human_bytes(free)} is free. "
                    f"Free up {human_bytes(needed + DISK_MARGIN_BYTES - free)} or set HF_HOME to a larger drive."
                ),
            )

    def _download_one(self, rf: RemoteFile, reporter: _Reporter) -> tuple[Path, bool]:
        """Place one part in the cache; returns its snapshot path and whether this call put it there."""
        m = self.manager
        repo = self.request.repo_id
        blob = m.blob_path(repo, rf.etag)
        snapshot = m.snapshot_path(repo, rf.commit, rf.filename)
        if blob.exists() and blob.stat().st_size == rf.size:
            reporter.current = rf.size
            self._link(blob, snapshot, rf)
            return snapshot, False
        if snapshot.is_file() and not snapshot.is_symlink() and snapshot.stat().st_size == rf.size:
            reporter.current = rf.size  # a cache without symlinks keeps the file in the snapshot
            return snapshot, False
        blob.parent.mkdir(parents=True, exist_ok=True)
        if m.use_xet and rf.xet is not None and xet_available() and not m.incomplete_path(repo, rf.etag).exists():
            # hf_hub_download takes the cache's file lock itself (the same one used below).
            self._transfer_xet(rf, reporter)
            self._link(blob, snapshot, rf)
            return snapshot, True
        import filelock

        # huggingface_hub's own lock for this blob: a concurrent hf_hub_download of the same file
        # (another tool) and this download never write the cache at the same time.
        lock_path = m.cache_dir / ".locks" / m.repo_dir(repo).name / f"{rf.etag}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(lock_path))
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            raise DownloadError(
                ErrorKind.BUSY,
                f"{rf.filename} is being downloaded by another program or another "
                "Harmonica window. Wait for it to finish, then try again.",
            ) from None
        try:
            self._transfer_http(rf, reporter)
            self._link(blob, snapshot, rf)
        finally:
            lock.release()
        return snapshot, True

    def _link(self, blob: Path, snapshot: Path, rf: RemoteFile) -> None:
        """Point snapshots/<commit>/<file> at the blob and refs/<revision> at the commit."""
        try:
            snapshot.parent.mkdir(parents=True, exist_ok=True)
            if not snapshot.exists():
                if snapshot.is_symlink():
                    snapshot.unlink()
                try:
                    snapshot.symlink_to(os.path.relpath(blob, snapshot.parent))
                except OSError:
                    # No symlinks (Windows without developer mode): huggingface_hub then keeps the
                    # file in the snapshot folder itself; do the same.
                    os.replace(blob, snapshot)
            if self.request.revision != rf.commit:
                refs = self.manager.refs_path(self.request.repo_id, self.request.revision)
                refs.parent.mkdir(parents=True, exist_ok=True)
                refs.write_text(rf.commit)
        except OSError as exc:
            raise DownloadError(
                ErrorKind.LOCAL_IO,
                f"Could not place {rf.filename} in the Hugging Face cache ({self.manager.cache_dir}): {describe_os_error(exc)}",
            ) from exc

    # -- plain HTTP ----------------------------------------------------------------------------
    def _transfer_http(self, rf: RemoteFile, reporter: _Reporter) -> None:
        m = self.manager
        incomplete = m.incomplete_path(self.request.repo_id, rf.etag)
        self._oversize = False
        hasher = _StreamHasher(self._hash_partial(incomplete, rf, reporter))
        try:
            self._http_loop(rf, reporter, incomplete, hasher)
            actual = hasher.hexdigest()
        finally:
            hasher.close()
        size = incomplete.stat().st_size
        if size != rf.size:
            incomplete.unlink(missing_ok=True)
            raise DownloadError(
                ErrorKind.CHECKSUM,
                f"{rf.filename} arrived with {size} bytes instead of {rf.size}; "
                "the file was deleted. Download it again.",
            )
        reporter.emit(
            Phase.VERIFYING, force=True, checked=rf.size, check_total=rf.size, message=f"Verifying {rf.filename}"
        )
        self._verify(actual, incomplete, rf)
        os.replace(incomplete, m.blob_path(self.request.repo_id, rf.etag))

    def _http_loop(self, rf: RemoteFile, reporter: _Reporter, incomplete: Path, hasher: _StreamHasher) -> None:
        import httpx2
        from huggingface_hub import errors as hf_errors
        from huggingface_hub.utils import build_hf_headers, get_session

        m = self.manager
        all_headers = build_hf_headers(token=m.token)
        all_headers["Accept-Encoding"] = "identity"  # byte offsets must be offsets in the file
        timeout = httpx2.Timeout(m.read_timeout, connect=m.connect_timeout)
        attempt = 0
        # The Hub redirects to signed CDN URLs that expire (about an hour): a long download asks
        # for a fresh one after a network error, and once when the CDN refuses access.
        stale_url = False
        refreshed_after_refusal = False
        reporter.reset_speed()
        while True:
            self._check_stop()
            if stale_url:
                rf = self._fresh_location(rf)
                stale_url = False
            have = incomplete.stat().st_size if incomplete.exists() else 0
            reporter.current = have
            if have >= rf.size:
                break
            request_headers = {k: v for k, v in all_headers.items() if rf.send_auth or k.lower() != "authorization"}
            if have:
                request_headers["Range"] = f"bytes={have}-"
            try:
                with get_session().stream(
                    "GET", rf.url, headers=request_headers, timeout=timeout, follow_redirects=True
                ) as response:
                    with self._io_lock:
                        self._active_response = response
                    if self._stop.is_set():  # pause arrived while connecting
                        raise _Stopped
                    status = response.status_code
                    if status == 416 and have:
                        # Our partial is not a prefix of the server's file (changed upstream).
                        incomplete.unlink(missing_ok=True)
                        hasher.reset()
                        continue
                    if status in (408, 429) or status >= 500:
                        raise _RetryableStatus(status)
                    if status in (401, 403, 410) and not refreshed_after_refusal:
                        refreshed_after_refusal = stale_url = True
                        continue
                    if status >= 400:
                        from huggingface_hub.utils import hf_raise_for_status

                        response.read()
                        hf_raise_for_status(response)
                    if status == 206 and _range_start(response.headers.get("Content-Range")) != have:
                        # Bytes from somewhere else in the file: appending them would corrupt it.
                        incomplete.unlink(missing_ok=True)
                        hasher.reset()
                        continue
                    mode = "ab"
                    if have and status == 200:
                        # The server ignored Range: start over instead of appending a second copy.
                        mode, have = "wb", 0
                        hasher.reset()
                        reporter.current = 0
                    with incomplete.open(mode) as f:
                        # Never more than the announced size: a server that keeps sending must not
                        # fill the disk; what it sent too much is cut off, and the hash decides.
                        room = rf.size - have
                        for chunk in response.iter_raw():
                            if len(chunk) > room:
                                chunk = chunk[:room]
                                self._oversize = True
                            if chunk:
                                f.write(chunk)
                                hasher.update(chunk)
                                reporter.add(len(chunk))
                                room -= len(chunk)
                            attempt = 0  # progress resets the retry budget
                            refreshed_after_refusal = False
                            if self._stop.is_set():
                                raise _Stopped
                            if self._oversize:
                                break
            except _Stopped:
                raise
            except Exception as exc:
                if self._stop.is_set():
                    raise _Stopped from exc
                if _retryable(exc) or isinstance(exc, (ConnectionError, TimeoutError)):
                    attempt = self._retry_or_raise(exc, attempt, rf, reporter)
                    stale_url = rf.url != self._resolve_url(rf)
                    continue
                if isinstance(exc, OSError) and not isinstance(exc, hf_errors.HfHubHTTPError):
                    raise DownloadError(
                        ErrorKind.LOCAL_IO,
                        f"Could not write {incomplete}: {describe_os_error(exc)}. The partial file is kept; free some space and resume.",
                    ) from exc
                raise _classify(exc, m.endpoint, rf.filename) from exc
            finally:
                with self._io_lock:
                    self._active_response = None

    def _resolve_url(self, rf: RemoteFile) -> str:
        from huggingface_hub import hf_hub_url

        return str(hf_hub_url(self.request.repo_id, rf.filename, revision=rf.commit, endpoint=self.manager.endpoint))

    def _fresh_location(self, rf: RemoteFile) -> RemoteFile:
        """Ask the Hub again where the file is (a new signed URL); keep the old one if that fails."""
        from dataclasses import replace

        from huggingface_hub import get_hf_file_metadata

        resolve_url = self._resolve_url(rf)
        try:
            meta = get_hf_file_metadata(
                resolve_url,
                token=self.manager.token,
                timeout=self.manager.connect_timeout,
                endpoint=self.manager.endpoint,
            )
        except Exception:  # noqa: BLE001 - the next GET reports the real problem
            return rf
        if meta.etag and meta.etag != rf.etag:
            raise DownloadError(
                ErrorKind.SERVER, f"{rf.filename} changed on the Hub during the download; start the download again."
            )
        location = _checked_location(meta.location, rf.filename)
        return replace(rf, url=location, send_auth=_same_or_hub_host(resolve_url, location))

    def _retry_or_raise(self, exc: BaseException, attempt: int, rf: RemoteFile, reporter: _Reporter) -> int:
        attempt += 1
        if attempt > self.manager.max_retries:
            err = _classify(exc, self.manager.endpoint, rf.filename)
            raise DownloadError(
                err.kind,
                f"{err.message} Gave up after {self.manager.max_retries} retries; the "
                "partial file is kept, so resuming later continues from where it stopped.",
            ) from exc
        delay = self._backoff_delay(attempt)
        wait = f"{delay:.0f} s" if delay >= 1 else "a moment"
        reporter.emit(
            Phase.RETRYING,
            force=True,
            attempt=attempt,
            message=f"{_interruption(exc, self.manager.read_timeout)}; trying again in {wait} "
            f"(retry {attempt} of {self.manager.max_retries})…",
        )
        reporter.reset_speed()
        self._sleep_backoff(attempt, delay)
        return attempt

    def _hash_partial(self, incomplete: Path, rf: RemoteFile, reporter: _Reporter) -> Any:
        digest = hashlib.sha256()
        try:
            have = incomplete.stat().st_size
        except OSError:
            return digest
        if have > rf.size:
            incomplete.unlink()
            return digest
        reporter.current = have
        checked = 0

        def on_bytes(n: int) -> None:
            nonlocal checked
            checked += n
            reporter.emit(
                Phase.CHECKING,
                checked=checked,
                check_total=have,
                message=f"Checking the {human_bytes(have)} already downloaded",
            )

        reporter.emit(
            Phase.CHECKING,
            force=True,
            checked=0,
            check_total=have,
            message=f"Checking the {human_bytes(have)} already downloaded",
        )
        with incomplete.open("rb") as f:
            remaining = have
            while remaining > 0:
                block = f.read(min(4 << 20, remaining))
                if not block:
                    break
                digest.update(block)
                remaining -= len(block)
                on_bytes(len(block))
                self._check_stop()
        return digest

    def _verify(self, actual: str, file: Path, rf: RemoteFile) -> None:
        expected = rf.sha256
        oversize, self._oversize = self._oversize, False
        if expected is None:
            if oversize:  # nothing to check the cut-off bytes against: refuse them
                file.unlink(missing_ok=True)
                raise DownloadError(
                    ErrorKind.CHECKSUM,
                    f"The server sent more than the {rf.size:,} bytes it announced for {rf.filename}, and no "
                    "checksum is published to check them; the file was deleted. Download it again.",
                )
            return  # non-LFS file: the hub publishes no sha256 (never the case for GGUF weights)
        if actual != expected:
            file.unlink(missing_ok=True)
            why = (
                f"the server sent more than the {rf.size:,} bytes it announced, and the first {rf.size:,} "
                if oversize
                else ""
            )
            raise DownloadError(
                ErrorKind.CHECKSUM,
                (
                    f"{rf.filename} is damaged: {why}its SHA-256 ({actual[:12]}…) is not the one Hugging Face lists "
                    f"({expected[:12]}…). The damaged file was deleted. Download it again."
                ),
            )

    # -- Xet -----------------------------------------------------------------------------------
    def _transfer_xet(self, rf: RemoteFile, reporter: _Reporter) -> None:
        from huggingface_hub import hf_hub_download
        from tqdm.auto import tqdm

        job = self

        class _Hook(tqdm):  # type: ignore[misc]
            """Receives huggingface_hub's progress; forwards file bytes, stops on pause/cancel."""

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                kwargs["disable"] = True
                self._forward = "downloading bytes" not in str(kwargs.get("desc") or "")
                super().__init__(*args, **kwargs)

            def update(self, n: float | None = 1) -> bool | None:
                if self._forward and n:
                    reporter.add(int(n))
                if job._stop.is_set():
                    raise _Stopped
                return None

        errors: list[BaseException] = []
        results: list[str] = []

        def target() -> None:
            try:
                results.append(
                    hf_hub_download(
                        self.request.repo_id,
                        rf.filename,
                        revision=rf.commit,
                        cache_dir=self.manager.cache_dir,
                        endpoint=self.manager.endpoint,
                        token=self.manager.token,
                        tqdm_class=_Hook,
                    )
                )
            except BaseException as exc:  # noqa: BLE001 - handed to the job thread
                errors.append(exc)

        with self._io_lock:
            self._xet_active = True
        thread = threading.Thread(target=target, name="xet-download", daemon=True)
        try:
            thread.start()
            while thread.is_alive():
                thread.join(timeout=0.2)
                if self._stop.is_set():
                    self._abort_io()
                    thread.join(timeout=10)
                    raise _Stopped
        finally:
            with self._io_lock:
                self._xet_active = False
        if errors:
            exc = errors[0]
            if isinstance(exc, _Stopped):
                raise exc
            raise _classify(exc, self.manager.endpoint, rf.filename) from exc
        # huggingface_hub names the blob after the ETag of its own HEAD request, which it does not
        # check: the file must still be in this repo's folder of the cache.
        _inside(Path(results[0]), self.manager.repo_dir(self.request.repo_id) / "snapshots", rf.filename)
        _inside(Path(results[0]).resolve(), self.manager.repo_dir(self.request.repo_id).resolve(), rf.filename)
        # The blob, or the snapshot file itself where the cache cannot use symlinks.
        blob = Path(results[0]).resolve()
        checked = 0

        def on_bytes(n: int) -> None:
            nonlocal checked
            checked += n
            reporter.emit(Phase.VERIFYING, checked=checked, check_total=rf.size, message=f"Verifying {rf.filename}")

        actual = sha256_file(blob, on_bytes=on_bytes, should_stop=self._stop.is_set)
        if actual is None:
            raise _Stopped
        if rf.sha256 is not None and actual != rf.sha256:
            Path(results[0]).unlink(missing_ok=True)  # the snapshot link must not point at a deleted blob
        self._verify(actual, blob, rf)


__all__ = [
    "DISK_MARGIN_BYTES",
    "DownloadError",
    "DownloadJob",
    "DownloadManager",
    "DownloadProgress",
    "DownloadRequest",
    "DownloadResult",
    "ErrorKind",
    "PendingDownload",
    "Phase",
    "RemoteFile",
    "VerifyReport",
    "expected_sha256",
    "human_bytes",
    "is_offline",
    "verify_events",
    "verify_files",
    "xet_available",
]
