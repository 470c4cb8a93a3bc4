"""A hostile Hub mirror (HF_ENDPOINT) cannot make a download write outside the Hugging Face cache.

Each test runs a real download against the loopback fake hub in one of its hostile modes and then
checks the whole Harmonica home: nothing may appear outside the cache's repo folder (and the state
folder), whatever the server sent as ETag, X-Repo-Commit, redirect target or body.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.core import paths
from app.core.download import (
    DownloadError,
    DownloadManager,
    DownloadProgress,
    DownloadRequest,
    ErrorKind,
    Phase,
)
from tests.fixtures.hf_server import FakeHub, Fault, make_gguf_bytes

REPO = "ggml-org/tiny-GGUF"
FILE = "tiny.gguf"
EVIL = b"import os\nos.system('echo pwned > /tmp/harmonica-pwned')\n"


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as server:
        yield server


def manager(hub: FakeHub) -> DownloadManager:
    return DownloadManager(
        endpoint=hub.url, read_timeout=2.0, connect_timeout=2.0, backoff_base=0.01, backoff_max=0.02, max_retries=1
    )


def files_under(root: Path) -> set[Path]:
    return {Path(d) / f for d, _, names in os.walk(root) for f in names} | {
        Path(d) / n for d, dirs, _ in os.walk(root) for n in dirs
    }


def outside_cache(home: Path, before: set[Path], mgr: DownloadManager) -> set[Path]:
    """What the download created anywhere except the repo's cache folder, its lock folder and its state."""
    allowed = (mgr.repo_dir(REPO), mgr.cache_dir / ".locks", paths.data_dir(ensure=False) / "downloads")
    return {
        p for p in files_under(home) - before if not any(p == a or a in p.parents or p in a.parents for a in allowed)
    }


def home_dir() -> Path:
    home = paths.app_home()
    assert home is not None  # the test conftest isolates every test in its own HARMONICA_HOME
    return home


def attack(hub: FakeHub) -> tuple[BaseException | None, set[Path], list[DownloadProgress]]:
    mgr = manager(hub)
    home = home_dir()
    paths.tools_dir()  # the user-tools folder exists, as in a real installation
    paths.data_dir()
    before = files_under(home) | files_under(mgr.cache_dir.parent)
    events: list[DownloadProgress] = []
    error: BaseException | None = None
    try:
        mgr.job(DownloadRequest(REPO, (FILE,))).run(events.append)
    except DownloadError as exc:
        error = exc
    created = outside_cache(home, before, mgr) | outside_cache(mgr.cache_dir.parent, before, mgr)
    return error, created, events


def test_traversal_etag_cannot_drop_a_user_tool(hub: FakeHub) -> None:
    """The reported attack: the ETag walks from blobs/ into the user-tools folder, whose .py files run."""
    hub.add_file(REPO, FILE, EVIL)
    mgr = manager(hub)
    blobs = mgr.repo_dir(REPO) / "blobs"
    hub.hostile_etag = os.path.relpath(paths.tools_dir() / "evil.py", blobs)
    error, created, _ = attack(hub)
    assert not (paths.tools_dir() / "evil.py").exists()
    assert not list(paths.tools_dir().iterdir())
    assert created == set()
    assert isinstance(error, DownloadError) and error.kind is ErrorKind.SERVER
    assert "invalid ETag" in error.message and "Nothing was written" in error.message


HOSTILE_ETAGS = {
    "dotdot": "..",
    "traversal": "../../../../config/tools/evil.py",
    "absolute": "/tmp/harmonica-evil.py",
    "backslash": "..\\..\\..\\evil.py",
    "drive-letter": "C:evil.py",
    "windows-device": "NUL",
    "windows-device-ext": "com1.txt",
    "sha-then-traversal": "a" * 64 + "/../../evil",
    "trailing-dot": "a" * 40 + ".",
    "too-short-hex": "abc123",
    "not-hex": "g" * 64,
    "empty-quotes": "",
}


@pytest.mark.parametrize("etag", list(HOSTILE_ETAGS.values()), ids=list(HOSTILE_ETAGS))
def test_hostile_etags_are_refused_before_any_write(hub: FakeHub, etag: str) -> None:
    hub.add_file(REPO, FILE, make_gguf_bytes(50_000))
    hub.hostile_etag = etag
    error, created, _ = attack(hub)
    assert created == set()
    assert isinstance(error, DownloadError) and error.kind is ErrorKind.SERVER
    assert "ETag" in error.message
    assert not (manager(hub).repo_dir(REPO) / "snapshots").exists()  # nothing was placed


HOSTILE_COMMITS = {
    "traversal": "../../../../config/tools",
    "dotdot": "..",
    "absolute": "/tmp/harmonica-evil",
    "backslash": "..\\..\\..",
    "drive-letter": "C:",
    "windows-device": "aux",
    "short": "abc",
    "uppercase-sha": "A" * 40,
    "sha-with-slash": "a" * 20 + "/" + "b" * 19,
}


@pytest.mark.parametrize("where", ["x-repo-commit", "api-sha"])
@pytest.mark.parametrize("commit", list(HOSTILE_COMMITS.values()), ids=list(HOSTILE_COMMITS))
def test_hostile_repo_commits_are_refused_before_any_write(hub: FakeHub, commit: str, where: str) -> None:
    hub.add_file(REPO, FILE, make_gguf_bytes(50_000))
    if where == "x-repo-commit":
        hub.hostile_commit = commit
    else:
        hub.hostile_api_sha = commit
    error, created, _ = attack(hub)
    assert created == set()
    assert isinstance(error, DownloadError) and error.kind is ErrorKind.SERVER
    assert "invalid commit id" in error.message
    assert not list((manager(hub).repo_dir(REPO) / "snapshots").glob("*"))


