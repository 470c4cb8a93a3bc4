#!/usr/bin/env bash
# Build Harmonica for Linux: the PyInstaller one-folder bundle, then a .deb (always) and an
# AppImage (when appimagetool is on PATH). Run from anywhere; outputs go to packaging/dist/.
#
#   packaging/linux/build.sh
#
# Environment:
#   LLAMA_WHEEL   a llama-cpp-python wheel to bundle (default: the newest one build_llama.sh made,
#                 preferring the cpu-vulkan build; if there is none, it is built now: cpu+vulkan
#                 when glslc and Vulkan headers are usable, else cpu)
#   VENV          build virtual environment (default packaging/build/venv; created if missing)
#   PYTHON        interpreter for a new VENV (default python3)
#   SKIP_DEB=1, SKIP_APPIMAGE=1   leave out an installer
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
venv="${VENV:-$root/packaging/build/venv}"
py="$venv/bin/python"
dist="$root/packaging/dist"
mkdir -p "$dist"
log() { printf '\n== %s\n' "$*"; }

# --- 1. build environment: the app's dependencies and PyInstaller, nothing else -------------------
if [ ! -x "$py" ]; then
    log "creating $venv"
    "${PYTHON:-python3}" -m venv "$venv"
    "$py" -m pip install -q --upgrade pip
fi
reqs="$root/packaging/build/requirements.txt"
mkdir -p "$(dirname "$reqs")"
"$py" - "$reqs" <<'EOF'
import sys, tomllib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
# llama-cpp-python is installed from the wheel chosen below, never built implicitly by pip.
# One requirement per line: environment markers contain spaces.
deps = [d for d in p["dependencies"] + p["optional-dependencies"]["package"] if not d.startswith("llama-cpp-python")]
open(sys.argv[1], "w").write("\n".join(deps) + "\n")
EOF
log "dependencies: $(tr '\n' ' ' < "$reqs")"
"$py" -m pip install -q -r "$reqs"

# --- 2. llama.cpp with dynamically loaded backends ------------------------------------------------
wheel="${LLAMA_WHEEL:-}"
if [ -z "$wheel" ]; then
    for tag in cpu-vulkan cpu; do
        wheel="$(ls -t "$root"/packaging/build/wheels/"$tag"/llama_cpp_python-*.whl 2>/dev/null | head -1 || true)"
        [ -n "$wheel" ] && break
    done
fi
if [ -z "$wheel" ]; then
    backends="cpu"
    if command -v glslc >/dev/null 2>&1; then
        if [ -f /etc/debian_version ] && grep -q '^12' /etc/debian_version; then
            export VULKAN_INCLUDE_DIR="$("$root/packaging/llama/debian12_vulkan_headers.sh")"
        fi
        backends="cpu vulkan"
    fi
    log "building llama-cpp-python ($backends); this takes a while"
    PATH="$venv/bin:$PATH" "$root/packaging/llama/build_llama.sh" $backends
    wheel="$(ls -t "$root"/packaging/build/wheels/"$(echo "$backends" | tr ' ' '-')"/llama_cpp_python-*.whl | head -1)"
fi
log "llama-cpp-python wheel: $wheel"
# --force-reinstall: the wheel has the same version as PyPI's, so pip would otherwise keep what is there.
"$py" -m pip install -q --force-reinstall --no-deps "$wheel"
"$py" -m pip install -q "$wheel"  # its own dependencies (numpy, diskcache, ...)
"$py" - <<'EOF'
import os, llama_cpp
lib = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
print("llama_cpp/lib:", " ".join(sorted(os.listdir(lib))))
EOF

# --- 3. the bundle --------------------------------------------------------------------------------
version="$("$py" -c 'import sys; sys.path.insert(0, "."); import app; print(app.__version__)')"
log "PyInstaller: Harmonica $version"
rm -rf "$dist/harmonica"
"$py" -m PyInstaller --noconfirm --clean --log-level WARN \
    --distpath "$dist" --workpath "$root/packaging/build/pyinstaller" "$root/packaging/harmonica.spec"
bundle="$dist/harmonica"
[ -x "$bundle/harmonica" ] || { echo "PyInstaller produced no $bundle/harmonica" >&2; exit 1; }
# A Python built from source (pyenv) ships its interpreter library and extension modules with
# debug symbols (~25 MB). Strip those only: wheels' libraries are already stripped, and stripping
# auditwheel-repaired ones (numpy's OpenBLAS) breaks them.
find "$bundle/_internal" -maxdepth 1 -name 'libpython3*.so*' -type f -exec strip --strip-debug {} +
find "$bundle/_internal" -path '*/lib-dynload/*.so' -type f -exec strip --strip-debug {} +

