"""Xet transfer of one file (opt-in): hf_hub_download with a progress hook that pauses, then a sha256 pass."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from app.core.download.control import _JobControl
from app.core.download.errors import _classify, _Stopped
from app.core.download.progress import Phase, _Reporter
from app.core.download.records import RemoteFile
from app.core.download.validation import _inside
from app.core.fsutil import sha256_file


class _XetTransfer(_JobControl):
    """The Xet path of `DownloadJob` (see the package notes for when it is taken)."""

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
