# bench/common.sh: the set-up bench/cpu.sh and bench/backward.sh share; sourced, with the
# script's arguments ([BUILD_DIR]). Sets ROOT, BUILD, MIRASC, MIRAS (checked), the run's
# sizes T, B, H, REPEAT, WARMUP and DIMS (MIRAS_BENCH_T, _REPEAT, _WARMUP, _DIMS), THREADS
# (nproc, then 1), and START, LOAD_BEFORE (other processes skew every figure: the load
# average is recorded) and SOURCE (the tree's git describe).
BENCH_NAME=$(basename "$0")
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=$(cd "${1:-$ROOT/build}" && pwd)
MIRASC=$BUILD/bin/mirasc
MIRAS=$BUILD/bin/miras
for tool in "$MIRASC" "$MIRAS"; do
  [[ -x $tool ]] || { echo "$BENCH_NAME: $tool not found; build first (ninja -C $BUILD)" >&2; exit 1; }
done

T=${MIRAS_BENCH_T:-4096}
B=2
H=8
REPEAT=${MIRAS_BENCH_REPEAT:-3}
WARMUP=${MIRAS_BENCH_WARMUP:-1}
DIMS=${MIRAS_BENCH_DIMS:-"64 128"}
NPROC=$(nproc)
THREADS="$NPROC"
[[ $NPROC -gt 1 ]] && THREADS="$NPROC 1"

START=$(date +%s)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
SOURCE=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)
