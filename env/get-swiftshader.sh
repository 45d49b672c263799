#!/usr/bin/env bash
# A software Vulkan device for LiteRT's GPU accelerator on a machine without a GPU:
# SwiftShader's Vulkan driver, its ICD file and the Vulkan loader, taken out of Debian's
# chromium-common package (the browser itself is not installed; nothing is installed
# system-wide). Usage: env/get-swiftshader.sh DEST_DIR
set -euo pipefail
dest=$(realpath -m "${1:?usage: $0 DEST_DIR}")
if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
  echo "error: apt-get and dpkg-deb are needed to fetch SwiftShader from Debian's" \
       "chromium-common package. On other systems install a Vulkan driver (your GPU's, or" \
       "SwiftShader) and set MVOS_VULKAN_ICD=/path/to/its_icd.json or =system" >&2
  exit 2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
# the package lists may be missing or stale on a fresh machine
apt-get download chromium-common >/dev/null 2>&1 \
  || { apt-get update >/dev/null && apt-get download chromium-common >/dev/null; }
dpkg-deb -x chromium-common_*.deb root
lib=root/usr/lib/chromium
mkdir -p stage
cp "$lib/libvk_swiftshader.so" "$lib/vk_swiftshader_icd.json" "$lib/libvulkan.so.1" stage/
dpkg-deb -f chromium-common_*.deb Version > stage/VERSION
rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
mv stage "$dest"
echo "SwiftShader $(cat "$dest/VERSION") (Debian chromium-common) in $dest"
