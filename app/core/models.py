"""Model catalog, local model registry, discovery of existing GGUFs, import, validation and removal.

Everything here is local: nothing touches the network (downloads live in app.core.download and
only start when the user asks).

Memory figures in the catalog are rough on purpose: weights (the file size, mmap'd or loaded)
plus the KV cache at an 8k context plus ~1 GiB of compute buffers and runtime. The planner
(app.core.planner) refines this from the real tensor sizes and the chosen context.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.core import paths
from app.core.download import DownloadRequest, DownloadResult, human_bytes
from app.core.errors import HarmonicaError
from app.core.fsutil import atomic_write
from app.core.gguf_info import validate_gguf

if TYPE_CHECKING:
    from app.core.hardware import HardwareProfile

GiB = 1024**3
MiB = 1024**2
REQUIRED_ARCH = "gpt-oss"
_SPLIT_RE = re.compile(r"^(?P<stem>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
_REGISTRY_VERSION = 1
_COMPUTE_OVERHEAD = 1 * GiB


def estimate_memory(weights_bytes: int, kv_bytes_per_token: int, context: int = 8192) -> int:
    """Rough bytes of RAM+VRAM needed: weights + f16 KV cache at `context` + compute buffers."""
    return weights_bytes + kv_bytes_per_token * context + _COMPUTE_OVERHEAD


@dataclass(frozen=True)
class CatalogEntry:
    """A downloadable model. `size_bytes` is a fallback for display before the hub is asked;
    the hub-reported size (DownloadManager.fetch_remote_files) is authoritative."""

    id: str
    display_name: str
    repo_id: str
    files: tuple[str, ...]  # all parts; llama.cpp loads files[0]
    size_bytes: int
    kv_bytes_per_token: int  # f16 KV of the full-attention layers (sliding layers are capped at 128)
    description: str
    quant: str = "MXFP4"
    revision: str = "main"
    default: bool = False
    size_is_approximate: bool = False

    @property
    def primary_file(self) -> str:
        return self.files[0]

    @property
    def is_split(self) -> bool:
        return len(self.files) > 1

    @property
    def memory_bytes(self) -> int:
        return estimate_memory(self.size_bytes, self.kv_bytes_per_token)

    def download_request(self) -> DownloadRequest:
        return DownloadRequest(self.repo_id, self.files, self.revision)


# gpt-oss-20b: 24 blocks, 12 of them full attention, 8 KV heads × 64 dims × (K+V) × 2 bytes
# = 2 KiB per token per layer → 24 KiB/token. gpt-oss-120b: 36 blocks, 18 full → 36 KiB/token.
CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry(
        id="gpt-oss-20b",
        display_name="gpt-oss-20b",
        repo_id="ggml-org/gpt-oss-20b-GGUF",
        files=("gpt-oss-20b-mxfp4.gguf",),
        size_bytes=12_109_566_560,
        kv_bytes_per_token=24 * 1024,
        description="OpenAI's 21B-parameter open-weight model (3.6B active). Runs on a computer with 16 GiB of "
        "memory; fast on a GPU with 16 GiB, usable with less by keeping experts on the CPU.",
        default=True,
    ),
    CatalogEntry(
        id="gpt-oss-120b",
        display_name="gpt-oss-120b",
        repo_id="ggml-org/gpt-oss-120b-GGUF",
        files=tuple(f"gpt-oss-120b-mxfp4-0000{i}-of-00003.gguf" for i in (1, 2, 3)),
        size_bytes=63_390_000_000,
        kv_bytes_per_token=36 * 1024,
        description="OpenAI's 117B-parameter open-weight model (5.1B active). Needs about 60 GiB of "
        "memory (RAM plus VRAM); an 80 GiB GPU runs it entirely.",
        size_is_approximate=True,
    ),
)


def catalog() -> tuple[CatalogEntry, ...]:
    return CATALOG


def default_entry() -> CatalogEntry:
    return next(e for e in CATALOG if e.default)


def find_entry(entry_id: str) -> CatalogEntry | None:
    return next((e for e in CATALOG if e.id == entry_id), None)


def entry_for_filename(filename: str) -> CatalogEntry | None:
    name = Path(filename).name
    return next((e for e in CATALOG if name in e.files), None)


# -- does it fit this computer ------------------------------------------------------------------

# Memory the OS, the desktop and the app itself keep for themselves.
OS_RESERVE_BYTES = 2_000_000_000


@dataclass(frozen=True)
class Fit:
    """Whether a catalog model fits a computer, in one sentence for the user.

    A rough first answer from the totals (RAM + GPU memory vs the entry's memory estimate); the
    planner (app.core.planner) decides the real split from the file's tensor sizes."""

    fits: bool | None  # None: the computer's memory is unknown
    on_gpu: bool  # fits entirely in GPU memory (fast)
    summary: str
    needed: int = 0
    available: int = 0


def _gpu_memory(profile: HardwareProfile) -> tuple[int, str]:
    """GPU memory a model can use and a name for it; Apple: the Metal budget of unified memory."""
    if profile.apple is not None:
        return profile.apple.gpu_budget, "unified memory"
    discrete = [g for g in profile.gpus if not g.unified_memory and g.vram_total > 0]
    if not discrete:
        return 0, ""
    total = sum(g.vram_total for g in discrete)
    name = discrete[0].name if len(discrete) == 1 else f"{len(discrete)} GPUs"
    return total, name


def assess_fit(entry: CatalogEntry, profile: HardwareProfile) -> Fit:
    """Does `entry` fit `profile`? RAM (less an OS reserve) plus discrete GPU memory must hold it."""
    need = entry.memory_bytes
    ram = profile.ram_total
    if ram <= 0:
        return Fit(None, False, "Could not tell how much memory this computer has.", need, 0)
    gpu, gpu_name = _gpu_memory(profile)
    unified = profile.apple is not None
    usable = max(0, ram - OS_RESERVE_BYTES) + (0 if unified else gpu)
    has = human_bytes(ram) + " RAM" + (f" + {human_bytes(gpu)} GPU memory" if gpu and not unified else "")
    if need > usable:
        return Fit(False, False, f"Needs about {human_bytes(need)} of memory; this computer has {has}.", need, usable)
    if gpu and need <= gpu:
        if unified:
            text = f"Fits in unified memory (the GPU may use {human_bytes(gpu)}): fast."
        else:
            text = f"Fits in the memory of your {gpu_name} ({human_bytes(gpu)}): fast."
        return Fit(True, True, text, need, usable)
    if gpu:
        text = f"Fits this computer ({has}); the part that does not fit on the GPU runs on the CPU."
    else:
        text = f"Fits in this computer's {human_bytes(ram)} of RAM; runs on the CPU."
    return Fit(True, False, text, need, usable)


def recommend(profile: HardwareProfile | None) -> CatalogEntry:
    """The model to suggest first: gpt-oss-120b where it fits, else the default (20b)."""
    if profile is not None:
        for entry in CATALOG:
            if not entry.default and entry.id == "gpt-oss-120b" and assess_fit(entry, profile).fits:
                return entry
    return default_entry()


# -- validation ---------------------------------------------------------------------------------


class ModelError(HarmonicaError):
    """A model file was refused or an operation on it failed; the message is for the user."""


def split_parts(path: Path) -> list[Path] | None:
    """All part paths of a split GGUF named `…-0000k-of-0000n.gguf`, or None if not split."""
    m = _SPLIT_RE.match(path.name)
    if m is None:
        return None
    count = int(m["count"])
    return [path.with_name(f"{m['stem']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]


def validate_model_file(path: str | Path) -> tuple[bool, str]:
    """Check a GGUF before offering it: magic, architecture gpt-oss, not truncated, all split
    parts present. Returns (ok, reason); reason is a sentence for the user when refused."""
    path = Path(path)
    if not path.exists():
        return False, f"{path} does not exist."
    if not path.is_file():
        return False, f"{path} is not a file."
    if path.suffix.lower() != ".gguf":
        return False, f"{path.name} is not a .gguf file; Harmonica loads GGUF models."
    parts = split_parts(path)
    if parts is not None and parts[0] != path:
        return False, f"{path.name} is part of a split model; choose its first part, {parts[0].name}."
    for part in (parts or [])[1:]:
        if not part.exists():
            return False, f"{path.name} is part 1 of {len(parts or [])}, but {part.name} is missing next to it."
    try:
        ok, reason = validate_gguf(path)  # magic, architecture, every part complete
    except Exception as exc:  # noqa: BLE001 - a validator bug must not crash discovery
        ok, reason = False, f"{path.name} could not be checked: {exc}"
    if not ok and reason and not reason.endswith("."):
        reason += "."
    return (True, "") if ok else (False, reason)


# -- local models -------------------------------------------------------------------------------


class Source(str, Enum):
    HUGGINGFACE = "huggingface"  # the standard HF cache (downloaded by Harmonica or another tool)
    IMPORTED = "imported"  # a file the user picked; referenced in place
    LMSTUDIO = "lmstudio"
    LLAMA_CPP = "llama.cpp"


@dataclass(frozen=True)
class LocalModel:
    """A validated model file on this machine."""

    path: Path  # the file to load (part 1 of a split model)
    display_name: str
    source: Source
    size_bytes: int  # all parts together
    parts: tuple[Path, ...]
    catalog_id: str | None = None
    repo_id: str | None = None
    commit: str | None = None
    downloaded_by_app: bool = False  # Harmonica downloaded every part (so it may offer to delete them)

    @property
    def key(self) -> str:
        """Stable identity across scans (the resolved file path)."""
        return str(_resolved(self.path))


@dataclass(frozen=True)
class RefusedFile:
    path: Path
    reason: str


@dataclass
class Discovery:
    models: list[LocalModel] = field(default_factory=list)
    refused: list[RefusedFile] = field(default_factory=list)


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:
        return path.absolute()


def _size_of(parts: Iterable[Path]) -> int:
    total = 0
    for p in parts:
        try:
            total += p.stat().st_size
        except OSError:
            pass
    return total


def _display_name(path: Path) -> str:
    m = _SPLIT_RE.match(path.name)
    stem = m["stem"] if m else path.stem
    entry = entry_for_filename(path.name)
    return entry.display_name if entry is not None else stem


def default_search_dirs() -> list[tuple[Source, Path]]:
    """LM Studio's and llama.cpp's usual model folders (the HF cache is scanned separately)."""
    home = Path.home()
    dirs = [
        (Source.LMSTUDIO, home / ".lmstudio" / "models"),
        (Source.LMSTUDIO, home / ".cache" / "lm-studio" / "models"),
        (Source.LLAMA_CPP, paths.llama_cpp_cache_dir()),
        (Source.LLAMA_CPP, home / ".cache" / "llama.cpp"),
    ]
    unique: list[tuple[Source, Path]] = []
    seen: set[Path] = set()
    for source, d in dirs:
        if d not in seen:
            seen.add(d)
            unique.append((source, d))
    return unique


def _walk_gguf(root: Path, max_depth: int = 6) -> Iterable[Path]:
    """GGUF files under root (following no directory symlinks, bounded depth, errors skipped)."""
    stack = [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if depth < max_depth and not entry.name.startswith("."):
                        stack.append((Path(entry.path), depth + 1))
                elif entry.name.lower().endswith(".gguf") and entry.is_file():
                    yield Path(entry.path)
            except OSError:
                continue


class ModelLibrary:
    """The user's local models: imported files (registry JSON), the HF cache, LM Studio, llama.cpp."""

    def __init__(
        self,
        registry_path: Path | None = None,
        *,
        hf_cache_dir: Path | None = None,
        search_dirs: Sequence[tuple[Source, Path]] | None = None,
    ) -> None:
        self._registry_path = registry_path
        self._hf_cache_dir = hf_cache_dir
        self._search_dirs = search_dirs

    @property
    def registry_path(self) -> Path:
        return self._registry_path if self._registry_path is not None else paths.data_dir() / "models.json"

    @property
    def hf_cache_dir(self) -> Path:
        return self._hf_cache_dir if self._hf_cache_dir is not None else paths.hf_hub_cache_dir()

    # -- registry file -------------------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.registry_path.read_text("utf-8"))
            if isinstance(data, dict):
                data.setdefault("imported", [])
                data.setdefault("hidden", [])
                data.setdefault("downloaded", [])
                return data
        except (OSError, ValueError):
            pass
        return {"version": _REGISTRY_VERSION, "imported": [], "hidden": [], "downloaded": []}

    def _save(self, data: dict[str, Any]) -> None:
        atomic_write(self.registry_path, json.dumps(data, indent=1))

    # -- import --------------------------------------------------------------------------------
    def import_file(self, path: str | Path) -> LocalModel:
        """Validate a GGUF and register it in place (no copy). Part 2+ of a split model is mapped
        to part 1. Raises ModelError with the refusal reason."""
        path = Path(path).expanduser()
        parts = split_parts(path)
        if parts is not None and parts[0] != path and parts[0].exists():
            path = parts[0]
        ok, reason = validate_model_file(path)
        if not ok:
            raise ModelError(reason)
        path = path.absolute()
        data = self._load()
        key = str(_resolved(path))
        if not any(str(_resolved(Path(e["path"]))) == key for e in data["imported"]):
            data["imported"].append({"path": str(path), "added": time.time()})
        data["hidden"] = [h for h in data["hidden"] if h != key]
        self._save(data)
        return self._local(path, Source.IMPORTED)

    def add_download(self, result: DownloadResult) -> None:
        """Record a finished download: its parts that Harmonica fetched itself are marked (so
        Remove may offer to delete them), and a model the user had removed is shown again."""
        data = self._load()
        ours = {str(_resolved(p)) for p in result.downloaded}
        known = {e.get("path") for e in data["downloaded"]}
        data["downloaded"] += [{"path": key, "added": time.time()} for key in sorted(ours - known)]
        shown = {str(_resolved(p)) for p in result.paths}
        data["hidden"] = [h for h in data["hidden"] if h not in shown]
        self._save(data)

    def _local(
        self,
        path: Path,
        source: Source,
        repo_id: str | None = None,
        commit: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> LocalModel:
        parts = tuple(split_parts(path) or [path])
        entry = entry_for_filename(path.name)
        ours = {e.get("path") for e in (data if data is not None else self._load())["downloaded"]}
        by_app = source == Source.HUGGINGFACE and all(str(_resolved(p)) in ours for p in parts)
        return LocalModel(
            path=path,
            display_name=_display_name(path),
            source=source,
            size_bytes=_size_of(parts),
            parts=parts,
            catalog_id=entry.id if entry else None,
            repo_id=repo_id,
            commit=commit,
            downloaded_by_app=by_app,
        )

    # -- discovery -----------------------------------------------------------------------------
    def discover(self) -> Discovery:
        """Imported files plus gpt-oss GGUFs found in the HF cache and LM Studio / llama.cpp
        folders, each validated; refused files come with reasons. Local disk only."""
        result = Discovery()
        data = self._load()
        hidden = set(data["hidden"])
        seen: set[str] = set()

        def offer(path: Path, source: Source, repo_id: str | None = None, commit: str | None = None) -> None:
            parts = split_parts(path)
            if parts is not None and parts[0] != path:
                return  # parts 2..n are covered by part 1
            key = str(_resolved(path))
            if key in seen or key in hidden:
                return
            seen.add(key)
            ok, reason = validate_model_file(path)
            if ok:
                result.models.append(self._local(path, source, repo_id, commit, data))
            else:
                result.refused.append(RefusedFile(path, reason))

        for item in data["imported"]:
            path = Path(item.get("path", ""))
            if not path.exists():
                result.refused.append(
                    RefusedFile(path, f"{path} was imported but is no longer there (moved or deleted?).")
                )
                seen.add(str(path))
                continue
            offer(path, Source.IMPORTED)
        for path, repo_id, commit in self._hf_cache_ggufs():
            offer(path, Source.HUGGINGFACE, repo_id, commit)
        for source, root in self._search_dirs if self._search_dirs is not None else default_search_dirs():
            for path in sorted(_walk_gguf(root)):
                offer(path, source)
        return result

    def _hf_cache_ggufs(self) -> list[tuple[Path, str, str]]:
        from huggingface_hub import scan_cache_dir
        from huggingface_hub.errors import CacheNotFound, CorruptedCacheException

        if not self.hf_cache_dir.is_dir():
            return []
        try:
            info = scan_cache_dir(self.hf_cache_dir)
        except (CacheNotFound, CorruptedCacheException, OSError):
            return []
        found: list[tuple[Path, str, str]] = []
        for repo in info.repos:
            if repo.repo_type != "model":
                continue
            for revision in sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True):
                for f in revision.files:
                    if f.file_name.lower().endswith(".gguf"):
                        found.append((Path(f.file_path), repo.repo_id, revision.commit_hash))
        return found

    def models(self) -> list[LocalModel]:
        return self.discover().models

    def find_catalog_model(self, entry: CatalogEntry) -> LocalModel | None:
        """The catalog entry if it is already complete in the HF cache (no network)."""
        from huggingface_hub import try_to_load_from_cache

        resolved: list[Path] = []
        for name in entry.files:
            hit = try_to_load_from_cache(entry.repo_id, name, cache_dir=self.hf_cache_dir, revision=entry.revision)
            if not isinstance(hit, str):
                return None
            resolved.append(Path(hit))
        ok, _ = validate_model_file(resolved[0])
        if not ok:
            return None
        return self._local(resolved[0], Source.HUGGINGFACE, entry.repo_id, resolved[0].parent.name)

    # -- removal -------------------------------------------------------------------------------
    def remove(self, model: LocalModel, *, delete_files: bool = False) -> None:
        """Forget a model: it is no longer listed, its files stay. With `delete_files` the files
        are deleted too (HF-cache models through the cache's API, so other revisions stay
        consistent). The UI confirms first and offers deletion only for `downloaded_by_app`
        models: the HF cache is shared, and a file another tool downloaded is not ours to delete."""
        data = self._load()
        key = model.key
        if model.source == Source.HUGGINGFACE and delete_files:
            self._delete_from_hf_cache(model)
            gone = {str(_resolved(p)) for p in model.parts}
            data["downloaded"] = [e for e in data["downloaded"] if e.get("path") not in gone]
        elif delete_files:
            for part in model.parts:
                try:
                    part.unlink(missing_ok=True)
                except OSError as exc:
                    raise ModelError(f"Could not delete {part}: {exc}") from exc
        data["imported"] = [
            e for e in data["imported"] if str(_resolved(Path(e["path"]))) != key and e["path"] != str(model.path)
        ]
        if (
            model.source in (Source.LMSTUDIO, Source.LLAMA_CPP, Source.HUGGINGFACE)
            and not delete_files
            and key not in data["hidden"]
        ):
            data["hidden"].append(key)  # discovered again on every scan otherwise
        self._save(data)

    def _delete_from_hf_cache(self, model: LocalModel) -> None:
        from huggingface_hub import scan_cache_dir

        try:
            info = scan_cache_dir(self.hf_cache_dir)
        except Exception as exc:
            raise ModelError(f"Could not read the Hugging Face cache at {self.hf_cache_dir}: {exc}") from exc
        wanted = {str(p) for p in model.parts}
        for repo in info.repos:
            for revision in repo.revisions:
                files = {str(f.file_path): f for f in revision.files}
                if not wanted & files.keys():
                    continue
                if set(files) <= wanted:
                    # The revision holds only this model: let the cache API delete it cleanly.
                    info.delete_revisions(revision.commit_hash).execute()
                    return
                # Other files share the revision (e.g. another quant): remove only this model's
                # snapshot links and the blobs no other revision still uses.
                other_blobs = {
                    str(f.blob_path) for r in repo.revisions for f in r.files if str(f.file_path) not in wanted
                }
                for name in wanted & files.keys():
                    f = files[name]
                    Path(f.file_path).unlink(missing_ok=True)
                    if str(f.blob_path) not in other_blobs:
                        Path(f.blob_path).unlink(missing_ok=True)
                return
        raise ModelError(f"{model.path.name} is no longer in the Hugging Face cache.")
