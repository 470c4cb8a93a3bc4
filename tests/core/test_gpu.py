"""On a real NVIDIA GPU with a CUDA build: detection, a planned load on the GPU, experts kept on the host.

Skipped cleanly where there is no NVIDIA GPU or the installed llama.cpp has no CUDA backend.
Run: python -m pytest -q -m gpu tests/core/test_gpu.py
"""

from __future__ import annotations

# llama_cpp before numpy (design.md: the other order crashed the CUDA build at model load).
try:
    import llama_cpp
except ImportError:  # pragma: no cover - the whole suite needs it anyway
    llama_cpp = None  # type: ignore[assignment]

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.core.hardware import GiB, HardwareProfile

pytestmark = pytest.mark.gpu


def _why_no_gpu() -> str | None:
    if llama_cpp is None:
        return "llama-cpp-python is not installed"
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            if pynvml.nvmlDeviceGetCount() < 1:
                return "NVML sees no NVIDIA GPU"
        finally:
            pynvml.nvmlShutdown()
    except Exception as e:  # noqa: BLE001 - any failure means: no usable NVIDIA GPU here
        return f"no NVIDIA GPU ({type(e).__name__}: {e})"
    from app.core import llama_ext

    if "CUDA" not in llama_ext.available_backends():
        return f"this llama.cpp build has no CUDA backend (it has {', '.join(llama_ext.available_backends())})"
    return None


_REASON = _why_no_gpu()
if _REASON is not None:
    pytest.skip(_REASON, allow_module_level=True)

from app.core import hardware, llama_ext  # noqa: E402
from app.core.engine import Engine, LoadSettings, Sampling  # noqa: E402
from app.core.planner import Wishes, model_info_for_file, plan, plan_for_file  # noqa: E402

MiB = 1 << 20
# Big enough that every buffer is several MiB (llama.cpp prints two decimals), small enough to
# write in a second: MXFP4 experts and F16 matrices, as in the 20b's layout.
SHAPE: dict[str, object] = dict(
    n_layer=4,
    n_embd=512,
    n_head=8,
    n_head_kv=2,
    head_dim=64,
    n_expert=16,
    n_expert_used=4,
    n_ff_exp=512,
    vocab_size=16000,
    n_ctx_train=16384,
    expert_type="MXFP4",
    dense_type="F16",
)
PROMPT = "<|start|>user<|message|>hello world<|end|><|start|>assistant"


@pytest.fixture(scope="module")
def profile() -> HardwareProfile:
    return hardware.detect()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.fixtures.gguf_factory import write_gpt_oss_gguf

    return write_gpt_oss_gguf(tmp_path_factory.mktemp("gpu") / "gpu-small.gguf", **SHAPE)  # type: ignore[arg-type]


@pytest.fixture
def engine() -> Iterator[Engine]:
    e = Engine()
    yield e
    e.unload()


def _loaded(engine: Engine, path: Path, settings: LoadSettings) -> tuple[object, llama_ext.BufferReport]:
    with llama_ext.capture_llama_log() as lines:
        info = engine.load(path, settings)
    return info, llama_ext.parse_buffer_report(t for _, t in lines)


def test_detect_finds_the_gpu(profile: HardwareProfile) -> None:
    nv = [g for g in profile.gpus if g.vendor == "nvidia"]
    assert nv, profile.notes
    for g in nv:
        assert 1 * GiB <= g.vram_total <= 1024 * GiB, g
        assert 0 < g.vram_free <= g.vram_total, g
        assert g.driver and g.name.startswith("NVIDIA"), g
        assert g.device.startswith("CUDA"), (g, profile.llama_devices)
    assert profile.backends is not None and "CUDA" in profile.backends
    # NVML and llama.cpp agree on the card's size.
    free, total = llama_ext.device_memory(nv[0].device)
    assert abs(total - nv[0].vram_total) < 0.05 * nv[0].vram_total
    assert 0 < free <= total
    assert not any(n.startswith(("NVIDIA:", "llama.cpp")) for n in profile.notes), profile.notes


