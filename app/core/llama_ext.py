"""ctypes extras llama-cpp-python lacks: ggml's backend registry, experts-on-CPU overrides, log routing."""

from __future__ import annotations

import ctypes
import logging
import os
import re
import struct
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import llama_cpp

from app.core.engine import PARTIAL_EXPERT_TENSORS
from app.core.errors import HarmonicaError
from app.core.units import format_bytes

log = logging.getLogger("harmonica.llama")

# enum ggml_backend_dev_type
DEV_TYPE_CPU, DEV_TYPE_GPU, DEV_TYPE_IGPU, DEV_TYPE_ACCEL, DEV_TYPE_META = range(5)
_DEV_KIND = {
    DEV_TYPE_CPU: "cpu",
    DEV_TYPE_GPU: "gpu",
    DEV_TYPE_IGPU: "igpu",
    DEV_TYPE_ACCEL: "accel",
    DEV_TYPE_META: "meta",
}

# llama_cpp loads its libraries from LLAMA_CPP_LIB_PATH when set (another build, e.g. one with the RPC
# backend). Resolved: a lib folder that is a link to a llama.cpp build dir must match the real paths
# in /proc/self/maps.
LIB_DIR = (
    Path(os.environ["LLAMA_CPP_LIB_PATH"])
    if os.environ.get("LLAMA_CPP_LIB_PATH")
    else Path(llama_cpp.__file__).resolve().parent / "lib"
).resolve()


class LlamaExtError(HarmonicaError, RuntimeError):
    """The installed llama.cpp libraries could not be reached the way this module needs."""


# --- finding the ggml library llama_cpp really uses ---------------------------------------------------


