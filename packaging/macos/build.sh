#!/usr/bin/env bash
# Build Harmonica.app and Harmonica-<version>.dmg on macOS 12+ (Apple Silicon: Metal + CPU plugins;
# Intel Macs: the same build runs on the CPU). Signs and notarizes when identities are given.
# Written and reviewed on Linux; NOT run by the project (no Mac here): see packaging/README.md.
#
#   packaging/macos/build.sh
#
# Environment (all optional; without CODESIGN_IDENTITY the app is ad-hoc signed and runs only on
# the machine that built it or after the user right-clicks → Open):
#   CODESIGN_IDENTITY   "Developer ID Application: Your Name (TEAMID)" (security find-identity -v -p codesigning)
#   NOTARY_PROFILE      a keychain profile made once with
#                         xcrun notarytool store-credentials NAME --apple-id ID --team-id TEAMID --password APP_PASSWORD
#   or APPLE_ID, APPLE_TEAM_ID, APPLE_APP_PASSWORD   the same credentials directly (CI secrets)
#   LLAMA_WHEEL         a prebuilt llama-cpp-python wheel (default: build one with cpu + metal)
#   VENV, PYTHON        build environment (default packaging/build/venv-macos, python3.11)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
[ "$(uname -s)" = Darwin ] || { echo "this script runs on macOS" >&2; exit 2; }
venv="${VENV:-$root/packaging/build/venv-macos}"
py="$venv/bin/python"
dist="$root/packaging/dist"
mkdir -p "$dist"
log() { printf '\n== %s\n' "$*"; }

# --- 1. build environment -------------------------------------------------------------------------
if [ ! -x "$py" ]; then
    "${PYTHON:-python3.11}" -m venv "$venv"
    "$py" -m pip install -q --upgrade pip
fi
# One requirement per line in a file: environment markers contain spaces.
reqs="$root/packaging/build/requirements.txt"
mkdir -p "$(dirname "$reqs")"
"$py" -c 'import sys, tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; open(sys.argv[1], "w").write("\n".join(d for d in p["dependencies"] + p["optional-dependencies"]["package"] if not d.startswith("llama-cpp-python")) + "\n")' "$reqs"
"$py" -m pip install -q -r "$reqs"

# --- 2. llama.cpp: Metal and CPU as dynamically loaded plugins ------------------------------------
wheel="${LLAMA_WHEEL:-$(ls -t "$root"/packaging/build/wheels/cpu-metal/llama_cpp_python-*.whl 2>/dev/null | head -1 || true)}"
if [ -z "$wheel" ]; then
    log "building llama-cpp-python (cpu metal)"
    PATH="$venv/bin:$PATH" MACOSX_DEPLOYMENT_TARGET=12.0 "$root/packaging/llama/build_llama.sh" cpu metal
    wheel="$(ls -t "$root"/packaging/build/wheels/cpu-metal/llama_cpp_python-*.whl | head -1)"
fi
"$py" -m pip install -q --force-reinstall --no-deps "$wheel"
"$py" -m pip install -q "$wheel"

# --- 3. Harmonica.app (PyInstaller signs every binary inside when CODESIGN_IDENTITY is set) -------
version="$("$py" -c 'import sys; sys.path.insert(0, "."); import app; print(app.__version__)')"
log "PyInstaller: Harmonica $version"
rm -rf "$dist/Harmonica.app" "$dist/Harmonica"
CODESIGN_IDENTITY="${CODESIGN_IDENTITY:-}" "$py" -m PyInstaller --noconfirm --clean --log-level WARN \
    --distpath "$dist" --workpath "$root/packaging/build/pyinstaller-macos" "$root/packaging/harmonica.spec"
app="$dist/Harmonica.app"
[ -d "$app" ] || { echo "PyInstaller produced no $app" >&2; exit 1; }
codesign --verify --deep --strict --verbose=2 "$app"

# --- 4. notarize the app and staple the ticket to it, so the first start works offline ------------
notary=()
if [ -n "${NOTARY_PROFILE:-}" ]; then
    notary=(--keychain-profile "$NOTARY_PROFILE")
elif [ -n "${APPLE_ID:-}" ] && [ -n "${APPLE_TEAM_ID:-}" ] && [ -n "${APPLE_APP_PASSWORD:-}" ]; then
    notary=(--apple-id "$APPLE_ID" --team-id "$APPLE_TEAM_ID" --password "$APPLE_APP_PASSWORD")
fi
notarize() {  # notarize FILE: submit, wait for Apple's verdict, print the log when it is not Accepted
    local out id
    out="$(xcrun notarytool submit "$1" "${notary[@]}" --wait --output-format json)"
    echo "$out"
    id="$(echo "$out" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
    if ! echo "$out" | grep -q '"status" *: *"Accepted"'; then
        xcrun notarytool log "$id" "${notary[@]}"
        return 1
    fi
}
if [ -n "${CODESIGN_IDENTITY:-}" ] && [ ${#notary[@]} -gt 0 ]; then
    log "notarizing Harmonica.app"
    zip="$root/packaging/build/Harmonica-notarize.zip"
    ditto -c -k --keepParent "$app" "$zip"
    notarize "$zip"
    xcrun stapler staple "$app"
    rm -f "$zip"
elif [ -n "${CODESIGN_IDENTITY:-}" ]; then
    echo "signed, not notarized: set NOTARY_PROFILE (or APPLE_ID, APPLE_TEAM_ID, APPLE_APP_PASSWORD)"
else
    echo "ad-hoc signed: set CODESIGN_IDENTITY for a Developer ID signature"
fi

# --- 5. the .dmg: the app and a link to /Applications, signed and notarized itself -------------------
log "dmg"
stage="$root/packaging/build/dmg"
rm -rf "$stage" && mkdir -p "$stage"
ditto "$app" "$stage/Harmonica.app"  # ditto keeps the signature's extended attributes and symlinks
ln -s /Applications "$stage/Applications"
dmg="$dist/Harmonica-$version.dmg"
rm -f "$dmg"
hdiutil create -volname "Harmonica $version" -srcfolder "$stage" -fs HFS+ -format UDZO -ov "$dmg"
if [ -n "${CODESIGN_IDENTITY:-}" ]; then
    codesign --force --timestamp --sign "$CODESIGN_IDENTITY" "$dmg"
    if [ ${#notary[@]} -gt 0 ]; then
        log "notarizing the dmg"
        notarize "$dmg"
        xcrun stapler staple "$dmg"
        spctl --assess --type open --context context:primary-signature --verbose=2 "$dmg"
        spctl --assess --type execute --verbose=2 "$app"
    fi
fi
echo "$dmg: $(du -h "$dmg" | cut -f1); app $(du -sh "$app" | cut -f1)"