def test_planned_load_runs_on_the_gpu(profile: HardwareProfile, model: Path, engine: Engine) -> None:
    p = plan_for_file(model, profile, Wishes(n_ctx=4096))
    assert p.fits and p.mode == "gpu" and p.use_gpu and p.backend == "CUDA", p.reasons
    settings = p.to_load_settings()
    assert settings.devices == (p.device,) and settings.n_gpu_layers == SHAPE["n_layer"] + 1  # type: ignore[operator]
    _info, report = _loaded(engine, model, settings)
    n = int(SHAPE["n_layer"]) + 1  # type: ignore[call-overload]
    assert report.offloaded_layers == (n, n)
    assert not any(
        llama_ext.is_host_buffer(name) for (name, kind) in report.buffers if kind == "model" and name != "CPU_Mapped"
    ), report.buffers
    dev = p.device
    assert (
        report.buffers[(dev, "model")] > 0 and report.buffers[(dev, "KV")] > 0 and report.buffers[(dev, "compute")] > 0
    )
    # The estimate against what llama.cpp allocated on the GPU: weights and KV within the 0.01 MiB
    # it prints (plus alignment), compute never above the estimate.
    e = p.estimate
    assert report.buffers[(dev, "model")] == pytest.approx(e.gpu_weights, abs=1 * MiB)
    assert report.total("KV", "device") == pytest.approx(e.gpu_kv, abs=0.05 * MiB)
    assert report.total("compute", "device") <= e.gpu_compute, (report.buffers, e)
    out = list(engine.stream(PROMPT, Sampling(seed=1, max_tokens=16)))
    assert len(out) == 16
    assert engine.last_stats is not None and engine.last_stats.tokens_per_s > 0


def test_experts_on_cpu_stay_in_host_buffers(profile: HardwareProfile, model: Path, engine: Engine) -> None:
    L = int(SHAPE["n_layer"])  # type: ignore[call-overload]
    for n_cpu_moe, mmap in ((L, False), (1, True)):
        p = plan(
            profile,
            model_info_for_file(model),
            Wishes(n_ctx=2048, n_gpu_layers=L + 1, n_cpu_moe=n_cpu_moe, use_mmap=mmap),
        )
        assert p.fits and p.mode == "gpu+cpu-experts"
        _info, report = _loaded(engine, model, p.to_load_settings())
        assert report.offloaded_layers == (L + 1, L + 1)
        moved = report.overridden or {}
        expected = {
            f"blk.{i}.ffn_{k}_exps.{w}"
            for i in range(n_cpu_moe)
            for k in ("up", "down", "gate")
            for w in ("weight", "bias")
        }
        assert set(moved) == expected, moved
        assert all(llama_ext.is_host_buffer(b) for b in moved.values()), moved
        # Where the bytes went: the GPU holds everything but those experts (and the embeddings,
        # which llama.cpp always keeps on the host); the host holds the experts.
        e = p.estimate
        assert report.total("model", "device") == pytest.approx(e.gpu_weights, abs=1 * MiB)
        if mmap:
            # The mapped buffer spans the file from the first to the last host tensor, so it also
            # covers tensors that went to the GPU (page cache, not needed after loading).
            assert report.total("model", "host") >= e.host_weights - 1 * MiB
        else:
            # Without mmap the host tensors are copied into CUDA's pinned memory: exactly them.
            assert report.total("model", "host") == pytest.approx(e.host_weights, rel=0.02, abs=1 * MiB)
            assert any(name.endswith("_Host") for (name, kind) in report.buffers if kind == "model"), report.buffers
        assert len(list(engine.stream(PROMPT, Sampling(seed=2, max_tokens=8)))) == 8
        engine.unload()


def test_hidden_gpu_takes_no_gpu_buffers(model: Path, engine: Engine) -> None:
    # llama.cpp still logs "offloaded 5/5 layers" (it reports the setting, not the devices): the
    # buffers are the proof.
    _info, report = _loaded(engine, model, LoadSettings(n_ctx=2048, n_gpu_layers=99, devices=()))
    assert report.total(where="device") == 0, report.buffers
    assert report.total("model", "host") > 0
    assert len(list(engine.stream(PROMPT, Sampling(seed=3, max_tokens=4)))) == 4


def test_measured_vram_stays_within_the_estimate(profile: HardwareProfile, model: Path, engine: Engine) -> None:
    """NVML's view of this process after a planned load: at most the planner's estimate."""
    import pynvml

    gpu = next(g for g in profile.gpus if g.vendor == "nvidia")
    p = plan_for_file(model, profile, Wishes(n_ctx=8192))
    pynvml.nvmlInit()
    try:
        h = pynvml.nvmlDeviceGetHandleByIndex(gpu.index)
        before = int(pynvml.nvmlDeviceGetMemoryInfo(h).used)
        _loaded(engine, model, p.to_load_settings())
        list(engine.stream(PROMPT, Sampling(seed=4, max_tokens=8)))
        used = int(pynvml.nvmlDeviceGetMemoryInfo(h).used) - before
    finally:
        pynvml.nvmlShutdown()
    # The CUDA context may already exist from earlier tests (then it is not in `used`), so only
    # the upper bound is a fair check on a shared test process.
    assert used <= p.est_vram_bytes, (used / MiB, p.est_vram_bytes / MiB, p.estimate)


