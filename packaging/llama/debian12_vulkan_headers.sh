#!/usr/bin/env bash
# Debian 12's Vulkan headers (1.3.239) lack vk::LayerSettingEXT, which ggml-vulkan needs. Debian 13's
# libvulkan-dev (1.4.309) has it: fetch that one .deb with a private apt configuration (the system's
# sources and installed packages are not touched) and unpack its headers into a folder.
# Prints the include directory to pass as VULKAN_INCLUDE_DIR to build_llama.sh.
#
#   packaging/llama/debian12_vulkan_headers.sh [DEST]     (default packaging/build/vulkan-headers)
#
# The headers are only needed at build time; the bundle loads the user's own libvulkan.so.1 and
# GPU driver, and ggml checks at run time which Vulkan version the driver offers.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
dest="${1:-$root/packaging/build/vulkan-headers}"
suite="${VULKAN_HEADERS_SUITE:-trixie}"

if [ -f "$dest/usr/include/vulkan/vulkan.hpp" ] && grep -q LayerSettingEXT "$dest/usr/include/vulkan/vulkan_structs.hpp"; then
    echo "$dest/usr/include"
    exit 0
fi

apt_dir="$(mktemp -d)"
trap 'rm -rf "$apt_dir"' EXIT
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$dest"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $suite main" > "$apt_dir/sources.list"
opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
      -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -o "APT::Sandbox::User=root")
apt-get "${opts[@]}" -qq update >&2
(cd "$apt_dir" && apt-get "${opts[@]}" -qq download libvulkan-dev >&2)
deb="$(ls "$apt_dir"/libvulkan-dev_*.deb)"
echo "unpacking $(basename "$deb") into $dest" >&2
dpkg-deb -x "$deb" "$dest"
grep -q LayerSettingEXT "$dest/usr/include/vulkan/vulkan_structs.hpp" \
    || { echo "the headers in $(basename "$deb") still lack vk::LayerSettingEXT" >&2; exit 1; }
echo "$dest/usr/include"
