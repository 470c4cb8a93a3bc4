"""Tests for app.core.download against a real loopback HTTP server with injected faults."""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.core.download import (
    DownloadError,
    DownloadManager,
    DownloadProgress,
    DownloadRequest,
    DownloadResult,
    ErrorKind,
    Phase,
)
from tests.fixtures.hf_server import FakeHub, Fault, make_gguf_bytes

REPO = "ggml-org/tiny-GGUF"
FILE = "tiny.gguf"


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as server:
        yield server


def make_manager(hub: FakeHub, **overrides: object) -> DownloadManager:
    settings: dict[str, object] = dict(
        endpoint=hub.url, read_timeout=0.5, connect_timeout=2.0, backoff_base=0.01, backoff_max=0.05, max_retries=3
    )
    settings.update(overrides)
    return DownloadManager(**settings)  # type: ignore[arg-type]


def publish(hub: FakeHub, size: int = 400_000, name: str = FILE, seed: int = 0) -> bytes:
    data = make_gguf_bytes(size, seed)
    hub.add_file(REPO, name, data)
    return data


def gets(hub: FakeHub) -> list[str | None]:
    """Range headers of the file GETs, in order."""
    return [r.range for r in hub.requests("GET") if "/resolve/" in r.path or "/cdn/" in r.path]


