"""Planning with GPU workers: gpt-oss-120b on a 24 GB GPU plus two 48 GB workers, the split llama.cpp will make, and the warning."""

from __future__ import annotations

from app.core.gguf_info import GPT_OSS_120B_SHAPE, info_for_shape
from app.core.planner import GiB, Wishes, plan
from app.core.remote.pool import PooledPlan, plan_with_workers
from app.core.remote.rpc import UNENCRYPTED_WARNING, WorkerDevice
from tests.core.test_planner import cpu_only, nvidia

M120 = info_for_shape("gpt-oss-120b", GPT_OSS_120B_SHAPE)
M20 = info_for_shape("gpt-oss-20b")


def worker(endpoint: str, free_gib: float, index: int = 0, label: str = "", device: str = "RPC0") -> WorkerDevice:
    return WorkerDevice(endpoint, index, int(free_gib * GiB), int((free_gib + 1) * GiB), label, device)


def layers_by_device(p: PooledPlan, n_layer: int) -> list[str]:
    """The device of every layer (output last), by llama.cpp's rule for tensor_split."""
    ngl = p.n_gpu_layers
    start = n_layer + 1 - ngl
    total = sum(p.tensor_split)
    cum = []
    acc = 0.0
    for s in p.tensor_split:
        acc += s / total
        cum.append(acc)
    out = []
    for il in range(n_layer + 1):
        if il < start:
            out.append("CPU")
            continue
        x = (il - start) / ngl
        out.append(p.pooled_devices[next(i for i, c in enumerate(cum) if c > x)])
    return out


def test_120b_spans_the_local_gpu_and_two_workers() -> None:
    profile = nvidia(24, ram_gib=32)
    base = plan(profile, M120, Wishes(n_ctx=8192))
    assert base.mode != "gpu"
    workers = [
        worker("10.0.0.2:50052", 46, label="box-a", device="RPC0"),
        worker("10.0.0.3:50052", 46, label="box-b", device="RPC1"),
    ]
    p = plan_with_workers(base, M120, workers)
    assert isinstance(p, PooledPlan) and p.fits and p.mode == "gpu"
    assert p.pooled_devices[-1] == base.device or p.pooled_devices[-1].startswith("RPC")
    assert sum(s.layers for s in p.shares) == M120.n_layer + 1
    for s in p.shares:
        assert s.budget == 0 or s.bytes <= s.budget
    placed = layers_by_device(p, M120.n_layer)
    assert placed.count("CPU") == 0
    assert UNENCRYPTED_WARNING in p.reasons
    settings = p.to_load_settings()
    assert settings.devices == p.pooled_devices and settings.tensor_split == p.tensor_split
    assert settings.n_gpu_layers == M120.n_layer + 1 and settings.n_cpu_moe == 0
    assert "layers on box-a" in p.summary()


def test_split_follows_llama_cpp_rule_with_cpu_remainder() -> None:
    profile = cpu_only(64, 60)
    base = plan(profile, M20, Wishes(n_ctx=4096))
    p = plan_with_workers(base, M20, [worker("127.0.0.1:50052", 5)])
    assert isinstance(p, PooledPlan) and p.mode == "layer-split"
    placed = layers_by_device(p, M20.n_layer)
    cpu = next(s for s in p.shares if s.device == "CPU").layers
    assert placed[:cpu] == ["CPU"] * cpu and set(placed[cpu:]) == {"RPC0"}
    assert p.tensor_split == (float(M20.n_layer + 1 - cpu),)


def test_workers_are_not_used_when_everything_fits_locally() -> None:
    base = plan(nvidia(80), M20, Wishes(n_ctx=8192))
    assert plan_with_workers(base, M20, [worker("10.0.0.2:50052", 46)]) is base
    assert any("not used" in r for r in base.reasons)


def test_tiny_workers_are_left_out() -> None:
    base = plan(cpu_only(64, 60), M20, Wishes(n_ctx=4096))
    assert plan_with_workers(base, M20, [worker("10.0.0.2:50052", 0.1)]) is base
