#!/usr/bin/env bash
# The sanitizer and fuzzing checks, in one clang-22 build with ASan + UBSan
# (default build-sanitize/; the front end also carries libFuzzer's coverage).
#   scripts/sanitize.sh test [BUILD]  (make test-sanitize): the lit and CTest suites run
#       against the instrumented tools and tests; every sanitizer report is written to
#       BUILD/sanitizer-logs, which must stay empty. The pytest suite is not part of it
#       (the interpreter and PyTorch are not instrumented).
#   scripts/sanitize.sh fuzz [BUILD] [SECONDS]  (make fuzz-smoke): the front end's
#       libFuzzer target (test/fuzz) for SECONDS (60), seeded with examples/ and the lit
#       inputs, with a fixed random seed (-seed=1: the same mutations on every run);
#       crashes and invariant violations are saved in BUILD/fuzz-artifacts.
set -uo pipefail
MODE=${1:?usage: scripts/sanitize.sh test|fuzz [BUILD] [SECONDS]}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${2:-$ROOT/build-sanitize}
mkdir -p "$BUILD" && BUILD=$(cd "$BUILD" && pwd)
cd "$ROOT"
bash scripts/setup.sh libclang-rt-22-dev || exit 1 # ASan, UBSan and libFuzzer runtimes
FLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -g1"
if [[ ! -f $BUILD/build.ninja ]]; then
  CC=clang-22 CXX=clang++-22 cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_C_FLAGS="$FLAGS" -DCMAKE_CXX_FLAGS="$FLAGS" \
    -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
    -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" -DMIRAS_FUZZ=ON ||
    exit 1
fi
cmake --build "$BUILD" -j "$(nproc)" || exit 1

LOGS=$BUILD/sanitizer-logs
rm -rf "$LOGS" && mkdir -p "$LOGS"
# Reports go to files (one per process) instead of failing the process that has them,
# so one run lists them all; leaks are reported at exit.
# allow_user_poisoning=0: LLVM's allocators poison their free space when the code that
# inlines them is instrumented, but libMLIR.so itself is not and writes there.
export ASAN_OPTIONS="log_path=$LOGS/report:detect_leaks=1:allow_user_poisoning=0"
export UBSAN_OPTIONS="log_path=$LOGS/report:print_stacktrace=1"
export LSAN_OPTIONS="suppressions=$ROOT/test/fuzz/lsan.supp"

if [[ $MODE == test ]]; then
  /usr/lib/llvm-22/bin/lit "$BUILD/test/lit" -j "$(nproc)" -q
  lit_rc=$?
  # install.prefix is left out: host programs built against the instrumented libraries
  # would need the ASan runtime themselves.
  ctest --test-dir "$BUILD" -j "$(nproc)" --output-on-failure -E '^install\.' > "$BUILD/ctest.log"
  ctest_rc=$?
  [[ $ctest_rc -eq 0 ]] || grep -E "Failed|\*\*\*" "$BUILD/ctest.log" | head -20
  reports=$(find "$LOGS" -type f | wc -l)
  echo "test-sanitize: lit exit $lit_rc, ctest exit $ctest_rc ($BUILD/ctest.log), $reports sanitizer report file(s) in $LOGS"
  for f in $(find "$LOGS" -type f | head -5); do echo "--- $f"; head -30 "$f"; done
  [[ $lit_rc -eq 0 && $ctest_rc -eq 0 && $reports -eq 0 ]]
  exit $?
elif [[ $MODE == fuzz ]]; then
  SECONDS_TO_RUN=${3:-60}
  CORPUS=$BUILD/fuzz-corpus ARTIFACTS=$BUILD/fuzz-artifacts
  mkdir -p "$CORPUS" "$ARTIFACTS"
  cp examples/*.miras "$CORPUS/"
  find test/lit -name '*.miras' -exec sh -c 'cp "$1" "$2/lit-$(echo "$1" | tr / _)"' _ {} "$CORPUS" \;
  "$BUILD/bin/miras_frontend_fuzzer" "$CORPUS" -max_total_time="$SECONDS_TO_RUN" \
    -seed=1 -max_len=8192 -timeout=10 -rss_limit_mb=4096 -artifact_prefix="$ARTIFACTS/" \
    -print_final_stats=1 2> "$BUILD/fuzz.log"
  rc=$?
  grep -E "^#[0-9]+.*(DONE|pulse)|stat::number_of_executed_units|stat::peak_rss" "$BUILD/fuzz.log" | tail -4
  reports=$(find "$LOGS" -type f | wc -l)
  echo "fuzz-smoke: exit $rc, $(ls "$ARTIFACTS" | wc -l) artifact(s), $reports sanitizer report file(s)"
  [[ $rc -eq 0 && $reports -eq 0 ]]
  exit $?
fi
echo "usage: scripts/sanitize.sh test|fuzz [BUILD] [SECONDS]" >&2
exit 2