def _elf_needed(path: Path) -> list[str]:
    """DT_NEEDED entries of a 64-bit little-endian ELF file (enough for Linux wheels)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return []
    (e_shoff,) = struct.unpack_from("<Q", data, 0x28)
    e_shentsize, e_shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, e_shoff + i * e_shentsize) for i in range(e_shnum)]
    for sh in sections:
        if sh[1] != 6:  # SHT_DYNAMIC
            continue
        strtab = sections[sh[6]]  # sh_link → .dynstr
        str_off = strtab[4]
        needed: list[str] = []
        for off in range(sh[4], sh[4] + sh[5], 16):
            tag, val = struct.unpack_from("<qQ", data, off)
            if tag == 0:
                break
            if tag == 1:  # DT_NEEDED
                end = data.index(b"\0", str_off + val)
                needed.append(data[str_off + val : end].decode())
        return needed
    return []


def _loaded_library_paths() -> list[str]:
    """Paths of the shared libraries mapped into this process (Linux and macOS)."""
    if sys.platform.startswith("linux"):
        paths: list[str] = []
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split(maxsplit=5)
                if len(parts) == 6 and parts[5].startswith("/"):
                    p = parts[5].strip()
                    if p not in paths:
                        paths.append(p)
        return paths
    if sys.platform == "darwin":
        libc = ctypes.CDLL(None)
        libc._dyld_image_count.restype = ctypes.c_uint32
        libc._dyld_get_image_name.restype = ctypes.c_char_p
        libc._dyld_get_image_name.argtypes = [ctypes.c_uint32]
        return [libc._dyld_get_image_name(i).decode() for i in range(libc._dyld_image_count())]
    return []


def _find_ggml_path() -> str:
    """The ggml library file that libllama is linked against, as already loaded by llama_cpp.

    The wheel ships libggml.so, libggml.so.0 and libggml.so.0.x.y as separate copies; opening a
    different copy than the one libllama uses loads a second ggml with its own backend registry,
    whose buffer types llama.cpp would not recognise.
    """
    loaded = _loaded_library_paths()
    in_dir = [p for p in loaded if Path(p).parent.resolve() == LIB_DIR]
    ggml = [p for p in in_dir if Path(p).name.startswith(("libggml.", "ggml.")) or Path(p).name == "libggml.dylib"]
    if sys.platform.startswith("linux") and len(ggml) > 1:
        libllama = next((p for p in in_dir if Path(p).name.startswith("libllama")), None)
        if libllama:
            needed = set(_elf_needed(Path(libllama)))
            ggml = [p for p in ggml if Path(p).name in needed] or ggml
    if ggml:
        return ggml[0]
    # Not visible in the process map (Windows, or an unusual layout): use the file libllama names.
    for name in ("libggml.so.0", "libggml.so", "libggml.0.dylib", "libggml.dylib", "ggml.dll"):
        if (LIB_DIR / name).exists():
            return str(LIB_DIR / name)
    raise LlamaExtError(f"no ggml library found next to llama.cpp in {LIB_DIR}")


_lib_lock = threading.Lock()
_ggml: ctypes.CDLL | None = None


def ggml_lib() -> ctypes.CDLL:
    """ctypes handle to the ggml library already loaded by llama_cpp, with the functions we use typed."""
    global _ggml
    with _lib_lock:
        if _ggml is not None:
            return _ggml
        path = _find_ggml_path()
        mode = getattr(os, "RTLD_NOLOAD", 0) if sys.platform != "win32" else 0
        try:
            lib = ctypes.CDLL(path, mode=mode | getattr(os, "RTLD_GLOBAL", 0)) if mode else ctypes.CDLL(path)
        except OSError as e:
            raise LlamaExtError(f"could not open {path}: {e}") from e
        vp, sz = ctypes.c_void_p, ctypes.c_size_t
        sigs: dict[str, tuple[list[object], object]] = {
            "ggml_backend_reg_count": ([], sz),
            "ggml_backend_reg_get": ([sz], vp),
            "ggml_backend_reg_name": ([vp], ctypes.c_char_p),
            "ggml_backend_reg_dev_count": ([vp], sz),
            "ggml_backend_reg_dev_get": ([vp, sz], vp),
            "ggml_backend_dev_count": ([], sz),
            "ggml_backend_dev_get": ([sz], vp),
            "ggml_backend_dev_by_type": ([ctypes.c_int], vp),
            "ggml_backend_dev_name": ([vp], ctypes.c_char_p),
            "ggml_backend_dev_description": ([vp], ctypes.c_char_p),
            "ggml_backend_dev_type": ([vp], ctypes.c_int),
            "ggml_backend_dev_memory": ([vp, ctypes.POINTER(sz), ctypes.POINTER(sz)], None),
            "ggml_backend_dev_backend_reg": ([vp], vp),
            "ggml_backend_dev_buffer_type": ([vp], vp),
            "ggml_backend_buft_name": ([vp], ctypes.c_char_p),
            "ggml_backend_dev_by_name": ([ctypes.c_char_p], vp),
            "ggml_backend_reg_get_proc_address": ([vp, ctypes.c_char_p], vp),
            "ggml_threadpool_params_init": ([vp, ctypes.c_int], None),
        }
        for name, (argtypes, restype) in sigs.items():
            try:
                fn = getattr(lib, name)
            except AttributeError as e:
                raise LlamaExtError(f"{path} lacks {name}; this llama-cpp-python build is not supported") from e
            fn.argtypes = argtypes
            fn.restype = restype
        _ggml = lib
        return lib


# --- backends and devices ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BackendDevice:
    """One device the installed llama.cpp can compute on."""

    backend: str  # registry name: "CPU", "CUDA", "Metal", "Vulkan", ...
    name: str  # device name: "CPU", "CUDA0", ...
    description: str
    kind: str  # "cpu", "gpu", "igpu", "accel" or "meta"
    memory_free: int
    memory_total: int


def _s(b: bytes | None) -> str:
    return b.decode("utf-8", "replace") if b else ""


def backend_devices(*, memory: bool = True) -> list[BackendDevice]:
    """Every device in ggml's backend registry, with its memory as the backend reports it.

    memory=False skips the memory query (reported as 0): for CUDA it creates the device's
    context, which then holds a few hundred MB of VRAM for the life of the process.
    """
    load_dynamic_backends()
    lib = ggml_lib()
    out: list[BackendDevice] = []
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        if not dev:
            continue
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        if memory:
            lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        reg = lib.ggml_backend_dev_backend_reg(dev)
        out.append(
            BackendDevice(
                backend=_s(lib.ggml_backend_reg_name(reg)) if reg else "",
                name=_s(lib.ggml_backend_dev_name(dev)),
                description=_s(lib.ggml_backend_dev_description(dev)),
                kind=_DEV_KIND.get(lib.ggml_backend_dev_type(dev), "unknown"),
                memory_free=int(free.value),
                memory_total=int(total.value),
            )
        )
    return out


def available_backends() -> list[str]:
    """Names of the backends registered in the installed llama.cpp, e.g. ["CUDA", "CPU"]."""
    load_dynamic_backends()
    lib = ggml_lib()
    names: list[str] = []
    for i in range(lib.ggml_backend_reg_count()):
        reg = lib.ggml_backend_reg_get(i)
        if reg and lib.ggml_backend_reg_dev_count(reg) > 0:
            names.append(_s(lib.ggml_backend_reg_name(reg)))
    return names


def device_memory(name: str) -> tuple[int, int]:
    """(free, total) bytes of one device as its backend reports them; raises LlamaExtError if unknown."""
    lib = ggml_lib()
    dev = lib.ggml_backend_dev_by_name(name.encode())
    if not dev:
        raise LlamaExtError(f"llama.cpp has no device named {name}")
    free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
    lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
    return int(free.value), int(total.value)


class DeviceList:
    """A NULL-terminated ggml_backend_dev_t array for llama_model_params.devices.

    An empty list hides every GPU from llama.cpp (true CPU-only: with n_gpu_layers=0 alone, a
    visible GPU still gets compute buffers and prompt work); one name keeps llama.cpp on that GPU
    instead of spreading layers over all of them. Keep it alive as long as the model.
    """

    def __init__(self, names: tuple[str, ...] | list[str]) -> None:
        lib = ggml_lib()
        self.names = list(names)
        self._array = (ctypes.c_void_p * (len(self.names) + 1))()
        for i, name in enumerate(self.names):
            dev = lib.ggml_backend_dev_by_name(name.encode())
            if not dev:
                have = ", ".join(d.name for d in backend_devices(memory=False) if d.kind != "cpu") or "none"
                raise LlamaExtError(f"llama.cpp has no device named {name} (GPU devices: {have})")
            if lib.ggml_backend_dev_type(dev) == DEV_TYPE_CPU:
                raise LlamaExtError(f"{name} is the CPU, not a GPU; use an empty device list for CPU only")
            self._array[i] = dev
        self._array[len(self.names)] = None

    @property
    def address(self) -> int:
        return ctypes.addressof(self._array)


# --- dynamically loaded backends (GGML_BACKEND_DL builds) ------------------------------------------

# "load_backend: loaded CPU backend from /…/libggml-cpu-haswell.so"
_LOADED_RE = re.compile(r"loaded (?P<name>\S+) backend from (?P<path>.+?)\s*$")
_loaded_files: dict[str, str] = {}
_backends_lock = threading.Lock()
_backends_tried = False


def load_dynamic_backends() -> dict[str, str]:
    """Load the backend plugins next to libllama (CPU variants, Vulkan, CUDA, Metal) once.

    Returns {backend name: library file} for what was loaded; {} for a build with built-in
    backends. A GGML_BACKEND_DL build registers no backend until asked, and llama.cpp's own
    fallback (ggml_backend_load_all) searches the executable's folder and the current directory,
    not llama_cpp/lib, which in a frozen app is a different folder. Loading from LIB_DIR first
    makes the registry non-empty, so llama.cpp never runs that search. ggml scores every variant
    of a backend against this machine (CPU: instruction sets; GPU: driver) and keeps the best.
    """
    global _backends_tried
    with _backends_lock:
        if _backends_tried:
            return dict(_loaded_files)
        _backends_tried = True
        lib = ggml_lib()
        if lib.ggml_backend_reg_count() > 0:
            return {}  # backends are linked in (no plugins)
        try:
            load_all = lib.ggml_backend_load_all_from_path
        except AttributeError:
            log.warning("the ggml library registers no backend and cannot load plugins")
            return {}
        load_all.argtypes = [ctypes.c_char_p]
        load_all.restype = None
        with capture_llama_log() as lines:
            load_all(os.fsencode(str(LIB_DIR)))
        for _, line in lines:
            m = _LOADED_RE.search(line)
            if m:
                _loaded_files[m.group("name")] = m.group("path")
        if lib.ggml_backend_reg_count() == 0:
            tail = "; ".join(t for _, t in lines[-3:])
            log.error("no llama.cpp backend could be loaded from %s%s", LIB_DIR, f" ({tail})" if tail else "")
        return dict(_loaded_files)


def _variant(path: str) -> str:
    """ "haswell" for libggml-cpu-haswell.so / ggml-cpu-haswell.dll; "" for a plain backend file."""
    stem = Path(path).name.split(".", 1)[0]
    stem = stem[3:] if stem.startswith("lib") else stem
    parts = stem.split("-", 2)  # ggml, backend, variant
    return parts[2] if len(parts) == 3 else ""


@dataclass(frozen=True)
class BackendReport:
    """Which llama.cpp backends this process has, where they came from, and what a model would use."""

    devices: list[BackendDevice]
    files: dict[str, str]  # backend name → plugin file (dynamic builds); {} when built in

    @property
    def dynamic(self) -> bool:
        return bool(self.files)

    @property
    def backends(self) -> list[str]:
        seen: list[str] = []
        for d in self.devices:
            if d.backend not in seen:
                seen.append(d.backend)
        return seen

    def offload_devices(self) -> list[BackendDevice]:
        """The devices llama.cpp offloads layers to by default: every discrete GPU, else one iGPU."""
        gpus = [d for d in self.devices if d.kind == "gpu"]
        if gpus:
            return gpus
        return [d for d in self.devices if d.kind == "igpu"][:1]

    def cpu_variant(self) -> str:
        return _variant(self.files.get("CPU", ""))

    def summary(self, n_gpu_layers: int | None = None) -> str:
        """One line for the hardware panel, e.g. "Vulkan: NVIDIA GeForce RTX 4070 + CPU (haswell)".

        With n_gpu_layers == 0 the GPU is not used for layers, so only the CPU is named.
        """
        cpu = "CPU" + (f" ({self.cpu_variant()})" if self.cpu_variant() else "")
        gpus = [] if n_gpu_layers == 0 else self.offload_devices()
        if not gpus:
            return cpu
        by_backend: dict[str, list[str]] = {}
        for d in gpus:
            by_backend.setdefault(d.backend, []).append(d.description or d.name)
        return " + ".join([f"{b}: {', '.join(names)}" for b, names in by_backend.items()] + [cpu])

    def lines(self) -> list[str]:
        """Every device with its backend and memory, and the plugin file it came from."""
        out = []
        for d in self.devices:
            mem = f", {format_bytes(d.memory_total)}" if d.memory_total and d.kind != "cpu" else ""
            src = self.files.get(d.backend)
            out.append(f"{d.backend} {d.name}: {d.description}{mem}" + (f" [{Path(src).name}]" if src else ""))
        return out


def backend_report() -> BackendReport:
    """The backends and devices of the installed llama.cpp (loading its plugins first if needed)."""
    files = load_dynamic_backends()
    return BackendReport(devices=backend_devices(), files=files)


def cpu_buffer_type() -> int:
    """The CPU device's buffer type (as an address), the same object llama.cpp compares against."""
    load_dynamic_backends()
    lib = ggml_lib()
    dev = lib.ggml_backend_dev_by_type(DEV_TYPE_CPU)
    if not dev:
        raise LlamaExtError("llama.cpp has no CPU device registered")
    buft = lib.ggml_backend_dev_buffer_type(dev)
    if not buft:
        raise LlamaExtError("the CPU device has no buffer type")
    return int(buft)