def run_in_thread(job: object, events: list[DownloadProgress]) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []

    def target() -> None:
        try:
            out.append(job.run(events.append))  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - inspected by the test
            out.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def wait_for(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


@pytest.mark.parametrize("redirect", [False, True], ids=["direct", "cdn-redirect"])
def test_download_lands_in_standard_hf_cache(hub: FakeHub, redirect: bool) -> None:
    from huggingface_hub import scan_cache_dir, try_to_load_from_cache

    hub.redirect = redirect
    data = publish(hub)
    manager = make_manager(hub)
    events: list[DownloadProgress] = []
    result = manager.job(DownloadRequest(REPO, (FILE,))).run(events.append)

    assert result.status == Phase.DONE
    assert result.path is not None and result.path.read_bytes() == data
    assert result.bytes_transferred == len(data)
    # Other tools find the file where huggingface_hub would have put it.
    cached = try_to_load_from_cache(REPO, FILE, cache_dir=manager.cache_dir)
    assert isinstance(cached, str) and Path(cached).read_bytes() == data
    repo = next(r for r in scan_cache_dir(manager.cache_dir).repos if r.repo_id == REPO)
    assert repo.size_on_disk == len(data)
    assert (manager.repo_dir(REPO) / "refs" / "main").read_text() == hub.commit(REPO)
    assert not list(manager.repo_dir(REPO).glob("blobs/*.incomplete"))
    phases = [e.phase for e in events]
    assert phases[0] == Phase.METADATA and phases[-1] == Phase.DONE and Phase.VERIFYING in phases
    assert events[-1].downloaded == events[-1].total == len(data)
    assert not manager.state_path(DownloadRequest(REPO, (FILE,))).exists()


def test_already_cached_file_is_not_downloaded_again(hub: FakeHub) -> None:
    publish(hub)
    manager = make_manager(hub)
    manager.job(DownloadRequest(REPO, (FILE,))).run()
    before = len(gets(hub))
    result = manager.job(DownloadRequest(REPO, (FILE,))).run()
    assert result.status == Phase.DONE and result.bytes_transferred == 0
    assert len(gets(hub)) == before


def test_dropped_connection_resumes_with_range_and_bytes_verified(hub: FakeHub) -> None:
    data = publish(hub, 500_000)
    hub.inject(Fault("drop", after_bytes=123_457))
    events: list[DownloadProgress] = []
    result = make_manager(hub).job(DownloadRequest(REPO, (FILE,))).run(events.append)
    assert result.path is not None and result.path.read_bytes() == data
    assert gets(hub) == [None, "bytes=123457-"]
    [retry] = [e for e in events if e.phase == Phase.RETRYING]
    # In words a user understands, with when and how often it tries again.
    assert retry.message.startswith("The connection was interrupted; trying again in ")
    assert retry.message.endswith("(retry 1 of 3)…") and retry.attempt == 1
    assert hashlib.sha256(result.path.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()


def test_stall_is_detected_and_retried(hub: FakeHub) -> None:
    data = publish(hub, 300_000)
    hub.inject(Fault("stall", after_bytes=100_000, seconds=10))
    started = time.monotonic()
    events: list[DownloadProgress] = []
    result = make_manager(hub, read_timeout=0.3).job(DownloadRequest(REPO, (FILE,))).run(events.append)
    assert time.monotonic() - started < 5, "a stall must end at the read timeout, not the server's whim"
    assert [e.message.split(";")[0] for e in events if e.phase == Phase.RETRYING] == [
        "The server stopped sending data for 0.3 s"
    ]
    assert result.path is not None and result.path.read_bytes() == data
    assert gets(hub) == [None, "bytes=100000-"]


def test_retries_give_up_with_a_clear_message_and_keep_the_partial(hub: FakeHub) -> None:
    publish(hub, 300_000)
    hub.inject(Fault("drop", after_bytes=50_000))  # faults apply in the order injected
    hub.inject(Fault("drop", after_bytes=0, times=-1))
    manager = make_manager(hub, max_retries=2)
    request = DownloadRequest(REPO, (FILE,))
    with pytest.raises(DownloadError) as info:
        manager.job(request).run()
    assert info.value.kind == ErrorKind.NETWORK and info.value.can_retry
    assert "Gave up after 2 retries" in info.value.message
    pending = manager.pending()
    assert [p.request for p in pending] == [request]
    assert pending[0].status == "failed" and pending[0].downloaded == 50_000


def test_file_missing_on_server_gives_not_found(hub: FakeHub) -> None:
    publish(hub)
    with pytest.raises(DownloadError) as info:
        make_manager(hub).job(DownloadRequest(REPO, ("nope.gguf",))).run()
    assert info.value.kind == ErrorKind.NOT_FOUND
    assert "nope.gguf" in info.value.message and REPO in info.value.message


def test_unknown_repo_gives_404_message(hub: FakeHub) -> None:
    with pytest.raises(DownloadError) as info:
        make_manager(hub).job(DownloadRequest("nobody/none", (FILE,))).run()
    assert info.value.kind == ErrorKind.NOT_FOUND
    assert "404" in info.value.message and hub.url in info.value.message


def test_404_on_the_file_transfer_is_not_retried(hub: FakeHub) -> None:
    publish(hub)
    hub.inject(Fault("status", status=404, times=-1))
    with pytest.raises(DownloadError) as info:
        make_manager(hub).job(DownloadRequest(REPO, (FILE,))).run()
    assert info.value.kind == ErrorKind.NOT_FOUND and "404" in info.value.message
    assert len(gets(hub)) == 1


def test_persistent_500_gives_a_server_message(hub: FakeHub) -> None:
    publish(hub)
    hub.inject(Fault("status", target="API", status=500, times=-1))
    with pytest.raises(DownloadError) as info:
        make_manager(hub, max_retries=2).job(DownloadRequest(REPO, (FILE,))).run()
    assert info.value.kind == ErrorKind.SERVER
    assert "HTTP 500" in info.value.message and "try again later" in info.value.message
    assert len(hub.requests("GET")) == 3  # first try + 2 retries, all on the metadata API


def test_transient_500_on_transfer_is_retried(hub: FakeHub) -> None:
    data = publish(hub)
    hub.inject(Fault("status", status=503))
    result = make_manager(hub).job(DownloadRequest(REPO, (FILE,))).run()
    assert result.path is not None and result.path.read_bytes() == data
    assert [r.status for r in hub.requests("GET") if "/resolve/" in r.path] == [503, 200]


def test_wrong_bytes_are_refused_by_checksum_and_redownload_works(hub: FakeHub) -> None:
    data = publish(hub)
    hub.inject(Fault("corrupt"))
    manager = make_manager(hub)
    request = DownloadRequest(REPO, (FILE,))
    with pytest.raises(DownloadError) as info:
        manager.job(request).run()
    assert info.value.kind == ErrorKind.CHECKSUM and info.value.can_retry
    assert "SHA-256" in info.value.message and "deleted" in info.value.message
    assert not list(manager.repo_dir(REPO).glob("blobs/*"))  # nothing damaged stays in the cache
    assert manager.pending() == []
    result = manager.job(request).run()  # "download again"
    assert result.path is not None and result.path.read_bytes() == data


def test_too_little_disk_space_refuses_before_any_byte(hub: FakeHub) -> None:
    publish(hub, 400_000)
    manager = make_manager(hub, disk_free=lambda path: 5 * 1024**2)
    with pytest.raises(DownloadError) as info:
        manager.job(DownloadRequest(REPO, (FILE,))).run()
    assert info.value.kind == ErrorKind.DISK_SPACE
    message = info.value.message
    assert "needs 390.6 KiB more" in message and "only 5 MiB is free" in message
    assert gets(hub) == []


def test_offline_mode_refuses_without_network(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    publish(hub)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError) as info:
        make_manager(hub).job(DownloadRequest(REPO, (FILE,))).run()
    assert info.value.kind == ErrorKind.OFFLINE and "HF_HUB_OFFLINE" in info.value.message
    assert hub.requests() == []


def test_hf_endpoint_and_token_from_environment(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    data = publish(hub)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_TOKEN", "hf_secret_for_test")
    result = DownloadManager(read_timeout=1, backoff_base=0.01).job(DownloadRequest(REPO, (FILE,))).run()
    assert result.path is not None and result.path.read_bytes() == data
    assert hub.requests() and all(r.authorization == "Bearer hf_secret_for_test" for r in hub.requests())


def test_split_model_is_one_download_with_aggregate_progress(hub: FakeHub) -> None:
    names = tuple(f"big-0000{i}-of-00003.gguf" for i in (1, 2, 3))
    blobs = [publish(hub, 150_000 + i * 10_000, name, seed=i) for i, name in enumerate(names)]
    events: list[DownloadProgress] = []
    result = make_manager(hub, progress_interval=0).job(DownloadRequest(REPO, names)).run(events.append)
    assert [p.name for p in result.paths] == list(names)
    assert [p.read_bytes() for p in result.paths] == blobs
    total = sum(len(b) for b in blobs)
    assert {e.total for e in events if e.phase != Phase.METADATA} == {total}
    downloaded = [e.downloaded for e in events]
    assert downloaded == sorted(downloaded), "aggregate progress never goes backwards"
    assert {e.file_index for e in events if e.phase == Phase.DOWNLOADING} == {0, 1, 2}
    assert all(e.file_count == 3 for e in events)


def test_progress_is_throttled_to_ten_per_second(hub: FakeHub) -> None:
    hub.rate_bps = 2_000_000
    publish(hub, 2_000_000)
    events: list[tuple[float, DownloadProgress]] = []
    make_manager(hub).job(DownloadRequest(REPO, (FILE,))).run(lambda e: events.append((time.monotonic(), e)))
    downloading = [(t, e) for t, e in events if e.phase == Phase.DOWNLOADING]
    assert len(downloading) >= 5
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(downloading)]  # the first follows a phase change
    assert min(gaps) >= 0.099
    duration = events[-1][0] - events[0][0]
    assert len(events) <= duration * 10 + 5  # + the forced phase-change events
    middle = downloading[len(downloading) // 2][1]
    assert 500_000 < middle.speed_bps < 4_000_000 and middle.eta_s is not None and middle.eta_s > 0


def test_pause_interrupts_a_stalled_read_within_a_second(hub: FakeHub) -> None:
    publish(hub, 300_000)
    hub.inject(Fault("stall", after_bytes=100_000, seconds=20))
    manager = make_manager(hub, read_timeout=30)
    job = manager.job(DownloadRequest(REPO, (FILE,)))
    events: list[DownloadProgress] = []
    thread, out = run_in_thread(job, events)
    wait_for(lambda: any(e.downloaded >= 100_000 for e in events))
    paused_at = time.monotonic()
    job.pause()
    thread.join(timeout=3)
    assert time.monotonic() - paused_at < 1.0
    assert isinstance(out[0], DownloadResult) and out[0].status == Phase.PAUSED
    assert events[-1].phase == Phase.PAUSED


def test_resume_after_app_restart_continues_from_partial_bytes(hub: FakeHub) -> None:
    hub.rate_bps = 1_500_000
    data = publish(hub, 1_500_000)
    request = DownloadRequest(REPO, (FILE,))
    first = make_manager(hub)
    job = first.job(request)
    events: list[DownloadProgress] = []
    thread, out = run_in_thread(job, events)
    wait_for(lambda: any(e.downloaded >= 300_000 for e in events))
    job.pause()
    thread.join(timeout=3)
    assert isinstance(out[0], DownloadResult) and out[0].status == Phase.PAUSED
    partial = next(first.repo_dir(REPO).glob("blobs/*.incomplete"))
    have = partial.stat().st_size
    assert 300_000 <= have < len(data)
    state = json.loads(first.state_path(request).read_text())
    assert state["status"] == "paused"

    # A new process: a fresh manager learns about the paused download from disk only.
    hub.rate_bps = None
    second = make_manager(hub)
    pending = second.pending()
    assert len(pending) == 1 and pending[0].request == request
    assert pending[0].downloaded == have and pending[0].total == len(data)
    phases: list[Phase] = []
    result = second.job(pending[0].request).run(lambda e: phases.append(e.phase))
    assert result.path is not None and result.path.read_bytes() == data
    assert gets(hub)[-1] == f"bytes={have}-"
    assert result.bytes_transferred == len(data) - have
    assert Phase.CHECKING in phases  # the kept prefix was hashed before continuing
    assert second.pending() == []


def test_cancel_with_cleanup_removes_partial_files(hub: FakeHub) -> None:
    hub.rate_bps = 1_000_000
    publish(hub, 1_000_000)
    manager = make_manager(hub)
    request = DownloadRequest(REPO, (FILE,))
    job = manager.job(request)
    events: list[DownloadProgress] = []
    thread, out = run_in_thread(job, events)
    wait_for(lambda: any(e.downloaded > 100_000 for e in events))
    job.cancel(cleanup=True)
    thread.join(timeout=3)
    assert isinstance(out[0], DownloadResult) and out[0].status == Phase.CANCELLED
    assert not list(manager.repo_dir(REPO).glob("blobs/*"))
    assert manager.pending() == []


def test_cancel_without_cleanup_keeps_bytes_for_a_later_download(hub: FakeHub) -> None:
    hub.rate_bps = 1_000_000
    data = publish(hub, 1_000_000)
    manager = make_manager(hub)
    request = DownloadRequest(REPO, (FILE,))
    job = manager.job(request)
    events: list[DownloadProgress] = []
    thread, out = run_in_thread(job, events)
    wait_for(lambda: any(e.downloaded > 100_000 for e in events))
    job.cancel()
    thread.join(timeout=3)
    assert isinstance(out[0], DownloadResult) and out[0].status == Phase.CANCELLED
    assert manager.pending() == []
    have = next(manager.repo_dir(REPO).glob("blobs/*.incomplete")).stat().st_size
    hub.rate_bps = None
    result = manager.job(request).run()
    assert result.path is not None and result.path.read_bytes() == data
    assert gets(hub)[-1] == f"bytes={have}-"


def test_server_ignoring_range_restarts_cleanly(hub: FakeHub) -> None:
    data = publish(hub, 200_000)
    manager = make_manager(hub)
    # A partial from an earlier session, and a server (or proxy) that answers Range with 200:
    # appending would duplicate the prefix, so the file must start over.
    etag = hashlib.sha256(data).hexdigest()
    incomplete = manager.incomplete_path(REPO, etag)
    incomplete.parent.mkdir(parents=True)
    incomplete.write_bytes(data[:50_000])
    hub.ignore_range = True
    result = manager.job(DownloadRequest(REPO, (FILE,))).run()
    assert result.path is not None and result.path.read_bytes() == data


def test_events_generator_yields_progress_then_result(hub: FakeHub) -> None:
    publish(hub)
    items = list(make_manager(hub).job(DownloadRequest(REPO, (FILE,))).events())
    assert isinstance(items[-1], DownloadResult) and items[-1].status == Phase.DONE
    assert all(isinstance(i, DownloadProgress) for i in items[:-1])


def test_events_generator_raises_download_errors(hub: FakeHub) -> None:
    with pytest.raises(DownloadError):
        list(make_manager(hub).job(DownloadRequest("nobody/none", (FILE,))).events())


def test_damaged_state_file_is_ignored(hub: FakeHub) -> None:
    manager = make_manager(hub)
    manager.state_dir.mkdir(parents=True)
    (manager.state_dir / "junk.json").write_text("{not json")
    (manager.state_dir / "other.json").write_text(json.dumps({"repo_id": 3}))
    assert manager.pending() == []


def test_creating_a_manager_touches_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    manager = DownloadManager()
    assert manager.pending() == []
    manager.discard(DownloadRequest(REPO, (FILE,)))


# -- Xet glue (the real Xet protocol needs the Hub; hf_hub_download is replaced by a fake that
#    behaves like it: progress through tqdm_class, file placed in the cache, path returned) ------


@pytest.fixture
def xet_hub(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    from huggingface_hub import constants

    pytest.importorskip("hf_xet")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "0")
    hub.xet = True
    return hub


def fake_hf_hub_download(
    monkeypatch: pytest.MonkeyPatch, etag: str, content: bytes, calls: list[dict[str, object]], delay: float = 0.0
) -> None:
    """Replace hf_hub_download: report progress like its Xet path (a file bar and a network bar)
    and place `content` in the cache under blob `etag`."""
    import huggingface_hub

    def fake(
        repo_id: str, filename: str, *, revision: str, cache_dir: Path, endpoint: str, token: object, tqdm_class: type
    ) -> str:
        calls.append({"repo_id": repo_id, "filename": filename, "revision": revision, "endpoint": endpoint})
        repo_dir = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
        blob = repo_dir / "blobs" / etag
        blob.parent.mkdir(parents=True, exist_ok=True)
        bar = tqdm_class(total=len(content), desc=f"{filename}: reconstructing file")
        transfer = tqdm_class(total=len(content), desc=f"{filename}: downloading bytes")
        with blob.open("wb") as f:
            for i in range(0, len(content), 50_000):
                piece = content[i : i + 50_000]
                f.write(piece)
                transfer.update(len(piece))
                bar.update(len(piece))
                time.sleep(delay)
        snapshot = repo_dir / "snapshots" / revision / filename
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        snapshot.symlink_to(blob)
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_xet_path_is_used_when_offered_and_verified(xet_hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    data = publish(xet_hub)
    calls: list[dict[str, object]] = []
    fake_hf_hub_download(monkeypatch, sha(data), data, calls)
    events: list[DownloadProgress] = []
    result = (
        make_manager(xet_hub, progress_interval=0, use_xet=True).job(DownloadRequest(REPO, (FILE,))).run(events.append)
    )
    assert len(calls) == 1 and calls[0]["revision"] == xet_hub.commit(REPO) and calls[0]["endpoint"] == xet_hub.url
    assert result.path is not None and result.path.read_bytes() == data
    assert gets(xet_hub) == []  # no plain-HTTP transfer
    downloading = [e.downloaded for e in events if e.phase == Phase.DOWNLOADING]
    assert downloading[-1] == len(data), "only the file bar is counted, not the network bar"
    assert Phase.VERIFYING in [e.phase for e in events]


def test_xet_wrong_bytes_are_refused(xet_hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    data = publish(xet_hub)
    fake_hf_hub_download(monkeypatch, sha(data), data[:-1] + b"\x00", [])
    with pytest.raises(DownloadError) as info:
        make_manager(xet_hub, use_xet=True).job(DownloadRequest(REPO, (FILE,))).run()
    assert info.value.kind == ErrorKind.CHECKSUM
    cache = make_manager(xet_hub)
    assert not list(cache.repo_dir(REPO).glob("blobs/*")) and not list(cache.repo_dir(REPO).glob("snapshots/*/*"))


def test_xet_transfer_pauses_quickly(xet_hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    data = publish(xet_hub, 1_000_000)
    fake_hf_hub_download(monkeypatch, sha(data), data, [], delay=0.05)
    job = make_manager(xet_hub, use_xet=True).job(DownloadRequest(REPO, (FILE,)))
    events: list[DownloadProgress] = []
    thread, out = run_in_thread(job, events)
    wait_for(lambda: any(e.downloaded > 0 for e in events))
    job.pause()
    thread.join(timeout=2)
    assert isinstance(out[0], DownloadResult) and out[0].status == Phase.PAUSED


def test_partial_http_download_keeps_using_http_even_if_xet_is_offered(
    xet_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = publish(xet_hub)
    calls: list[dict[str, object]] = []
    fake_hf_hub_download(monkeypatch, sha(data), data, calls)
    manager = make_manager(xet_hub, use_xet=True)
    incomplete = manager.incomplete_path(REPO, hashlib.sha256(data).hexdigest())
    incomplete.parent.mkdir(parents=True)
    incomplete.write_bytes(data[:70_000])
    result = manager.job(DownloadRequest(REPO, (FILE,))).run()
    assert calls == [] and gets(xet_hub) == ["bytes=70000-"]
    assert result.path is not None and result.path.read_bytes() == data
    default = make_manager(xet_hub, cache_dir=manager.cache_dir / "other")  # plain HTTP unless opted in
    default.job(DownloadRequest(REPO, (FILE,))).run()
    assert calls == [] and gets(xet_hub)[-1] is None


def test_same_job_resumes_after_pause_and_pause_before_run_counts(hub: FakeHub) -> None:
    hub.rate_bps = 1_000_000
    data = publish(hub, 600_000)
    job = make_manager(hub).job(DownloadRequest(REPO, (FILE,)))
    job.pause()  # clicked before the worker thread got going
    assert job.run().status == Phase.PAUSED
    assert gets(hub) == []
    events: list[DownloadProgress] = []
    thread, out = run_in_thread(job, events)
    wait_for(lambda: any(e.downloaded > 100_000 for e in events))
    job.pause()
    thread.join(timeout=3)
    assert isinstance(out[0], DownloadResult) and out[0].status == Phase.PAUSED
    hub.rate_bps = None
    result = job.run()  # "Resume" on the same job object
    assert result.status == Phase.DONE and result.path is not None and result.path.read_bytes() == data
    assert gets(hub)[-1] is not None and gets(hub)[-1].startswith("bytes=")


def test_unwritable_cache_gives_a_clear_message(hub: FakeHub, tmp_path: Path) -> None:
    publish(hub)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(DownloadError) as info:
        make_manager(hub, cache_dir=blocker / "hub").job(DownloadRequest(REPO, (FILE,))).run()
    assert info.value.kind == ErrorKind.LOCAL_IO and "HF_HOME" in info.value.message


def test_expired_cdn_url_is_refreshed_once(hub: FakeHub) -> None:
    hub.redirect = True
    data = publish(hub)
    hub.inject(Fault("status", status=403))  # the signed URL expired
    result = make_manager(hub).job(DownloadRequest(REPO, (FILE,))).run()
    assert result.path is not None and result.path.read_bytes() == data
    heads = [r for r in hub.requests("HEAD") if "/resolve/" in r.path]
    assert len(heads) == 2, "the location was asked for again"


def test_persistent_403_is_an_access_error(hub: FakeHub) -> None:
    publish(hub)
    hub.inject(Fault("status", status=403, times=-1))
    with pytest.raises(DownloadError) as info:
        make_manager(hub).job(DownloadRequest(REPO, (FILE,))).run()
    assert info.value.kind == ErrorKind.AUTH and "HF_TOKEN" in info.value.message
    assert len(gets(hub)) == 2


# -- driving a job from a UI worker, and what Harmonica itself downloaded ---------------------------


def test_events_takes_a_cancel_event_like_a_ui_worker_passes(hub: FakeHub) -> None:
    """GeneratorWorker calls `func(cancel=<Event>)`: `job.events` must accept it and pause on it."""
    hub.rate_bps = 1_000_000
    publish(hub, 1_000_000)
    job = make_manager(hub).job(DownloadRequest(REPO, (FILE,)))
    cancel = threading.Event()
    items: list[object] = []
    for item in job.events(cancel=cancel):
        items.append(item)
        if isinstance(item, DownloadProgress) and item.downloaded > 100_000:
            cancel.set()
    assert isinstance(items[-1], DownloadResult) and items[-1].status == Phase.PAUSED
    assert 100_000 < items[-2].downloaded < 1_000_000  # type: ignore[union-attr]


def test_cancel_event_pauses_even_while_waiting_to_retry(hub: FakeHub) -> None:
    publish(hub)
    hub.inject(Fault("drop", after_bytes=10_000, times=-1))
    job = make_manager(hub, backoff_base=30, backoff_max=30).job(DownloadRequest(REPO, (FILE,)))
    cancel = threading.Event()
    started = time.monotonic()
    items: list[object] = []
    for item in job.events(cancel=cancel):
        items.append(item)
        if isinstance(item, DownloadProgress) and item.phase == Phase.RETRYING:
            cancel.set()
    assert time.monotonic() - started < 3
    assert isinstance(items[-1], DownloadResult) and items[-1].status == Phase.PAUSED


def test_result_lists_the_files_harmonica_downloaded(hub: FakeHub) -> None:
    data = publish(hub)
    manager = make_manager(hub)
    first = manager.job(DownloadRequest(REPO, (FILE,))).run()
    assert first.downloaded == first.paths and first.path is not None and first.path.read_bytes() == data
    again = manager.job(DownloadRequest(REPO, (FILE,))).run()
    assert again.status == Phase.DONE and again.downloaded == ()  # it was already there


def test_downloaded_parts_are_remembered_across_sessions(hub: FakeHub, tmp_path: Path) -> None:
    from huggingface_hub import hf_hub_download

    names = tuple(f"big-0000{i}-of-00003.gguf" for i in (1, 2, 3))
    for i, name in enumerate(names):
        publish(hub, 300_000, name, seed=i)
    manager = make_manager(hub)
    # Another tool already put part 1 in the shared cache.
    hf_hub_download(REPO, names[0], cache_dir=manager.cache_dir, endpoint=hub.url)
    hub.rate_bps = 1_000_000
    job = manager.job(DownloadRequest(REPO, names))
    events: list[DownloadProgress] = []
    thread, out = run_in_thread(job, events)
    wait_for(lambda: any(e.file_index == 2 and e.phase == Phase.DOWNLOADING for e in events))
    job.pause()
    thread.join(timeout=3)
    assert isinstance(out[0], DownloadResult) and out[0].status == Phase.PAUSED
    hub.rate_bps = None
    result = make_manager(hub).job(DownloadRequest(REPO, names)).run()  # after an app restart
    assert result.status == Phase.DONE
    assert [p.name for p in result.downloaded] == list(names[1:])


def test_cancel_with_cleanup_also_deletes_finished_parts_of_a_split_model(hub: FakeHub) -> None:
    from huggingface_hub import hf_hub_download

    names = tuple(f"big-0000{i}-of-00003.gguf" for i in (1, 2, 3))
    for i, name in enumerate(names):
        publish(hub, 300_000, name, seed=i)
    manager = make_manager(hub)
    theirs = Path(hf_hub_download(REPO, names[0], cache_dir=manager.cache_dir, endpoint=hub.url))
    hub.rate_bps = 1_000_000
    request = DownloadRequest(REPO, names)
    job = manager.job(request)
    events: list[DownloadProgress] = []
    thread, out = run_in_thread(job, events)
    wait_for(lambda: any(e.file_index == 2 and e.phase == Phase.DOWNLOADING and e.downloaded > 650_000 for e in events))
    job.cancel(cleanup=True)
    thread.join(timeout=3)
    assert isinstance(out[0], DownloadResult) and out[0].status == Phase.CANCELLED
    snapshots = {p.name for p in manager.repo_dir(REPO).glob("snapshots/*/*")}
    assert snapshots == {names[0]}, "part 2 (downloaded by this job) is gone, part 1 (another tool's) stays"
    assert theirs.exists() and len(list(manager.repo_dir(REPO).glob("blobs/*"))) == 1
    assert manager.pending() == []


def test_discarding_a_pending_split_download_deletes_its_finished_parts(hub: FakeHub) -> None:
    names = tuple(f"big-0000{i}-of-00002.gguf" for i in (1, 2))
    for i, name in enumerate(names):
        publish(hub, 300_000, name, seed=i)
    hub.rate_bps = 1_000_000
    manager = make_manager(hub)
    request = DownloadRequest(REPO, names)
    job = manager.job(request)
    events: list[DownloadProgress] = []
    thread, _out = run_in_thread(job, events)
    wait_for(lambda: any(e.file_index == 1 and e.downloaded > 350_000 for e in events))
    job.pause()
    thread.join(timeout=3)
    [pending] = make_manager(hub).pending()
    make_manager(hub).discard(pending.request)
    assert not list(manager.repo_dir(REPO).glob("blobs/*"))
    assert not list(manager.repo_dir(REPO).glob("snapshots/*/*"))


# -- verifying files already on disk (no network) ---------------------------------------------------


def test_verify_cached_files_offline(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.core.download import expected_sha256, verify_files

    publish(hub)
    result = make_manager(hub).job(DownloadRequest(REPO, (FILE,))).run()
    assert result.path is not None
    assert expected_sha256(result.path) == hashlib.sha256(result.path.read_bytes()).hexdigest()
    import socket

    monkeypatch.setattr(socket.socket, "connect", lambda *a: (_ for _ in ()).throw(AssertionError("network")))
    seen: list[DownloadProgress] = []
    report = verify_files(result.paths, seen.append)
    assert report.verified == result.paths and report.unknown == ()
    assert seen and seen[-1].checked == seen[-1].check_total == result.path.stat().st_size


def test_verify_finds_damage_and_deletes_the_damaged_file(hub: FakeHub) -> None:
    from app.core.download import verify_files

    publish(hub)
    result = make_manager(hub).job(DownloadRequest(REPO, (FILE,))).run()
    assert result.path is not None
    blob = result.path.resolve()
    raw = bytearray(blob.read_bytes())
    raw[1000] ^= 0xFF
    blob.write_bytes(bytes(raw))
    with pytest.raises(DownloadError) as info:
        verify_files(result.paths)
    assert (
        info.value.kind == ErrorKind.CHECKSUM
        and FILE in info.value.message
        and "Download it again" in info.value.message
    )
    assert not blob.exists() and not result.path.is_symlink()


def test_verify_reports_files_without_a_known_checksum(tmp_path: Path) -> None:
    from app.core.download import verify_files

    loose = tmp_path / "model.gguf"
    loose.write_bytes(b"GGUF" + bytes(100))
    report = verify_files([loose])
    assert report.verified == () and report.unknown == (loose,)
    report = verify_files([loose], expected={loose: hashlib.sha256(loose.read_bytes()).hexdigest()})
    assert report.verified == (loose,)


def test_verify_can_be_stopped(hub: FakeHub) -> None:
    from app.core.download import VerifyReport, verify_events

    publish(hub, 2_000_000)
    result = make_manager(hub).job(DownloadRequest(REPO, (FILE,))).run()
    cancel = threading.Event()
    cancel.set()
    items = list(verify_events(result.paths, cancel=cancel))
    assert isinstance(items[-1], VerifyReport) and items[-1].stopped and items[-1].verified == ()
    assert result.path is not None and result.path.exists()  # stopping never deletes anything


def test_human_bytes_uses_the_apps_one_convention_binary_units_labelled_as_such() -> None:
    from app.core.download import human_bytes

    # app/core/units.py: sizes, memory and downloads all in GiB (labelled GiB), so a model's size
    # compares directly with the RAM figures; the Hub's "12.1 GB" is 11.3 GiB.
    assert human_bytes(12_109_566_560) == "11.3 GiB"
    assert [human_bytes(n) for n in (0, 999, 1024, 400_000, 5 * 1024**2, 63_390_000_000, 2 * 2**40)] == [
        "0 B",
        "999 B",
        "1 KiB",
        "390.6 KiB",
        "5 MiB",
        "59 GiB",
        "2 TiB",
    ]
