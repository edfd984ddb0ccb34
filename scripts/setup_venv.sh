#!/usr/bin/env bash
# Creates BUILD_DIR/venv (Debian's python3) with the pinned packages of
# python/requirements.txt, PyTorch from PyPI included. Does nothing when the venv
# already holds exactly those pins. The venv finds the package built in BUILD_DIR/python
# (CMake assembles it there) through a .pth file, so `make build` updates what
# `build/venv/bin/python -c "import miras"` imports. Usage: scripts/setup_venv.sh [BUILD_DIR]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${1:-build}"
VENV="$BUILD_DIR/venv"
REQUIREMENTS="$ROOT/python/requirements.txt"
STAMP="$VENV/.miras-requirements"
link_build_tree() {
  local site
  site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$(cd "$BUILD_DIR" && pwd)/python" > "$site/miras-build-tree.pth"
}
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && cmp -s "$REQUIREMENTS" "$STAMP"; then
  link_build_tree
  exit 0
fi
echo "setup: creating $VENV with python/requirements.txt (PyTorch from PyPI: a few minutes the first time)"
mkdir -p "$BUILD_DIR"
/usr/bin/python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
cp "$REQUIREMENTS" "$STAMP"
link_build_tree
