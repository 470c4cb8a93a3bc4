#!/usr/bin/env bash
# Issue 14 on an NVIDIA GPU in one call (about 10 minutes on 16 cores): build llama.cpp's
# llama-server, llama-bench and libllama from the sources vendored in the llama-cpp-python sdist,
# point llama_cpp's Python package at that build (Harmonica and llama-server then run the same
# ggml), write the 20b-shaped random model, run the GPU tests and bench/peer.py.
#
#   CARRY=DIR OUT=DIR bash bench/peer_session.sh [steps]     # steps: site build model tests peer
#
# CARRY holds llama.cpp.tar.gz (the sdist's vendor/llama.cpp without docs, models, tests, benches,
# media, conversion, gguf-py, tools/ui/src), llama_cpp_py.tar.gz (the sdist's llama_cpp package) and
# whl/ (gguf and diskcache wheels, which the device image lacks). Everything else needs no network.
# What exists from an earlier call on a still-warm machine (build, model) is kept. Every step has a
# time limit inside DEADLINE seconds from the start; results land in OUT (at most 8 files).
# Knobs: BUDGETS (bench/peer.py --budgets), VARIANTS, PEER_ARGS, CMAKE_EXTRA, MODEL_ARGS
# ("--full-20b", or factory options for a rehearsal), DEADLINE (default 580).
set -u
cd "$(dirname "$0")/.."
WT=$PWD
CARRY=${CARRY:?set CARRY to the folder with llama.cpp.tar.gz, llama_cpp_py.tar.gz and whl/}
OUT=${OUT:-$WT/peer-out}
LL=${LL:-/tmp/llama}
SITE=${SITE:-/tmp/site}
MODEL_DIR=${MODEL_DIR:-/tmp/harmonica-models}
MODEL_ARGS=${MODEL_ARGS:---full-20b}
MODEL=$MODEL_DIR/gpt-oss-20b-random.gguf
BUDGETS=${BUDGETS:-24,12,8,6,16}
VARIANTS=${VARIANTS:-24,8}
PEER_ARGS=${PEER_ARGS:-}
CMAKE_EXTRA=${CMAKE_EXTRA:--DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90}
DEADLINE=${DEADLINE:-580}
STEPS=${*:-site build model tests peer}
mkdir -p "$OUT" "$LL" "$SITE" "$MODEL_DIR"
export PYTHONUNBUFFERED=1 PYTHONFAULTHANDLER=1 HF_HUB_OFFLINE=1 PYTHONPATH=$SITE:$WT
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
SUMMARY=$OUT/steps.txt
: >"$SUMMARY"

step() { # step NAME SECONDS COMMAND...: time-limited (never past DEADLINE), logged to /tmp/peer-logs/NAME.log
    local name=$1 limit=$2
    shift 2
    local left=$((DEADLINE - SECONDS))
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -le 5 ]; then
        echo "== $name: skipped, no time left" | tee -a "$SUMMARY"
        return 1
    fi
    local t0=$SECONDS
    echo "== $name (limit ${limit}s, at ${SECONDS}s)" | tee -a "$SUMMARY"
    mkdir -p /tmp/peer-logs
    timeout --kill-after=10 "$limit" "$@" >"/tmp/peer-logs/$name.log" 2>&1
    local rc=$?
    echo "   $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$SUMMARY"
    tail -n 6 "/tmp/peer-logs/$name.log" | sed 's/^/   | /' | tee -a "$SUMMARY"
    return $rc
}
wants() { case " $STEPS " in *" $1 "*) return 0 ;; *) return 1 ;; esac }

if wants site; then
    step site 60 bash -c "
        set -e
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target '$SITE' '$CARRY'/whl/*.whl
        rm -rf '$SITE/llama_cpp' && tar xzf '$CARRY/llama_cpp_py.tar.gz' -C '$SITE'
        rm -rf '$SITE/llama_cpp/lib' && ln -s '$LL/build/bin' '$SITE/llama_cpp/lib'
        nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv
        nproc; free -g | head -2; python3 --version
    "
fi

if wants build; then
    if [ -x "$LL/build/bin/llama-server" ] && [ -x "$LL/build/bin/llama-bench" ]; then
        echo "== build: kept from an earlier call" | tee -a "$SUMMARY"
    else
        step build 330 bash -c "
            set -e
            rm -rf '$LL/llama.cpp' && tar xzf '$CARRY/llama.cpp.tar.gz' -C '$LL'
            cmake -S '$LL/llama.cpp' -B '$LL/build' -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
                -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_USE_PREBUILT_UI=OFF \
                -DLLAMA_BUILD_UI=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF $CMAKE_EXTRA
            cmake --build '$LL/build' --target llama-server llama-bench llama
        "
    fi
    step check 60 python3 -c "
import llama_cpp
from app.core import llama_ext, hardware
print(llama_cpp.__file__, llama_ext.LIB_DIR, llama_ext._find_ggml_path())
print('backends:', llama_ext.available_backends())
print('\n'.join(hardware.detect().describe()))
"
fi

if wants model; then
    if [ -s "$MODEL" ]; then
        echo "== model: kept ($(stat -c %s "$MODEL") bytes)" | tee -a "$SUMMARY"
    else
        step model 240 python3 -m tests.fixtures.gguf_factory "$MODEL" $MODEL_ARGS
    fi
fi

if wants tests; then
    # llama_cpp before numpy (design.md: the CUDA build crashed at model load the other way round).
    step tests 150 python3 -c "import sys, llama_cpp, pytest; sys.exit(pytest.main(['-q', '-m', 'gpu', 'tests/core/test_gpu.py', '-rs', '-p', 'no:cacheprovider', '-o', 'addopts=', '--timeout', '120']))"
fi

if wants peer; then
    step peer 900 python3 bench/peer.py --bin "$LL/build/bin" --model "$MODEL" --out /tmp/peer \
        --budgets "$BUDGETS" --variants "$VARIANTS" $PEER_ARGS
    cp /tmp/peer/peer.md /tmp/peer/peer.json "$OUT/" 2>/dev/null
fi

tar czf "$OUT/logs.tar.gz" -C /tmp peer-logs $(cd /tmp && ls -d peer 2>/dev/null) 2>/dev/null
echo "== done at ${SECONDS}s" | tee -a "$SUMMARY"
