"""Benchmark: the planner's memory estimates against the buffers llama.cpp reports allocating.

Writes random-weight gpt-oss models of a few shapes, loads each through the app's path
(plan → LoadSettings → Engine.load) at several context sizes and prints, per buffer kind, what the
planner estimated and what llama.cpp allocated. On the CPU by default; with --gpu the plans put
everything on the first NVIDIA GPU, then the experts of every block on the CPU, and the GPU side
is compared too. Run:  python -m bench.planner_estimates [--gpu] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

# llama_cpp before numpy (design.md).
import llama_cpp  # noqa: F401

from app.core import hardware
from app.core.engine import Engine
from app.core.hardware import GiB, HardwareProfile
from app.core.planner import Wishes, model_info_for_file, plan
from tests.fixtures.gguf_factory import write_gpt_oss_gguf

MiB = 1 << 20
SHAPES: dict[str, dict[str, object]] = {
    "small f32": dict(n_layer=2, n_embd=64, n_ctx_train=32768),
    "q8 dense, mxfp4 experts, 8k vocab": dict(
        n_layer=4,
        n_embd=256,
        n_head=8,
        n_head_kv=4,
        head_dim=32,
        n_expert=8,
        n_expert_used=4,
        n_ff_exp=256,
        vocab_size=8000,
        expert_type="MXFP4",
        dense_type="Q8_0",
        n_ctx_train=32768,
    ),
    "20b-like (f16, mxfp4, 20k vocab)": dict(
        n_layer=4,
        n_embd=384,
        n_head=12,
        n_head_kv=2,
        head_dim=64,
        n_expert=16,
        n_expert_used=4,
        n_ff_exp=384,
        vocab_size=20000,
        expert_type="MXFP4",
        dense_type="F16",
        n_ctx_train=32768,
    ),
}
CONTEXTS = (512, 4096, 16384)


def _kind_sum(buffers: dict[str, int], kind: str, where: str) -> int:
    from app.core.llama_ext import is_host_buffer

    out = 0
    for key, n in buffers.items():
        name, _, k = key.rpartition(" ")
        if k == kind and (is_host_buffer(name) == (where == "host")):
            out += n
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--gpu", action="store_true", help="also compare GPU buffers (needs an NVIDIA GPU and a CUDA build)"
    )
    ap.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    if args.gpu:
        prof = hardware.detect()
        if not any(g.vendor == "nvidia" and g.device for g in prof.gpus):
            print("no NVIDIA GPU that llama.cpp can use; run without --gpu", file=sys.stderr)
            return 2
        setups = [("GPU, all", {}), ("GPU, experts on CPU", {"n_cpu_moe": 99})]
    else:
        prof = HardwareProfile(
            ram_total=64 * GiB, ram_available=48 * GiB, cores_physical=2, cores_logical=2, backends=["CPU"]
        )
        # This CPU's features decide llama.cpp's weight layouts (AMX grows Q8_0 matrices).
        prof.cpu_features = hardware.probe_cpu_name(hardware.Probes(), hardware.platform.system())[1]
        setups = [("CPU", {"backend": "cpu"})]
    rows: list[dict[str, Any]] = []
    e = Engine()
    with tempfile.TemporaryDirectory() as tmp:
        for name, shape in SHAPES.items():
            path = write_gpt_oss_gguf(Path(tmp) / "m.gguf", **shape)  # type: ignore[arg-type]
            info = model_info_for_file(path)
            for setup, extra in setups:
                for n_ctx in CONTEXTS:
                    w = Wishes(n_ctx=n_ctx, use_mmap=False, **extra)  # type: ignore[arg-type]
                    if "n_cpu_moe" in extra:
                        w.n_cpu_moe, w.n_gpu_layers = info.n_layer, info.n_layer + 1
                    p = plan(prof, info, w)
                    loaded = e.load(path, p.to_load_settings())
                    e.unload()
                    est = p.estimate
                    row = dict(shape=name, setup=setup, n_ctx=n_ctx)
                    for where, (wt, kv, cp) in (
                        ("host", (est.host_weights, est.host_kv, est.host_compute)),
                        ("device", (est.gpu_weights, est.gpu_kv, est.gpu_compute)),
                    ):
                        if where == "device" and not p.use_gpu:
                            continue
                        for kind, estimated in (("model", wt), ("KV", kv), ("compute", cp)):
                            row[f"{where} {kind} est"] = estimated
                            row[f"{where} {kind} actual"] = _kind_sum(loaded.buffers, kind, where)
                    rows.append(row)
    cols = [c for c in rows[0] if c.endswith(" est")]
    print("| shape | where | n_ctx | " + " | ".join(c[:-4] + " est / actual (MiB)" for c in cols) + " |")
    print("|---|---|---:|" + "---:|" * len(cols))
    for r in rows:
        cells = []
        for c in cols:
            est, act = r.get(c), r.get(c[:-4] + " actual")
            if est is None:
                cells.append("")
            else:
                ratio = f" ({est / act:.2f}×)" if act else ""
                cells.append(f"{est / MiB:.2f} / {act / MiB:.2f}{ratio}")
        print(f"| {r['shape']} | {r['setup']} | {r['n_ctx']:,} | " + " | ".join(cells) + " |")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "planner_estimates.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
