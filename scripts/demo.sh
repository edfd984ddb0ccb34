#!/usr/bin/env bash
# Compiles every example in examples/ with BUILD_DIR/bin/mirasc, runs it with
# BUILD_DIR/bin/miras on random data (B=2, T=1024, H=4, D=64) and checks it against the
# numpy reference (MLP memories on shorter sequences where their float64 reference is
# chaotic at T=1024; see demo.py). Usage: scripts/demo.sh [BUILD_DIR] [extra demo.py options]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${1:-build}"
shift || true
PY=/usr/bin/python3          # Debian's python with python3-numpy, not a venv's
if ! "$PY" -c 'import numpy' 2>/dev/null; then
  echo "demo: $PY has no numpy (apt-get install python3-numpy)" >&2
  exit 1
fi
exec "$PY" "$ROOT/scripts/demo.py" --build "$BUILD_DIR" "$@"