# --- experts on CPU (--n-cpu-moe) -------------------------------------------------------------------


class _BuftOverride(ctypes.Structure):
    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


def expert_pattern(n_cpu_moe: int, n_layer: int) -> str:
    """Regex for the expert tensors of the first n_cpu_moe blocks (llama.cpp's --n-cpu-moe)."""
    if n_cpu_moe >= n_layer:
        return r"\.ffn_(up|down|gate)_exps"
    blocks = "|".join(str(i) for i in range(n_cpu_moe))
    return rf"^blk\.({blocks})\.ffn_(up|down|gate)_exps"


def partial_expert_pattern(block: int, partial: int) -> str:
    """Regex for `partial` (1 or 2) of the three expert tensors of one block (see PARTIAL_EXPERT_TENSORS)."""
    return rf"^blk\.{block}\.ffn_({'|'.join(PARTIAL_EXPERT_TENSORS[partial])})_exps"


class TensorBuftOverrides:
    """A NULL-terminated llama_model_tensor_buft_override array; keep it alive as long as the model."""

    def __init__(self, entries: list[tuple[str, int]]) -> None:
        self._patterns = [p.encode() for p, _ in entries]  # the C array points into these
        self._array = (_BuftOverride * (len(entries) + 1))()
        for i, (pat, (_, buft)) in enumerate(zip(self._patterns, entries, strict=False)):
            self._array[i].pattern = pat
            self._array[i].buft = buft
        self._array[len(entries)].pattern = None
        self._array[len(entries)].buft = None
        self.patterns = [p for p, _ in entries]

    @property
    def address(self) -> int:
        return ctypes.addressof(self._array)

    @classmethod
    def experts_on_cpu(cls, n_cpu_moe: int, n_layer: int, *, partial: int = 0) -> TensorBuftOverrides | None:
        """Experts of the first n_cpu_moe blocks in host memory, plus `partial` (0-2) of the next block's."""
        n_cpu_moe = max(0, min(n_cpu_moe, n_layer))
        partial = partial if 0 < partial < 3 and n_cpu_moe < n_layer else 0
        if n_layer <= 0 or (n_cpu_moe <= 0 and partial <= 0):
            return None
        cpu = cpu_buffer_type()
        entries = [(expert_pattern(n_cpu_moe, n_layer), cpu)] if n_cpu_moe > 0 else []
        if partial:
            entries.append((partial_expert_pattern(n_cpu_moe, partial), cpu))
        return cls(entries)


