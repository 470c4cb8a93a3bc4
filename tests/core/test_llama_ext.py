"""ctypes extras: the right ggml library, backend registry, experts-on-CPU overrides, log capture."""

from __future__ import annotations

import ctypes
import logging
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from app.core import llama_ext
from app.core.engine import Engine, LoadSettings, Sampling


def test_opens_the_ggml_copy_llama_cpp_uses() -> None:
    path = Path(llama_ext._find_ggml_path())
    mapped = llama_ext._loaded_library_paths()
    assert str(path) in mapped
    libllama = next(p for p in mapped if Path(p).name.startswith("libllama"))
    assert path.name in llama_ext._elf_needed(Path(libllama))


def test_available_backends_lists_cpu() -> None:
    assert "CPU" in llama_ext.available_backends()
    devices = llama_ext.backend_devices()
    cpu = [d for d in devices if d.kind == "cpu"]
    assert cpu and cpu[0].backend == "CPU"
    assert cpu[0].memory_total > 0 and 0 < cpu[0].memory_free <= cpu[0].memory_total
    assert cpu[0].description


def test_cpu_buffer_type_is_the_registered_one() -> None:
    lib = llama_ext.ggml_lib()
    assert lib.ggml_backend_buft_name(llama_ext.cpu_buffer_type()) == b"CPU"


@pytest.mark.parametrize(
    ("n_cpu_moe", "n_layer", "on_cpu", "not_on_cpu"),
    [
        (
            1,
            24,
            ["blk.0.ffn_up_exps.weight", "blk.0.ffn_gate_exps.bias"],
            ["blk.1.ffn_up_exps.weight", "blk.10.ffn_up_exps.weight"],
        ),
        (
            2,
            24,
            ["blk.1.ffn_down_exps.weight"],
            ["blk.12.ffn_down_exps.weight", "blk.2.ffn_gate_exps.weight", "blk.0.attn_q.weight"],
        ),
        (24, 24, ["blk.23.ffn_down_exps.weight", "blk.5.ffn_up_exps.weight"], ["blk.0.ffn_gate_inp.weight"]),
    ],
)
def test_expert_pattern(n_cpu_moe: int, n_layer: int, on_cpu: list[str], not_on_cpu: list[str]) -> None:
    pat = re.compile(llama_ext.expert_pattern(n_cpu_moe, n_layer))
    assert all(pat.search(n) for n in on_cpu)
    assert not any(pat.search(n) for n in not_on_cpu)


def test_overrides_array_is_null_terminated() -> None:
    o = llama_ext.TensorBuftOverrides.experts_on_cpu(3, 24)
    assert o is not None
    arr = (llama_ext._BuftOverride * 2).from_address(o.address)
    assert arr[0].pattern == llama_ext.expert_pattern(3, 24).encode()
    assert arr[0].buft == llama_ext.cpu_buffer_type()
    assert arr[1].pattern is None and arr[1].buft is None
    assert llama_ext.TensorBuftOverrides.experts_on_cpu(0, 24) is None


def test_n_cpu_moe_keeps_first_blocks_experts_on_cpu(tiny_model_factory: Callable[..., Path]) -> None:
    path = tiny_model_factory("moe.gguf", n_layer=3)
    e = Engine()
    with llama_ext.capture_llama_log() as lines:
        info = e.load(path, LoadSettings(n_ctx=128, n_cpu_moe=1))
    try:
        overridden = {
            m.group(1) for _, t in lines if (m := re.match(r"tensor (\S+) .*buffer type overridden to CPU", t))
        }
        assert overridden == {f"blk.0.ffn_{k}_exps.{w}" for k in ("up", "down", "gate") for w in ("weight", "bias")}
        assert info.expert_overrides == [llama_ext.expert_pattern(1, 3)]
        assert len(list(e.stream("<|start|>user<|message|>hi", Sampling(seed=1, max_tokens=3)))) == 3
    finally:
        e.unload()
    # Without n_cpu_moe nothing is overridden.
    with llama_ext.capture_llama_log() as lines:
        e.load(path, LoadSettings(n_ctx=128))
    e.unload()
    assert not any("overridden" in t for _, t in lines)


