#!/usr/bin/env bash
# Issue 4's proof on an NVIDIA GPU, in one go: environment, the 20b-shaped model, the GPU tests,
# the offload sweep and the engine-overhead benchmark. Everything lands under $OUT.
#
#   bash bench/gpu_session.sh                 # all steps (~13 min on an H200 host), or in calls
#   bash bench/gpu_session.sh model tests     #   of under 10 min each (the model stays on local
#   bash bench/gpu_session.sh sweep           #   disk while the machine is warm): ~4, ~8 and
#   bash bench/gpu_session.sh overhead        #   ~2 min
#
# Assumes `python3 -m pip` already has the project's dependencies and llama_cpp built with CUDA
# (CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90"). Needs no network. Each step has its
# own time limit; a step that fails or times out is recorded and the next one still runs.
# Knobs: OUT (default ./gpu-out), MODEL_DIR (default /tmp/harmonica-gpu, local disk: ~12 GB),
# PY (default python3), SWEEP_SECONDS (default 420: sweep points past it are skipped, not run).
# For a rehearsal without a GPU: MODEL_ARGS (factory options instead of --full-20b) and
# SWEEP_ARGS (e.g. "--dry-run --budgets 0.8,1 --ctx 2048").
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
MODEL_DIR=${MODEL_DIR:-/tmp/harmonica-gpu}
PY=${PY:-python3}
SWEEP_SECONDS=${SWEEP_SECONDS:-420}
MODEL_ARGS=${MODEL_ARGS:---full-20b}
SWEEP_ARGS=${SWEEP_ARGS:-}
MIN_MODEL_BYTES=11000000000
[ "$MODEL_ARGS" != "--full-20b" ] && MIN_MODEL_BYTES=1
MODEL="$MODEL_DIR/gpt-oss-20b-random.gguf"
mkdir -p "$OUT" "$MODEL_DIR"
export PYTHONFAULTHANDLER=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
STEPS=${*:-model tests sweep overhead}
SUMMARY="$OUT/steps.txt"
: > "$SUMMARY"

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    echo "== $name (limit ${limit}s): $*" | tee -a "$SUMMARY"
    timeout --kill-after=20 "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    local verdict=ok
    [ $rc -eq 124 ] && verdict="TIMED OUT"
    [ $rc -ne 0 ] && [ $rc -ne 124 ] && verdict="FAILED (exit $rc)"
    [ $rc -eq 5 ] && [ "$name" = tests ] && verdict="nothing ran (every test skipped: see the log)"
    echo "   $name: $verdict after $((SECONDS - t0)) s" | tee -a "$SUMMARY"
    tail -n 5 "$OUT/$name.log" | sed 's/^/   | /'
    return 0
}

wants() { case " $STEPS " in *" $1 "*) return 0;; *) return 1;; esac; }

step env 90 bash -c "
    set -x
    nvidia-smi
    $PY --version
    $PY -c 'import llama_cpp, sys; print(\"llama_cpp\", llama_cpp.__version__, llama_cpp.__file__)'
    $PY -c 'from app.core import llama_ext; print(\"backends:\", llama_ext.available_backends()); [print(d) for d in llama_ext.backend_devices(memory=False)]'
    $PY -c 'from app.core import hardware; p = hardware.detect(); print(\"\n\".join(p.describe())); print(\"notes:\", p.notes)'
    nproc; free -g; df -h '$MODEL_DIR'
"

if wants model; then
    if [ -s "$MODEL" ] && [ "$(stat -c %s "$MODEL")" -ge "$MIN_MODEL_BYTES" ]; then
        echo "== model: $MODEL exists ($(stat -c %s "$MODEL") bytes), kept" | tee -a "$SUMMARY"
    else
        step model 420 $PY -m tests.fixtures.gguf_factory "$MODEL" $MODEL_ARGS
    fi
    # Read it once so the runs below measure the GPU, not the disk.
    step model_cache 180 bash -c "cat '$MODEL' > /dev/null"
fi

if wants tests; then
    # llama_cpp before numpy: with the CUDA build, numpy loaded first (pytest plugins do) crashes the load.
    step tests 300 $PY -c "import sys, llama_cpp, pytest; sys.exit(pytest.main(['-q', '-m', 'gpu', 'tests/core/test_gpu.py', '-rs', '-p', 'no:cacheprovider', '--timeout', '240']))"
    step estimates 180 $PY -m bench.planner_estimates --gpu --out "$OUT"
fi

if wants sweep; then
    if [ -s "$MODEL" ]; then
        # Budget for the runs + planning/report overhead; the step limit leaves room for the last run.
        step sweep $((SWEEP_SECONDS + 180)) $PY bench/offload_sweep.py "$MODEL" --out "$OUT/sweep" --time-budget "$SWEEP_SECONDS" $SWEEP_ARGS
        cp "$OUT/sweep/offload_sweep.md" "$OUT/offload_sweep.md" 2>/dev/null
    else
        echo "== sweep: skipped, no model at $MODEL (run the model step)" | tee -a "$SUMMARY"
    fi
fi

if wants overhead; then
    if [ -s "$MODEL" ]; then
        step overhead 300 $PY -m bench.engine_overhead --model "$MODEL" --n-gpu-layers 99 --reps 5 --tokens 128
    else
        echo "== overhead: skipped, no model at $MODEL" | tee -a "$SUMMARY"
    fi
fi

echo "== done; results in $OUT" | tee -a "$SUMMARY"
ls -la "$OUT" "$OUT/sweep" 2>/dev/null | tail -n +1 > "$OUT/files.txt"
