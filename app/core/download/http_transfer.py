"""Plain HTTP transfer of one file: append to blobs/<etag>.incomplete, resume with Range, retry, hash on the fly."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from app.core.download.control import _JobControl
from app.core.download.environment import human_bytes
from app.core.download.errors import (
    DownloadError,
    ErrorKind,
    _classify,
    _interruption,
    _retryable,
    _RetryableStatus,
    _Stopped,
)
from app.core.download.progress import Phase, _Reporter
from app.core.download.records import RemoteFile
from app.core.download.validation import _checked_location, _same_or_hub_host
from app.core.download.verify import _StreamHasher
from app.core.plain_errors import describe_os_error


def _range_start(content_range: str | None) -> int | None:
    """`bytes 100-199/200` → 100."""
    m = re.match(r"^\s*bytes\s+(\d+)-", content_range or "")
    return int(m.group(1)) if m else None


class _HttpTransfer(_JobControl):
    """The plain HTTP path of `DownloadJob`: resumable, interruptible, verified while it arrives."""

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
