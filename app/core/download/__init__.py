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

The package is split by job: ``errors`` (kinds, and failures in words), ``validation`` (names from
servers and state files), ``progress`` (phases, snapshots, the reporter), ``records`` (request,
remote file, result, pending download), ``environment`` (offline mode, Xet, free disk space),
``verify`` (sha256 of files on disk and while bytes arrive), ``manager`` (settings, cache layout,
state files, hub metadata), ``control`` (pause, cancel, back-off), ``http_transfer`` and
``xet_transfer`` (one file each way) and ``job`` (the run that puts them together). Import from
``app.core.download``; the modules are its inside.
"""

from __future__ import annotations

from app.core.download.environment import DISK_MARGIN_BYTES, human_bytes, is_offline, xet_available
from app.core.download.errors import DownloadError, ErrorKind
from app.core.download.errors import _classify as _classify
from app.core.download.errors import _interruption as _interruption
from app.core.download.job import DownloadJob
from app.core.download.manager import DownloadManager
from app.core.download.progress import DownloadProgress, Phase
from app.core.download.progress import ProgressCallback as ProgressCallback
from app.core.download.records import DiskFree as DiskFree
from app.core.download.records import DownloadRequest, DownloadResult, PendingDownload, RemoteFile
from app.core.download.validation import check_relative_name as check_relative_name
from app.core.download.validation import check_repo_id as check_repo_id
from app.core.download.verify import VerifyReport, expected_sha256, verify_events, verify_files

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
