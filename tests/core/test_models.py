"""Tests for app.core.models: catalog, validation, discovery, import and removal (no network)."""

from __future__ import annotations

import json
import re
import shutil
import socket
from pathlib import Path

import pytest

from app.core import models, paths
from app.core.download import DownloadManager, DownloadRequest
from app.core.models import (
    CATALOG,
    LocalModel,
    ModelError,
    ModelLibrary,
    Source,
    default_entry,
    find_entry,
    validate_model_file,
)
from tests.fixtures.gguf_factory import write_gpt_oss_gguf, write_llama_gguf
from tests.fixtures.hf_server import FakeHub


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing in models.py may open a connection (only download tests start loopback servers)."""

    def refuse(self: socket.socket, address: object) -> None:
        raise AssertionError(f"network access to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def validator() -> str:
    """Validation goes through app.core.gguf_info, the one GGUF header reader."""
    return "gguf_info"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake user home so discovery never reads the real LM Studio / llama.cpp folders."""
    fake = tmp_path / "userhome"
    fake.mkdir()
    monkeypatch.setenv("HOME", str(fake))
    monkeypatch.delenv("LLAMA_CACHE", raising=False)
    return fake


def write_split(folder: Path, stem: str = "tiny-split", count: int = 3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [
        write_gpt_oss_gguf(
            folder / f"{stem}-{i:05d}-of-{count:05d}.gguf",
            seed=i,
            extra_metadata={"split.count": count, "split.no": i - 1},
        )
        for i in range(1, count + 1)
    ]


# -- catalog ------------------------------------------------------------------------------------


def test_catalog_has_20b_default_and_120b_in_three_parts() -> None:
    assert default_entry().id == "gpt-oss-20b"
    small = find_entry("gpt-oss-20b")
    big = find_entry("gpt-oss-120b")
    assert small is not None and big is not None
    assert (small.repo_id, small.files) == ("ggml-org/gpt-oss-20b-GGUF", ("gpt-oss-20b-mxfp4.gguf",))
    assert big.repo_id == "ggml-org/gpt-oss-120b-GGUF" and big.is_split
    assert big.files == tuple(f"gpt-oss-120b-mxfp4-0000{i}-of-00003.gguf" for i in (1, 2, 3))
    assert big.primary_file == big.files[0]
    assert big.download_request() == DownloadRequest(big.repo_id, big.files, "main")
    assert find_entry("nope") is None
    assert sum(e.default for e in CATALOG) == 1


def test_catalog_sizes_and_memory_are_plausible() -> None:
    small, big = find_entry("gpt-oss-20b"), find_entry("gpt-oss-120b")
    assert small is not None and big is not None
    assert 11 * models.GiB < small.size_bytes < 12 * models.GiB  # 12.11 GB = 11.27 GiB
    assert 58 * models.GiB < big.size_bytes < 60 * models.GiB
    # weights + 8k-context KV (192 MiB for 20b) + compute buffers
    assert small.memory_bytes == small.size_bytes + 24 * 1024 * 8192 + models.GiB
    assert 12 * models.GiB < small.memory_bytes < 16 * models.GiB < big.memory_bytes
    assert all(e.description and e.display_name for e in CATALOG)


# -- validation ---------------------------------------------------------------------------------


def test_valid_tiny_model_passes(validator: str, tiny_model_path: Path) -> None:
    assert validate_model_file(tiny_model_path) == (True, "")


def test_wrong_architecture_is_refused(validator: str, tmp_path: Path) -> None:
    ok, reason = validate_model_file(write_llama_gguf(tmp_path / "llama.gguf"))
    assert not ok and "llama" in reason and "gpt-oss" in reason


def test_truncated_file_is_refused(validator: str, tiny_model_path: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_model_path.read_bytes()[:-1000])
    ok, reason = validate_model_file(cut)
    assert not ok and "cut.gguf" in reason and ("truncated" in reason or "incomplete" in reason)


def test_file_cut_inside_header_is_refused(validator: str, tiny_model_path: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_model_path.read_bytes()[:3000])
    ok, reason = validate_model_file(cut)
    assert not ok and "cut.gguf" in reason


def test_non_gguf_is_refused(validator: str, tmp_path: Path) -> None:
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"PK\x03\x04 this is a zip file, not a model" * 10)
    ok, reason = validate_model_file(fake)
    assert not ok and "GGUF" in reason