HOSTILE_LOCATIONS = {
    "file-url": "file:///etc/passwd",
    "ftp": "ftp://127.0.0.1/evil",
    "credentials": "http://user:secret@127.0.0.1:9/cdn/x",
    "javascript": "javascript:alert(1)",
    "space-smuggled": "http://127.0.0.1:9/a b",
}


@pytest.mark.parametrize("location", list(HOSTILE_LOCATIONS.values()), ids=list(HOSTILE_LOCATIONS))
def test_redirects_to_hostile_locations_are_refused(hub: FakeHub, location: str) -> None:
    hub.add_file(REPO, FILE, make_gguf_bytes(50_000))
    hub.hostile_location = location
    error, created, _ = attack(hub)
    assert created == set()
    assert isinstance(error, DownloadError) and error.kind is ErrorKind.SERVER
    assert "invalid location" in error.message
    assert [r for r in hub.requests("GET") if "/api/" not in r.path] == []  # refused before a single byte was asked for


def test_body_longer_than_announced_is_cut_at_the_announced_size(hub: FakeHub) -> None:
    data = make_gguf_bytes(200_000)
    hub.add_file(REPO, FILE, data)
    hub.oversize = 3_000_000  # 3 MB more than the file, announced in Content-Length
    error, created, events = attack(hub)
    assert error is None and created == set()
    assert max(e.downloaded for e in events) <= len(data)  # never wrote past the announced size
    snapshot = manager(hub).snapshot_path(REPO, hub.commit(REPO), FILE)
    assert snapshot.read_bytes() == data


def test_longer_and_wrong_body_fails_verification_with_a_clear_message(hub: FakeHub) -> None:
    data = make_gguf_bytes(200_000)
    hub.add_file(REPO, FILE, data)
    hub.oversize = 3_000_000
    hub.inject(Fault("corrupt"))
    error, created, events = attack(hub)
    assert created == set()
    assert max(e.downloaded for e in events) <= len(data)
    assert isinstance(error, DownloadError) and error.kind is ErrorKind.CHECKSUM
    assert f"more than the {len(data):,} bytes it announced" in error.message and "deleted" in error.message
    assert events[-1].phase is Phase.FAILED
    assert not list((manager(hub).repo_dir(REPO) / "blobs").glob("*"))


@pytest.mark.parametrize("size", [70_000, 2_000_000])
def test_huge_headers_end_in_a_clear_error_or_a_verified_file(hub: FakeHub, size: int) -> None:
    data = make_gguf_bytes(50_000)
    hub.add_file(REPO, FILE, data)
    hub.huge_header = size
    error, created, _ = attack(hub)
    assert created == set()
    if error is None:
        assert manager(hub).snapshot_path(REPO, hub.commit(REPO), FILE).read_bytes() == data
    else:
        assert isinstance(error, DownloadError) and error.message.endswith(".")
        assert "Traceback" not in error.message


@pytest.mark.parametrize(
    "name",
    ["../evil.py", "/etc/passwd", "a/../../b", "a\\b", "C:x", "con", "lpt1.gguf", "x\x00y", "dir/", "", "a/./b"],
)
def test_requests_refuse_unsafe_file_names_and_revisions(name: str) -> None:
    with pytest.raises(ValueError):
        DownloadRequest(REPO, (name,))
    with pytest.raises(ValueError):
        DownloadRequest(REPO, (FILE,), revision=name)
    from app.core.download import check_relative_name

    with pytest.raises(ValueError):
        check_relative_name(name, "The file name")


@pytest.mark.parametrize("repo", ["../x", "a/b/c", "a", "a/..", "/a/b", "a\\b/c", "a/b\x00"])
def test_requests_refuse_unsafe_repo_ids(repo: str) -> None:
    with pytest.raises(ValueError):
        DownloadRequest(repo, (FILE,))


def test_safe_names_of_real_repos_are_accepted() -> None:
    DownloadRequest("ggml-org/gpt-oss-120b-GGUF", ("gpt-oss-120b-mxfp4-00001-of-00003.gguf",))
    DownloadRequest("unsloth/gpt-oss-20b-GGUF", ("Q4_K_M/gpt-oss-20b-Q4_K_M.gguf",), revision="refs/pr/1")


def test_paths_built_from_a_tampered_state_file_stay_in_the_cache(tmp_path: Path) -> None:
    mgr = DownloadManager(cache_dir=tmp_path / "hub", state_dir=tmp_path / "state")
    for build in (
        lambda: mgr.blob_path(REPO, "../../../x"),
        lambda: mgr.incomplete_path(REPO, "/etc/x"),
        lambda: mgr.snapshot_path(REPO, "a" * 40, "../../../../x"),
        lambda: mgr.snapshot_path(REPO, "../../x", FILE),
        lambda: mgr.refs_path(REPO, "../../../x"),
    ):
        with pytest.raises(DownloadError):
            build()
    # A state file whose ETag walks out: discarding it deletes nothing outside the cache.
    victim = tmp_path / "victim.incomplete"
    victim.write_text("keep me")
    request = DownloadRequest(REPO, (FILE,))
    state = mgr.state_path(request)
    state.parent.mkdir(parents=True)
    rel = os.path.relpath(tmp_path / "victim", mgr.cache_dir / ("models--" + REPO.replace("/", "--")) / "blobs")
    files = {FILE: {"etag": rel, "size": 10, "commit": hashlib.sha1(b"x").hexdigest(), "placed": True}}
    state.write_text(json.dumps({"repo_id": REPO, "filenames": [FILE], "files": files}))
    assert mgr.pending() == []  # not offered for resuming: its names are not ours
    mgr.discard(request)
    assert victim.read_text() == "keep me"