# --- a persistent CPU thread pool --------------------------------------------------------------------


class _ThreadpoolParams(ctypes.Structure):
    # struct ggml_threadpool_params (ggml.h; GGML_MAX_N_THREADS = 512)
    _fields_ = [
        ("cpumask", ctypes.c_bool * 512),
        ("n_threads", ctypes.c_int),
        ("prio", ctypes.c_int),
        ("poll", ctypes.c_uint32),
        ("strict_cpu", ctypes.c_bool),
        ("paused", ctypes.c_bool),
    ]


def _cpu_proc(name: str) -> int:
    load_dynamic_backends()
    lib = ggml_lib()
    dev = lib.ggml_backend_dev_by_type(DEV_TYPE_CPU)
    reg = lib.ggml_backend_dev_backend_reg(dev) if dev else None
    addr = lib.ggml_backend_reg_get_proc_address(reg, name.encode()) if reg else None
    if not addr:
        raise LlamaExtError(f"the CPU backend does not offer {name}")
    return int(addr)


class CpuThreadpool:
    """A ggml CPU thread pool that lives as long as a context.

    Without one, ggml starts and joins n threads for every graph it computes on the CPU, that is
    for every generated token (even on a GPU, where the CPU still looks up the token embedding, or
    runs the experts kept in RAM). llama-bench and llama-server attach one; so does the engine.
    """

    def __init__(self, n_threads: int) -> None:
        lib = ggml_lib()
        params = _ThreadpoolParams()
        lib.ggml_threadpool_params_init(ctypes.byref(params), max(1, int(n_threads)))
        new = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.POINTER(_ThreadpoolParams))(_cpu_proc("ggml_threadpool_new"))
        self._free = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(_cpu_proc("ggml_threadpool_free"))
        self.n_threads = params.n_threads
        self.handle: int | None = new(ctypes.byref(params))
        if not self.handle:
            raise LlamaExtError(f"could not start a pool of {n_threads} CPU threads")

    def free(self) -> None:
        """Stop the threads; detach (or free) every context that uses the pool first."""
        if self.handle:
            self._free(self.handle)
            self.handle = None