def test_missing_and_non_gguf_paths_are_refused(tmp_path: Path) -> None:
    assert validate_model_file(tmp_path / "missing.gguf") == (False, f"{tmp_path / 'missing.gguf'} does not exist.")
    other = tmp_path / "model.bin"
    other.write_bytes(b"GGUF")
    ok, reason = validate_model_file(other)
    assert not ok and ".gguf" in reason
    ok, reason = validate_model_file(tmp_path)
    assert not ok and "not a file" in reason


def test_split_model_validates_from_first_part(validator: str, tmp_path: Path) -> None:
    parts = write_split(tmp_path / "split")
    assert validate_model_file(parts[0]) == (True, "")
    ok, reason = validate_model_file(parts[1])
    assert not ok and parts[0].name in reason
    parts[2].unlink()
    ok, reason = validate_model_file(parts[0])
    assert not ok and parts[2].name in reason and "missing" in reason


def test_check_finds_truncated_later_part(tmp_path: Path) -> None:
    parts = write_split(tmp_path / "split")
    parts[2].write_bytes(parts[2].read_bytes()[:-10])
    ok, reason = validate_model_file(parts[0])
    assert not ok and parts[2].name in reason and "incomplete" in reason


# -- import and registry ------------------------------------------------------------------------


def test_import_references_file_in_place_and_persists(home: Path, tiny_model_path: Path) -> None:
    library = ModelLibrary(search_dirs=[])
    model = library.import_file(tiny_model_path)
    assert model.source == Source.IMPORTED and model.path == tiny_model_path
    assert model.size_bytes == tiny_model_path.stat().st_size and model.parts == (tiny_model_path,)
    registry = json.loads(library.registry_path.read_text())
    assert registry["imported"][0]["path"] == str(tiny_model_path)
    # A new library instance (app restart) still lists it; importing twice does not duplicate it.
    again = ModelLibrary(search_dirs=[])
    again.import_file(tiny_model_path)
    assert [m.path for m in again.discover().models] == [tiny_model_path]


def test_import_refuses_with_reason(home: Path, tmp_path: Path) -> None:
    library = ModelLibrary(search_dirs=[])
    with pytest.raises(ModelError, match="llama"):
        library.import_file(write_llama_gguf(tmp_path / "llama.gguf"))
    assert library.discover().models == []


def test_import_of_later_part_registers_first_part(home: Path, tmp_path: Path) -> None:
    parts = write_split(tmp_path / "split")
    model = ModelLibrary(search_dirs=[]).import_file(parts[2])
    assert model.path == parts[0] and model.parts == tuple(parts)
    assert model.size_bytes == sum(p.stat().st_size for p in parts)


def test_imported_file_that_disappeared_is_reported(home: Path, tmp_path: Path, tiny_model_path: Path) -> None:
    copy = tmp_path / "copy.gguf"
    shutil.copy(tiny_model_path, copy)
    library = ModelLibrary(search_dirs=[])
    library.import_file(copy)
    copy.unlink()
    found = library.discover()
    assert found.models == [] and "no longer there" in found.refused[0].reason


def test_remove_imported_only_unregisters_unless_asked(home: Path, tmp_path: Path, tiny_model_path: Path) -> None:
    copy = tmp_path / "copy.gguf"
    shutil.copy(tiny_model_path, copy)
    library = ModelLibrary(search_dirs=[])
    model = library.import_file(copy)
    library.remove(model)
    assert copy.exists() and library.discover().models == []
    model = library.import_file(copy)
    library.remove(model, delete_files=True)
    assert not copy.exists()


