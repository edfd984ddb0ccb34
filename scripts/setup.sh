#!/usr/bin/env bash
# Installs the Debian packages the project needs, and any named on the command line
# (scripts/sanitize.sh: the sanitizer runtimes); does nothing when they are all present.
set -euo pipefail
PACKAGES=(
  cmake ninja-build ccache g++ make pkgconf
  llvm-22-dev libmlir-22-dev mlir-22-tools llvm-22-tools clang-22
  antlr4 libantlr4-runtime-dev default-jre-headless
  libgtest-dev python3-numpy python3-venv python3-dev
  "$@"
)
missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "setup: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