@pytest.mark.parametrize(
    ("n_cpu_moe", "partial", "kinds"), [(1, 1, ("down",)), (1, 2, ("gate", "up")), (0, 2, ("gate", "up"))]
)
def test_partial_block_keeps_named_expert_tensors_on_cpu(
    tiny_model_factory: Callable[..., Path], n_cpu_moe: int, partial: int, kinds: tuple[str, ...]
) -> None:
    """A third of a block at a time: the whole first n_cpu_moe blocks, then 1 or 2 tensors of the next."""
    path = tiny_model_factory("partial.gguf", n_layer=3)
    e = Engine()
    with llama_ext.capture_llama_log() as lines:
        e.load(path, LoadSettings(n_ctx=128, n_cpu_moe=n_cpu_moe, n_cpu_moe_partial=partial))
    try:
        overridden = {
            m.group(1) for _, t in lines if (m := re.match(r"tensor (\S+) .*buffer type overridden to CPU", t))
        }
        whole = {
            f"blk.{b}.ffn_{k}_exps.{w}"
            for b in range(n_cpu_moe)
            for k in ("up", "down", "gate")
            for w in ("weight", "bias")
        }
        part = {f"blk.{n_cpu_moe}.ffn_{k}_exps.{w}" for k in kinds for w in ("weight", "bias")}
        assert overridden == whole | part
        assert len(list(e.stream("<|start|>user<|message|>hi", Sampling(seed=1, max_tokens=3)))) == 3
    finally:
        e.unload()
    # The last block has no next one: a partial request past it adds nothing.
    o = llama_ext.TensorBuftOverrides.experts_on_cpu(3, 3, partial=2)
    assert o is not None and o.patterns == [llama_ext.expert_pattern(3, 3)]
    assert llama_ext.TensorBuftOverrides.experts_on_cpu(0, 3, partial=0) is None


def test_engine_attaches_one_cpu_threadpool_per_thread_count(tiny_model_path: Path) -> None:
    e = Engine()
    e.load(tiny_model_path, LoadSettings(n_ctx=128, n_threads=2, n_threads_batch=2))
    try:
        assert len(e._threadpools) == 1 and e._threadpools[0].handle and e._threadpools[0].n_threads == 2
        assert len(list(e.stream("<|start|>user<|message|>hi", Sampling(seed=1, max_tokens=3)))) == 3
        e.load(tiny_model_path, LoadSettings(n_ctx=128, n_threads=1, n_threads_batch=2))
        assert [p.n_threads for p in e._threadpools] == [1, 2]
        assert len(list(e.stream("<|start|>user<|message|>hi", Sampling(seed=1, max_tokens=3)))) == 3
    finally:
        pools = list(e._threadpools)
        e.unload()
    assert e._threadpools == [] and all(p.handle is None for p in pools)


def test_log_router_levels_and_capture(tiny_model_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="harmonica.llama")
    e = Engine()
    with llama_ext.capture_llama_log() as lines:
        e.load(tiny_model_path, LoadSettings(n_ctx=128))
    e.unload()
    levels = {lvl for lvl, _ in lines}
    assert logging.INFO in levels and logging.DEBUG in levels
    assert any("print_info" in t or "llama_model_loader" in t for _, t in lines)
    assert all("\n" not in t for _, t in lines)
    # The same lines reach the Python logger instead of stderr.
    assert any(r.name == "harmonica.llama" for r in caplog.records)


