"""The download manager: settings resolved at call time, HF cache layout, state of unfinished downloads, metadata."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from app.core import paths
from app.core.download.environment import _default_disk_free, is_offline
from app.core.download.errors import DownloadError, ErrorKind
from app.core.download.job import DownloadJob
from app.core.download.records import DiskFree, DownloadRequest, PendingDownload, RemoteFile
from app.core.download.validation import (
    _SHA256_RE,
    _checked_commit,
    _checked_etag,
    _checked_location,
    _inside,
    _same_or_hub_host,
    check_relative_name,
    check_repo_id,
)
from app.core.fsutil import atomic_write

_STATE_VERSION = 1


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