# The oldest glibc the bundle runs on is the newest symbol version any of its files asks for.
glibc="$(find "$bundle" -type f \( -name '*.so*' -o -name harmonica \) -print0 \
    | xargs -0 objdump -T 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)"
echo "bundle: $(du -sh "$bundle" | cut -f1), needs glibc >= $glibc"

# --- 4. .deb ----------------------------------------------------------------------------------------
arch="$(dpkg --print-architecture 2>/dev/null || echo amd64)"
if [ "${SKIP_DEB:-0}" != 1 ]; then
    log ".deb"
    stage="$root/packaging/build/deb/harmonica_${version}_$arch"
    rm -rf "$stage"
    mkdir -p "$stage/DEBIAN" "$stage/opt" "$stage/usr/bin" "$stage/usr/share/applications" \
             "$stage/usr/share/icons/hicolor/scalable/apps" "$stage/usr/share/doc/harmonica"
    cp -a "$bundle" "$stage/opt/harmonica"
    ln -s /opt/harmonica/harmonica "$stage/usr/bin/harmonica"
    install -m 644 resources/harmonica.desktop "$stage/usr/share/applications/harmonica.desktop"
    install -m 644 resources/icons/harmonica.svg "$stage/usr/share/icons/hicolor/scalable/apps/harmonica.svg"
    for png in resources/icons/app/harmonica-*.png; do
        size="$(basename "$png" .png | sed 's/harmonica-//')"
        mkdir -p "$stage/usr/share/icons/hicolor/${size}x${size}/apps"
        install -m 644 "$png" "$stage/usr/share/icons/hicolor/${size}x${size}/apps/harmonica.png"
    done
    cat > "$stage/usr/share/doc/harmonica/copyright" <<EOF
Harmonica $version - Apache-2.0.
Bundles Python, Qt for Python (LGPLv3), llama.cpp (MIT) and the Python packages listed in
/opt/harmonica/_internal/*.dist-info, each under its own licence.
EOF
    installed_kb="$(du -sk "$stage" | cut -f1)"
    # Everything else is inside the bundle; these come with every desktop. libvulkan1 and a Vulkan
    # driver make the GPU backend usable (without them ggml falls back to the CPU).
    cat > "$stage/DEBIAN/control" <<EOF
Package: harmonica
Version: $version
Architecture: $arch
Maintainer: ${DEB_MAINTAINER:-Harmonica maintainers <harmonica@localhost>}
Installed-Size: $installed_kb
Depends: libc6 (>= $glibc), libgl1, libegl1, libfontconfig1, libfreetype6, libxkbcommon0
Recommends: libvulkan1, mesa-vulkan-drivers | nvidia-vulkan-icd, xdg-desktop-portal
Section: utils
Priority: optional
Description: private, offline chat with gpt-oss models
 Harmonica runs OpenAI's open-weight reasoning model gpt-oss on your own computer
 with llama.cpp, shows the model's reasoning and renders its answers. Nothing
 leaves the machine unless you start a model download.
EOF
    deb="$dist/harmonica_${version}_$arch.deb"
    dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
    echo "$deb: $(du -h "$deb" | cut -f1)"
fi

# --- 5. AppImage (needs appimagetool; not in any package registry this project can reach) --------
if [ "${SKIP_APPIMAGE:-0}" != 1 ]; then
    if command -v appimagetool >/dev/null 2>&1; then
        log "AppImage"
        appdir="$root/packaging/build/Harmonica.AppDir"
        rm -rf "$appdir" && mkdir -p "$appdir/usr"
        cp -a "$bundle" "$appdir/usr/harmonica"
        cat > "$appdir/AppRun" <<'EOF'
#!/bin/sh
here="$(dirname "$(readlink -f "$0")")"
exec "$here/usr/harmonica/harmonica" "$@"
EOF
        chmod +x "$appdir/AppRun"
        install -m 644 resources/harmonica.desktop "$appdir/harmonica.desktop"
        install -m 644 resources/icons/app/harmonica-256.png "$appdir/harmonica.png"
        ln -s harmonica.png "$appdir/.DirIcon"
        ARCH="$(uname -m)" appimagetool --no-appstream "$appdir" "$dist/Harmonica-$version-$(uname -m).AppImage"
    else
        echo "appimagetool is not on PATH: no AppImage (the .deb and the bundle folder are built)"
    fi
fi

log "done"
ls -la "$dist"