def attach_threadpools(ctx: object, generation: CpuThreadpool, batch: CpuThreadpool) -> None:
    fn = _llama_fn("llama_attach_threadpool", None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
    fn(ctx, generation.handle, batch.handle)  # type: ignore[operator]


# --- typed calls llama_cpp's bindings do not offer ---------------------------------------------------

_fn_cache: dict[str, object] = {}


def _llama_fn(name: str, restype: object, *argtypes: object) -> object:
    """A separately typed handle to a libllama function (llama_cpp's own binding keeps its types)."""
    fn = _fn_cache.get(name)
    if fn is None:
        proto = ctypes.CFUNCTYPE(restype, *argtypes)  # type: ignore[arg-type]
        fn = proto((name, llama_cpp.llama_cpp._lib))
        _fn_cache[name] = fn
    return fn


def logits_address(ctx: object, i: int) -> int:
    """Address of the logits of output i (-1: the last), 0 if there are none; never copies them."""
    fn = _llama_fn("llama_get_logits_ith", ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32)
    return int(fn(ctx, i) or 0)  # type: ignore[operator]


def sampler_apply(sampler: object, token_data_array: int) -> None:
    """llama_sampler_apply on a llama_token_data_array given by address (e.g. numpy-backed)."""
    fn = _llama_fn("llama_sampler_apply", None, ctypes.c_void_p, ctypes.c_void_p)
    fn(sampler, token_data_array)  # type: ignore[operator]


# --- llama.cpp log routing --------------------------------------------------------------------------

# enum ggml_log_level in this ggml: NONE=0, DEBUG=1, INFO=2, WARN=3, ERROR=4, CONT=5 (continues the last).
_LEVELS = {0: logging.INFO, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
# Warnings llama.cpp prints for every gpt-oss file (its harmony token fix-ups): not worth a warning.
_EXPECTED_WARNINGS = ("load: setting token '<|", "load: special_eog_ids contains both")
_sinks: list[list[tuple[int, str]]] = []
_sinks_lock = threading.Lock()
_last_level = logging.INFO
_partial: list[str] = []


@llama_cpp.llama_log_callback
def _log_callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    global _last_level
    try:
        lvl = _last_level if level == 5 else _LEVELS.get(level, logging.INFO)
        _last_level = lvl
        s = text.decode("utf-8", "replace") if text else ""
        _partial.append(s)
        if not s.endswith("\n"):
            return
        line = "".join(_partial).rstrip("\n")
        _partial.clear()
        if lvl == logging.WARNING and line.startswith(_EXPECTED_WARNINGS):
            lvl = logging.INFO
        with _sinks_lock:
            for sink in _sinks:
                sink.append((lvl, line))
        if log.isEnabledFor(lvl):
            log.log(lvl, "%s", line)
    except Exception:  # noqa: BLE001 - an exception must never cross back into C
        pass


_installed = False


def install_log_router() -> None:
    """Send llama.cpp's log to the `harmonica.llama` logger instead of stderr (idempotent)."""
    global _installed
    if not _installed:
        llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))
        _installed = True


