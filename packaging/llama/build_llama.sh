#!/usr/bin/env bash
# Build llama-cpp-python (the version pinned in pyproject.toml) as a wheel whose ggml backends are
# dynamically loaded plugins, so one bundle carries several (CPU variants, Vulkan, CUDA, Metal) and
# ggml picks the best one at run time. Linux and macOS; Windows: build_llama.ps1.
#
#   packaging/llama/build_llama.sh [BACKEND ...]      BACKEND: cpu vulkan cuda metal
#
# Defaults: Linux "cpu vulkan", macOS "cpu metal". Environment:
#   OUT_DIR            where the wheel goes (default packaging/build/wheels)
#   BUILD_DIR          persistent CMake build tree, reused by a second run (default packaging/build/llama-<backends>)
#   VULKAN_INCLUDE_DIR Vulkan-Headers newer than 1.3.239 when the system's are too old
#                      (Debian 12: run debian12_vulkan_headers.sh and pass what it prints)
#   CUDA_ARCHS         CMAKE_CUDA_ARCHITECTURES for cuda (default "75-real;80-real;86-real;89-real;90-real;120-virtual")
#   JOBS               parallel compile jobs (default: all cores)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

version="$(sed -n 's/.*"llama-cpp-python==\([0-9.]*\)".*/\1/p' "$root/pyproject.toml")"
[ -n "$version" ] || { echo "cannot read the llama-cpp-python pin from pyproject.toml" >&2; exit 2; }

case "$(uname -s)" in
    Darwin) default_backends="cpu metal" ;;
    *) default_backends="cpu vulkan" ;;
esac
backends="${*:-$default_backends}"
tag="$(echo "$backends" | tr ' ' '-')"
out_dir="${OUT_DIR:-$root/packaging/build/wheels}"
build_dir="${BUILD_DIR:-$root/packaging/build/llama-$tag}"
jobs="${JOBS:-$(getconf _NPROCESSORS_ONLN 2>/dev/null || sysctl -n hw.ncpu)}"
mkdir -p "$out_dir" "$build_dir"

# Always: backends as plugins (GGML_BACKEND_DL), no -march=native (the bundle runs on other CPUs),
# every plugin installed next to libllama (CMAKE_INSTALL_BINDIR, typed STRING so CMake keeps it
# relative to the wheel's prefix), no mtmd (multimodal; Harmonica does not use it), and the RPC
# backend (GPU workers: Connections → Add GPU worker; a plugin like the others).
args=(-DGGML_BACKEND_DL=ON -DGGML_NATIVE=OFF -DGGML_RPC=ON "-DCMAKE_INSTALL_BINDIR:STRING=llama_cpp/lib" -DLLAVA_BUILD=OFF
      -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF)
for b in $backends; do
    case "$b" in
        cpu)
            # One CPU plugin per instruction-set level (x86: sse4.2 … avx512/amx; Apple: m1/m2-m3/m4);
            # ggml scores them against the running CPU and loads the best.
            args+=(-DGGML_CPU_ALL_VARIANTS=ON) ;;
        vulkan)
            args+=(-DGGML_VULKAN=ON)
            if [ -n "${VULKAN_INCLUDE_DIR:-}" ]; then
                args+=("-DVulkan_INCLUDE_DIR=$VULKAN_INCLUDE_DIR")
            fi ;;
        cuda)
            args+=(-DGGML_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHS:-75-real;80-real;86-real;89-real;90-real;120-virtual}") ;;
        metal)
            args+=(-DGGML_METAL=ON -DGGML_METAL_EMBED_LIBRARY=ON) ;;
        *) echo "unknown backend '$b' (cpu vulkan cuda metal)" >&2; exit 2 ;;
    esac
done

sdist_dir="$root/packaging/build/sdist"
sdist="$sdist_dir/llama_cpp_python-$version.tar.gz"
if [ ! -f "$sdist" ]; then
    python -m pip download --no-deps --no-binary :all: -d "$sdist_dir" "llama-cpp-python==$version"
fi

echo "llama-cpp-python $version, backends: $backends"
echo "CMAKE_ARGS: ${args[*]}"
export CMAKE_ARGS="${args[*]}"
export CMAKE_BUILD_PARALLEL_LEVEL="$jobs"
start=$(date +%s)
python -m pip wheel --no-deps -w "$out_dir" \
    --config-settings=build-dir="$build_dir" \
    --config-settings=cmake.build-type=Release \
    "$sdist"
wheel="$(ls -t "$out_dir"/llama_cpp_python-"$version"-*.whl | head -1)"
# Name the wheel after its backends so wheels for different matrices sit side by side.
final="$out_dir/$tag/$(basename "$wheel")"
mkdir -p "$out_dir/$tag" && mv -f "$wheel" "$final"
echo "built in $(( $(date +%s) - start )) s: $final"
python - "$final" <<'EOF'
import sys, zipfile
names = sorted(n for n in zipfile.ZipFile(sys.argv[1]).namelist() if "/lib/" in n)
print("\n".join("  " + n for n in names))
EOF