def test_damaged_registry_is_treated_as_empty(home: Path) -> None:
    library = ModelLibrary(search_dirs=[])
    library.registry_path.parent.mkdir(parents=True, exist_ok=True)
    library.registry_path.write_text("{broken")
    assert library.discover().models == []


# -- discovery ----------------------------------------------------------------------------------


def test_discovers_lmstudio_and_llama_cpp_folders(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_path: Path
) -> None:
    lms = home / ".lmstudio" / "models" / "lmstudio-community" / "gpt-oss-20b-GGUF"
    lms.mkdir(parents=True)
    shutil.copy(tiny_model_path, lms / "gpt-oss-20b-MXFP4.gguf")
    write_llama_gguf(lms / "other-llama.gguf")
    llama_cache = tmp_path / "llamacache"
    llama_cache.mkdir()
    monkeypatch.setenv("LLAMA_CACHE", str(llama_cache))
    shutil.copy(tiny_model_path, llama_cache / "ggml-org_gpt-oss-20b-GGUF_gpt-oss-20b-mxfp4.gguf")
    (llama_cache / "half.gguf").write_bytes(tiny_model_path.read_bytes()[:-5000])

    found = ModelLibrary().discover()
    by_source = {m.source: m for m in found.models}
    assert set(by_source) == {Source.LMSTUDIO, Source.LLAMA_CPP}
    assert by_source[Source.LMSTUDIO].path == lms / "gpt-oss-20b-MXFP4.gguf"
    refused = {r.path.name: r.reason for r in found.refused}
    assert "llama" in refused["other-llama.gguf"]
    assert "half.gguf" in refused


def test_discovers_models_in_hf_cache_and_removes_them_through_cache_api(home: Path, tiny_model_path: Path) -> None:
    from huggingface_hub import scan_cache_dir

    cache = place_in_hf_cache("ggml-org/gpt-oss-20b-GGUF", {"gpt-oss-20b-mxfp4.gguf": tiny_model_path})
    library = ModelLibrary(search_dirs=[])
    [model] = library.discover().models
    assert model.source == Source.HUGGINGFACE and model.catalog_id == "gpt-oss-20b"
    assert model.repo_id == "ggml-org/gpt-oss-20b-GGUF" and model.display_name == "gpt-oss-20b"
    entry = find_entry("gpt-oss-20b")
    assert entry is not None
    found = library.find_catalog_model(entry)
    assert found is not None and found.key == model.key
    library.remove(model, delete_files=True)
    assert library.discover().models == []
    assert scan_cache_dir(cache).repos == frozenset() or all(not r.revisions for r in scan_cache_dir(cache).repos)


def test_removing_one_quant_keeps_the_other_in_the_same_revision(
    home: Path, tiny_model_path: Path, tmp_path: Path
) -> None:
    other = write_gpt_oss_gguf(tmp_path / "q8.gguf", seed=7)
    place_in_hf_cache("org/gpt-oss-20b-GGUF", {"a-mxfp4.gguf": tiny_model_path, "a-q8.gguf": other})
    library = ModelLibrary(search_dirs=[])
    models_found = {m.path.name: m for m in library.discover().models}
    assert set(models_found) == {"a-mxfp4.gguf", "a-q8.gguf"}
    library.remove(models_found["a-mxfp4.gguf"], delete_files=True)
    left = library.discover().models
    assert [m.path.name for m in left] == ["a-q8.gguf"] and left[0].path.read_bytes() == other.read_bytes()


def test_hidden_discovered_model_stays_hidden_until_imported(home: Path, tiny_model_path: Path) -> None:
    folder = home / ".lmstudio" / "models" / "x"
    folder.mkdir(parents=True)
    target = folder / "gpt-oss.gguf"
    shutil.copy(tiny_model_path, target)
    library = ModelLibrary()
    [model] = library.discover().models
    library.remove(model)
    assert target.exists() and library.discover().models == []
    library.import_file(target)
    assert [m.path for m in library.discover().models] == [target]