@contextmanager
def capture_llama_log() -> Iterator[list[tuple[int, str]]]:
    """Collect llama.cpp log lines (level, text) emitted inside the block, all levels included."""
    install_log_router()
    sink: list[tuple[int, str]] = []
    with _sinks_lock:
        _sinks.append(sink)
    try:
        yield sink
    finally:
        with _sinks_lock:
            # By identity: two sinks that caught the same lines compare equal as lists.
            for i, s in enumerate(_sinks):
                if s is sink:
                    del _sinks[i]
                    break


# --- what llama.cpp says it allocated ------------------------------------------------------------------

_BUFFER_RE = re.compile(
    r"^(?P<fn>\w+):\s+(?P<buf>\S+)\s+(?P<kind>model|KV|compute|output|RS) buffer size\s*=\s*(?P<mib>[\d.]+) MiB"
)
_OFFLOADED_RE = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")
_OVERRIDE_RE = re.compile(r"tensor (\S+) \(.*\) buffer type overridden to (\S+)")
# Buffers in host memory: plain and repacked CPU buffers, and pinned host buffers of GPU backends.
_HOST_PREFIXES = ("CPU", "AMX", "KleidiAI")


def is_host_buffer(name: str) -> bool:
    return name.startswith(_HOST_PREFIXES) or name.endswith("_Host")