def test_partial_expert_block_splits_at_tensor_granularity(
    profile: HardwareProfile, model: Path, engine: Engine
) -> None:
    """n_cpu_moe_partial keeps 1 (down) or 2 (gate, up) of the next block's expert tensors on the host."""
    L = int(SHAPE["n_layer"])  # type: ignore[call-overload]
    info = model_info_for_file(model)
    from app.core.planner import Placement, estimate

    gpu = next(g for g in profile.gpus if g.vendor == "nvidia")
    for partial, kinds in ((1, ("down",)), (2, ("gate", "up"))):
        settings = LoadSettings(
            n_ctx=2048,
            n_gpu_layers=L + 1,
            n_cpu_moe=1,
            n_cpu_moe_partial=partial,
            use_mmap=False,
            devices=(gpu.device,),
        )
        _info, report = _loaded(engine, model, settings)
        moved = set(report.overridden or {})
        expected = {f"blk.0.ffn_{k}_exps.{w}" for k in ("up", "down", "gate") for w in ("weight", "bias")}
        expected |= {f"blk.1.ffn_{k}_exps.{w}" for k in kinds for w in ("weight", "bias")}
        assert moved == expected, moved
        e = estimate(info, Placement(L + 1, 1, True, partial), 2048, gpu=gpu, n_batch=512)
        assert report.total("model", "device") == pytest.approx(e.gpu_weights, abs=1 * MiB)
        assert report.total("model", "host") == pytest.approx(e.host_weights, rel=0.02, abs=1 * MiB)
        assert len(list(engine.stream(PROMPT, Sampling(seed=2, max_tokens=8)))) == 8
        engine.unload()


def test_backend_sampling_on_the_gpu_draws_from_the_softmax(tmp_path: Path, profile: HardwareProfile) -> None:
    """With the output layer on the GPU the engine samples there; the draws follow softmax(logits)."""
    from app.core.sampler import logits_view
    from tests.fixtures.gguf_factory import write_gpt_oss_gguf
    from tests.fixtures.stats import Z_LIMIT, chi_square_z, softmax

    path = write_gpt_oss_gguf(tmp_path / "peaked.gguf", scale=0.2)
    p = plan_for_file(path, profile, Wishes(n_ctx=1024))
    assert p.mode == "gpu"
    ref_engine, gpu_engine = Engine(), Engine()
    try:
        settings = p.to_load_settings()
        settings.backend_sampling = False
        ref_engine.load(path, settings)
        tokens = ref_engine.tokenize(PROMPT)
        list(ref_engine.stream(tokens, Sampling(max_tokens=0)))
        x = logits_view(llama_ext.logits_address(ref_engine._ctx, -1), ref_engine._n_vocab).copy()
        gpu_engine.load(path, p.to_load_settings())
        assert gpu_engine._backend_sampling
        # Stop tokens end the turn unseen: pool them into one outcome (index n_vocab).
        stops = {
            t
            for t in range(len(x))
            if t in gpu_engine._stop_ids
            or (t != gpu_engine._end_id and llama_cpp.llama_vocab_is_eog(gpu_engine._vocab, t))
        }
        probs = list(softmax(x)) + [0.0]
        for t in stops:
            probs[-1] += probs[t]
            probs[t] = 0.0
        draws = []
        for i in range(1500):
            got = list(gpu_engine.stream(tokens, Sampling(seed=i, max_tokens=1)))
            draws.append(got[0][0] if got else len(x))
        assert gpu_engine._bchain is not None  # sampled inside the decode, on the GPU
        assert chi_square_z(draws, probs) < Z_LIMIT
        a = [t for t, _ in gpu_engine.stream(tokens, Sampling(seed=5, max_tokens=20))]
        assert a == [t for t, _ in gpu_engine.stream(tokens, Sampling(seed=5, max_tokens=20))]
    finally:
        ref_engine.unload()
        gpu_engine.unload()
