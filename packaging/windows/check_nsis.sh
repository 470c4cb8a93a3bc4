#!/usr/bin/env bash
# Compile harmonica.nsi with Linux's makensis against a stand-in app folder: proves the installer
# script is valid NSIS (pages, sections, registry, version info, icons) without a Windows build.
# The Setup.exe it writes contains the stand-in files and is deleted afterwards.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
command -v makensis >/dev/null || { echo "makensis missing (apt-get install nsis)"; exit 2; }
version="$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$root/app/__init__.py")"
stub="$(mktemp -d)"
trap 'rm -rf "$stub"' EXIT
mkdir -p "$stub/app/_internal/llama_cpp/lib"
printf 'MZ stand-in\n' > "$stub/app/Harmonica.exe"
printf 'stand-in\n' > "$stub/app/_internal/llama_cpp/lib/ggml-cpu-haswell.dll"
(cd "$here" && makensis -V3 -WX "-DVERSION=$version" "-DSOURCE_DIR=$stub/app" "-DOUT_FILE=$stub/Harmonica-$version-Setup.exe" harmonica.nsi)
file "$stub/Harmonica-$version-Setup.exe"
echo "harmonica.nsi compiles (NSIS $(makensis -VERSION)); stand-in Harmonica-$version-Setup.exe was $(du -h "$stub/Harmonica-$version-Setup.exe" | cut -f1)"