@dataclass
class BufferReport:
    """The buffers llama.cpp reported while loading a model and creating its context."""

    buffers: dict[tuple[str, str], int]  # (buffer name, kind) -> bytes; kind: model, KV, compute, output
    offloaded_layers: tuple[int, int] | None = None  # (offloaded, offloadable)
    overridden: dict[str, str] | None = None  # tensor name -> buffer type it was moved to

    def total(self, kind: str | None = None, where: str | None = None) -> int:
        """Bytes of one kind (None: all) in 'host' or 'device' memory (None: both)."""
        out = 0
        for (name, k), n in self.buffers.items():
            if kind is not None and k != kind:
                continue
            if where == "host" and not is_host_buffer(name):
                continue
            if where == "device" and is_host_buffer(name):
                continue
            out += n
        return out

    def flat(self) -> dict[str, int]:
        return {f"{name} {kind}": n for (name, kind), n in self.buffers.items()}


def parse_buffer_report(lines: Iterable[str]) -> BufferReport:
    """Read llama.cpp's "X model/KV/compute buffer size = N MiB" lines (from a captured log).

    MiB are printed with two decimals, so each figure is exact to about 5 KiB. Lines printed when
    a context is freed (~llama_context) are ignored; a repeated buffer (a second context) is summed.
    """
    buffers: dict[tuple[str, str], int] = {}
    offloaded: tuple[int, int] | None = None
    overridden: dict[str, str] = {}
    for line in lines:
        if line.startswith("~"):
            continue
        m = _BUFFER_RE.search(line)
        if m:
            key = (m.group("buf"), m.group("kind"))
            buffers[key] = buffers.get(key, 0) + round(float(m.group("mib")) * (1 << 20))
            continue
        m2 = _OFFLOADED_RE.search(line)
        if m2:
            offloaded = (int(m2.group(1)), int(m2.group(2)))
            continue
        m3 = _OVERRIDE_RE.search(line)
        if m3:
            overridden[m3.group(1)] = m3.group(2)
    return BufferReport(buffers, offloaded, overridden)