def test_nested_captures_each_get_every_line(tiny_model_path: Path) -> None:
    # Engine.load captures the log itself; a caller's capture around it must keep working and see
    # the lines after the inner capture ended too (sinks are removed by identity, not equality).
    e = Engine()
    with llama_ext.capture_llama_log() as outer:
        e.load(tiny_model_path, LoadSettings(n_ctx=128))
        n_after_load = len(outer)
        e.unload()
        with llama_ext.capture_llama_log() as inner:
            e.load(tiny_model_path, LoadSettings(n_ctx=128))
        e.unload()
    assert n_after_load > 0 and inner
    assert len(outer) > n_after_load + len(inner)
    assert not llama_ext._sinks


def test_parse_buffer_report() -> None:
    lines = [
        "load_tensors: offloaded 25/25 layers to GPU",
        "load_tensors:        CUDA0 model buffer size =  2000.50 MiB",
        "load_tensors:    CUDA_Host model buffer size =  9000.00 MiB",
        "load_tensors:   CPU_Mapped model buffer size =   586.82 MiB",
        "llama_context:  CUDA_Host  output buffer size =     0.77 MiB",
        "llama_kv_cache:        CUDA0 KV buffer size =   192.00 MiB",
        "llama_kv_cache:        CUDA0 KV buffer size =    12.00 MiB",
        "sched_reserve:        CUDA0 compute buffer size =   398.38 MiB",
        "sched_reserve:    CUDA_Host compute buffer size =    13.63 MiB",
        "tensor blk.0.ffn_up_exps.weight (101 MiB mxfp4) buffer type overridden to CUDA_Host",
        "~llama_context:        CUDA0 compute buffer size is 398.3770 MiB, matches expectation of 398.3770 MiB",
    ]
    r = llama_ext.parse_buffer_report(lines)
    MiB = 1 << 20
    assert r.offloaded_layers == (25, 25)
    assert r.buffers[("CUDA0", "KV")] == 204 * MiB
    assert r.total("model", "device") == round(2000.5 * MiB)
    assert r.total("model", "host") == 9000 * MiB + round(586.82 * MiB)
    assert r.total(where="device") == round(2000.5 * MiB) + 204 * MiB + round(398.38 * MiB)
    assert r.overridden == {"blk.0.ffn_up_exps.weight": "CUDA_Host"}
    assert r.flat()["CUDA0 compute"] == round(398.38 * MiB)
    assert llama_ext.is_host_buffer("CPU_REPACK") and llama_ext.is_host_buffer("CUDA_Host")
    assert not llama_ext.is_host_buffer("CUDA0") and not llama_ext.is_host_buffer("Metal")


def test_device_list_and_memory() -> None:
    empty = llama_ext.DeviceList(())
    assert (ctypes.c_void_p * 1).from_address(empty.address)[0] is None
    with pytest.raises(llama_ext.LlamaExtError, match="no device named Nope"):
        llama_ext.DeviceList(["Nope"])
    free, total = llama_ext.device_memory("CPU")
    assert 0 < free <= total
    with pytest.raises(llama_ext.LlamaExtError):
        llama_ext.device_memory("Nope")
    assert all(d.memory_total == 0 for d in llama_ext.backend_devices(memory=False))


# --- backend report (which backend is in use) -----------------------------------------------------


def _dev(backend: str, name: str, kind: str, desc: str = "", total: int = 8 * 10**9) -> llama_ext.BackendDevice:
    return llama_ext.BackendDevice(
        backend=backend, name=name, description=desc or name, kind=kind, memory_free=total, memory_total=total
    )


def test_backend_report_of_this_build() -> None:
    report = llama_ext.backend_report()
    assert "CPU" in report.backends
    assert report.summary(0).startswith("CPU")
    assert any(line.startswith("CPU ") for line in report.lines())
    for path in report.files.values():  # a GGML_BACKEND_DL build names the plugin files it loaded
        assert Path(path).is_file() and Path(path).parent.resolve() == llama_ext.LIB_DIR
    assert llama_ext.load_dynamic_backends() == report.files  # loads once, answers the same after