def test_catalog_model_not_in_cache_is_none(home: Path) -> None:
    entry = find_entry("gpt-oss-120b")
    assert entry is not None and ModelLibrary(search_dirs=[]).find_catalog_model(entry) is None


def test_local_model_key_is_resolved_path(tiny_model_path: Path) -> None:
    m = LocalModel(tiny_model_path, "x", Source.IMPORTED, 1, (tiny_model_path,))
    assert m.key == str(tiny_model_path.resolve())


def test_models_harmonica_downloaded_are_marked_and_can_be_deleted(home: Path, tiny_model_path: Path) -> None:
    result = download_into_cache("ggml-org/gpt-oss-20b-GGUF", {"gpt-oss-20b-mxfp4.gguf": tiny_model_path})
    library = ModelLibrary(search_dirs=[])
    [before] = library.discover().models
    assert not before.downloaded_by_app  # not recorded yet
    library.add_download(result)
    [model] = ModelLibrary(search_dirs=[]).discover().models  # recorded on disk, survives a restart
    assert model.downloaded_by_app and model.source == Source.HUGGINGFACE
    library.remove(model, delete_files=True)
    assert library.discover().models == [] and not result.paths[0].exists()


def test_removing_another_tools_hf_model_only_hides_it(home: Path, tiny_model_path: Path) -> None:
    from huggingface_hub import hf_hub_download

    repo, name = "ggml-org/gpt-oss-20b-GGUF", "gpt-oss-20b-mxfp4.gguf"
    with _allow_loopback(), FakeHub() as hub:
        hub.add_file(repo, name, tiny_model_path)
        theirs = Path(
            hf_hub_download(repo, name, endpoint=hub.url, cache_dir=paths.hf_hub_cache_dir())
        )  # `hf download`
        library = ModelLibrary(search_dirs=[])
        [model] = library.discover().models
        assert not model.downloaded_by_app
        library.remove(model)
        assert theirs.exists() and ModelLibrary(search_dirs=[]).discover().models == []
        # Downloading it again through Harmonica (nothing to fetch: it is cached) shows it again,
        # still as another tool's file.
        result = DownloadManager(endpoint=hub.url, read_timeout=2).job(DownloadRequest(repo, (name,))).run()
    assert result.downloaded == ()
    library.add_download(result)
    [back] = library.discover().models
    assert back.key == model.key and not back.downloaded_by_app


def test_forgetting_a_harmonica_download_without_deleting_keeps_the_file(home: Path, tiny_model_path: Path) -> None:
    result = download_into_cache("ggml-org/gpt-oss-20b-GGUF", {"gpt-oss-20b-mxfp4.gguf": tiny_model_path})
    library = ModelLibrary(search_dirs=[])
    library.add_download(result)
    [model] = library.discover().models
    library.remove(model)
    assert result.paths[0].exists() and library.discover().models == []


# -- does it fit this computer ------------------------------------------------------------------


def profile(ram_gb: float, gpus: list[tuple[str, float]] = (), apple_budget_gb: float | None = None):  # type: ignore[no-untyped-def, assignment]
    from app.core.hardware import AppleSiliconInfo, GpuInfo, HardwareProfile

    gb = 1 << 30  # machines come in GiB
    apple = AppleSiliconInfo("Apple M2 Max", int(ram_gb * gb), int(apple_budget_gb * gb)) if apple_budget_gb else None
    return HardwareProfile(
        ram_total=int(ram_gb * gb),
        ram_available=int(ram_gb * gb * 0.7),
        cores_physical=8,
        cores_logical=16,
        gpus=[GpuInfo("nvidia", name, int(v * gb), int(v * gb)) for name, v in gpus],
        apple=apple,
    )


