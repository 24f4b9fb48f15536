#!/usr/bin/env bash
# Installs a Vulkan driver new enough for ManiSkill3/SAPIEN on Debian bookworm.
# Bookworm's own Mesa (22.x lavapipe) fails with ErrorIncompatibleDriver; Mesa 25 from
# bookworm-backports works. Idempotent; a no-op where a working lavapipe is present.
set -euo pipefail
if command -v vulkaninfo >/dev/null 2>&1 && vulkaninfo --summary 2>/dev/null | grep -q "driverName.*llvmpipe"; then
  ver=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || echo 0)
  case "$ver" in 2[5-9]*) echo "vulkan: mesa $ver already installed"; exit 0;; esac
fi
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
. /etc/os-release
if [ "${VERSION_CODENAME:-}" = "bookworm" ]; then
  echo "deb http://deb.debian.org/debian bookworm-backports main" | $SUDO tee /etc/apt/sources.list.d/bookworm-backports.list >/dev/null
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers libvulkan1 vulkan-tools >/dev/null
else
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mesa-vulkan-drivers libvulkan1 vulkan-tools >/dev/null
fi
echo "vulkan: installed mesa $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers)"