def test_summary_names_the_gpus_llama_cpp_offloads_to() -> None:
    files = {"CPU": "/x/libggml-cpu-haswell.so", "Vulkan": "/x/libggml-vulkan.so"}
    both = llama_ext.BackendReport(
        devices=[
            _dev("Vulkan", "Vulkan0", "gpu", "RTX A"),
            _dev("Vulkan", "Vulkan1", "igpu", "Iris"),
            _dev("Vulkan", "Vulkan2", "gpu", "RTX B"),
            _dev("CPU", "CPU", "cpu"),
        ],
        files=files,
    )
    assert both.dynamic and both.backends == ["Vulkan", "CPU"] and both.cpu_variant() == "haswell"
    assert both.summary() == "Vulkan: RTX A, RTX B + CPU (haswell)"  # discrete GPUs only; the iGPU is not used
    assert both.summary(n_gpu_layers=0) == "CPU (haswell)"
    assert "Vulkan Vulkan0: RTX A, 7.5 GiB [libggml-vulkan.so]" in both.lines()
    igpu_only = llama_ext.BackendReport(
        devices=[_dev("Metal", "MTL0", "igpu", "Apple M2"), _dev("CPU", "CPU", "cpu")], files={}
    )
    assert igpu_only.summary(n_gpu_layers=99) == "Metal: Apple M2 + CPU" and not igpu_only.dynamic
    cpu_only = llama_ext.BackendReport(
        devices=[_dev("CPU", "CPU", "cpu")], files={"CPU": r"C:\h\ggml-cpu-alderlake.dll"}
    )
    assert cpu_only.summary() == "CPU (alderlake)"


@pytest.mark.parametrize(
    ("line", "name", "path"),
    [
        (
            "load_backend: loaded CPU backend from /opt/h/_internal/llama_cpp/lib/libggml-cpu-haswell.so",
            "CPU",
            "/opt/h/_internal/llama_cpp/lib/libggml-cpu-haswell.so",
        ),
        (
            "load_backend: loaded Vulkan backend from C:\\Program Files\\Harmonica\\ggml-vulkan.dll",
            "Vulkan",
            "C:\\Program Files\\Harmonica\\ggml-vulkan.dll",
        ),
    ],
)
def test_loaded_backend_log_line(line: str, name: str, path: str) -> None:
    m = llama_ext._LOADED_RE.search(line)
    assert m and m.group("name") == name and m.group("path") == path


def test_plugin_build_loads_its_backends_from_lib_dir() -> None:
    """In a GGML_BACKEND_DL build (packaging/build/venv, made by packaging/linux/build.sh) nothing is
    registered until load_dynamic_backends() runs; then the best CPU variant is loaded from LIB_DIR."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    py = root / "packaging" / "build" / "venv" / "bin" / "python"
    if not py.exists():
        pytest.skip("no packaging build environment (run packaging/linux/build.sh)")
    code = (
        "import json, llama_cpp; from app.core import llama_ext as L; lib = L.ggml_lib();"
        "before = lib.ggml_backend_reg_count(); r = L.backend_report();"
        "print(json.dumps({'before': before, 'files': r.files, 'backends': r.backends, 'summary': r.summary()}))"
    )
    done = subprocess.run([str(py), "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    import json

    data = json.loads(done.stdout.strip().splitlines()[-1])
    if data["before"] > 0:
        pytest.skip("the build environment's llama.cpp has built-in backends")
    assert "CPU" in data["files"] and "CPU" in data["backends"]
    assert Path(data["files"]["CPU"]).name.startswith("libggml-cpu-")
    assert data["summary"].startswith(("CPU (", "Vulkan"))


def test_nested_log_captures_each_get_every_line() -> None:
    with llama_ext.capture_llama_log() as outer:
        with llama_ext.capture_llama_log() as inner:
            llama_ext._log_callback(2, b"same line\n", None)
        llama_ext._log_callback(2, b"outer only\n", None)
    assert inner == [(logging.INFO, "same line")]
    assert outer == [(logging.INFO, "same line"), (logging.INFO, "outer only")]
    assert not llama_ext._sinks