def test_fit_on_a_16_gb_laptop() -> None:
    small, big = find_entry("gpt-oss-20b"), find_entry("gpt-oss-120b")
    assert small is not None and big is not None
    fit = models.assess_fit(small, profile(16))
    assert fit.fits and not fit.on_gpu and "16 GiB" in fit.summary
    nofit = models.assess_fit(big, profile(16))
    assert nofit.fits is False and "16 GiB" in nofit.summary
    needed = float(re.search(r"about ([0-9.]+) GiB", nofit.summary)[1])  # type: ignore[index]
    assert 55 < needed < 65
    assert models.recommend(profile(16)) == small


def test_fit_too_little_memory() -> None:
    small = find_entry("gpt-oss-20b")
    assert small is not None
    fit = models.assess_fit(small, profile(8))
    assert fit.fits is False and "8 GiB" in fit.summary and "12.5" in fit.summary
    assert models.recommend(profile(8)) == small  # still the one to try


def test_fit_on_a_gpu_and_when_120b_is_recommended() -> None:
    small, big = find_entry("gpt-oss-20b"), find_entry("gpt-oss-120b")
    assert small is not None and big is not None
    gamer = profile(32, [("NVIDIA GeForce RTX 4090", 24)])
    fit = models.assess_fit(small, gamer)
    assert fit.fits and fit.on_gpu and "RTX 4090" in fit.summary
    assert models.assess_fit(big, gamer).fits is False  # 32 + 24 GB is not enough for ~65 GB
    assert models.recommend(gamer) == small
    workstation = profile(128, [("NVIDIA RTX 6000 Ada", 48)])
    assert models.assess_fit(big, workstation).fits and not models.assess_fit(big, workstation).on_gpu
    assert models.recommend(workstation) == big
    mac = profile(96, apple_budget_gb=72)
    assert models.assess_fit(big, mac).on_gpu and models.recommend(mac) == big


def test_fit_unknown_memory() -> None:
    small = find_entry("gpt-oss-20b")
    assert small is not None
    fit = models.assess_fit(small, profile(0))
    assert fit.fits is None and "could not" in fit.summary.lower()
    assert models.recommend(profile(0)) == small


# -- helpers --------------------------------------------------------------------------------------


def download_into_cache(repo_id: str, files: dict[str, Path]):  # type: ignore[no-untyped-def]
    """Harmonica downloads files from a loopback hub; returns the DownloadResult."""
    with _allow_loopback(), FakeHub() as hub:
        for name, path in files.items():
            hub.add_file(repo_id, name, path)
        return DownloadManager(endpoint=hub.url, read_timeout=2).job(DownloadRequest(repo_id, tuple(files))).run()


def place_in_hf_cache(repo_id: str, files: dict[str, Path]) -> Path:
    """Put files into the HF cache the real way: downloaded by DownloadManager from a loopback hub."""
    with _allow_loopback(), FakeHub() as hub:
        for name, path in files.items():
            hub.add_file(repo_id, name, path)
        manager = DownloadManager(endpoint=hub.url, read_timeout=2)
        manager.job(DownloadRequest(repo_id, tuple(files))).run()
        return manager.cache_dir


class _allow_loopback:  # noqa: N801 -- used like a function: `with _allow_loopback():`
    """Temporarily lift the no-network guard, for loopback only, while the cache is being filled."""

    def __enter__(self) -> None:
        self._patched = socket.socket.connect
        original = _ORIGINAL_CONNECT

        def loopback_only(sock: socket.socket, address: object) -> None:
            host = address[0] if isinstance(address, tuple) else ""
            if host not in ("127.0.0.1", "::1", "localhost"):
                raise AssertionError(f"network access to {address}")
            original(sock, address)

        socket.socket.connect = loopback_only  # type: ignore[method-assign]

    def __exit__(self, *exc: object) -> None:
        socket.socket.connect = self._patched  # type: ignore[method-assign]


_ORIGINAL_CONNECT = socket.socket.connect
