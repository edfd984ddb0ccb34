#!/usr/bin/env bash
# bench/gpu.sh [BUILD_DIR]: GPU checks and the GPU benchmark table of bench/RESULTS.md, for a
# machine with an NVIDIA GPU (an H200 when one is lent to a session).
#
#   1. builds (cmake + ninja into BUILD_DIR, default build/) unless mirasc and miras are there;
#   2. runs the GPU tests: test/lit/CUDA and the ptx / device modes of test/lit/Examples
#      (every example's PTX through ptxas; with a GPU,
#      every example on the GPU against its CPU kernel, float32 inputs at 1e-4 and bfloat16
#      inputs at 1e-2) and the runtime's CUDA unit tests;
#   3. compiles gated_deltanet with --target=cpu,cuda --backward at D = 128 and 64,
#      sequential and chunked (C = 64), and runs
#        miras bench LIB --device cuda --batch 8 --length 4096 --heads 16 --json
#      with float32 and bfloat16 inputs: ms, tokens/s, GB/s and the fraction of the GPU's
#      measured copy bandwidth, and the largest difference from the CPU kernel; with
#      float32 inputs also --backward: the backward's ms (miras_library_backward_cuda), its
#      ratio to the forward, and the largest relative difference of its adjoints from the
#      CPU backward's;
#   3b. with build/venv and a GPU torch sees: the Python package's CUDA tests
#      (test/python -k cuda: forward and gradients on the GPU against the CPU);
#   4. runs bench/torch_gdn.py, the same recurrence in PyTorch (and fla's chunked kernel),
#      when torch sees the GPU;
#   5. rewrites the "GPU" section of bench/RESULTS.md (the "CPU" section is kept).
#
# A GPU machine without the compiler's toolchain (no MLIR): on a development machine run
#   bench/gpu.sh prepare KIT_DIR
# which compiles the libraries and copies the miras tool and runtime into KIT_DIR (a few
# MB); then on the GPU machine
#   MIRAS_GPU_KIT=KIT_DIR bench/gpu.sh
# skips steps 1-2 (the kit's libraries still cross-check the GPU against the CPU kernel).
#
# Environment: MIRAS_BENCH_B (8), MIRAS_BENCH_T (4096), MIRAS_BENCH_H (16),
# MIRAS_BENCH_DIMS ("128 64"), MIRAS_BENCH_REPEAT (10), MIRAS_BENCH_WARMUP (3).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
B=${MIRAS_BENCH_B:-8}
T=${MIRAS_BENCH_T:-4096}
H=${MIRAS_BENCH_H:-16}
DIMS=${MIRAS_BENCH_DIMS:-"128 64"}
REPEAT=${MIRAS_BENCH_REPEAT:-10}
WARMUP=${MIRAS_BENCH_WARMUP:-3}
VARIANTS="seq chunk64"

# compile_libs MIRASC OUT: one library per (D, variant) under OUT/<tag>/.
compile_libs() {
  local mirasc=$1 out=$2
  for D in $DIMS; do
    for variant in $VARIANTS; do
      local tag=gated_deltanet_D${D}_${variant} flags=(-DD="$D" --target=cpu,cuda --backward)
      [[ $variant == chunk64 ]] && flags+=(--chunk=64 --algorithm=chunked)
      mkdir -p "$out/$tag"
      echo "gpu.sh: compiling $tag" >&2
      "$mirasc" "$ROOT/examples/gated_deltanet.miras" "${flags[@]}" \
        -o "$out/$tag/libgated_deltanet.so" 2> "$out/$tag/mirasc.err" ||
        echo "gpu.sh: mirasc failed for $tag (see $out/$tag/mirasc.err)" >&2
    done
  done
}

if [[ ${1:-} == prepare ]]; then
  KIT=${2:?usage: bench/gpu.sh prepare KIT_DIR}
  BUILD=${3:-$ROOT/build}
  mkdir -p "$KIT/bin"
  cp "$BUILD/bin/miras" "$KIT/bin/"
  compile_libs "$BUILD/bin/mirasc" "$KIT/libs"
  echo "gpu.sh: kit in $KIT ($(du -sh "$KIT" | cut -f1))" >&2
  exit 0
fi

WORK_TESTS="not run"
if [[ -n ${MIRAS_GPU_KIT:-} ]]; then
  KIT=$(cd "$MIRAS_GPU_KIT" && pwd)
  MIRAS=$KIT/bin/miras
  LIBS=$KIT/libs
  WORK=$KIT/bench-gpu
  WORK_TESTS="skipped (prepared kit, no compiler on this machine)"
else
  BUILD=$(mkdir -p "${1:-$ROOT/build}" && cd "${1:-$ROOT/build}" && pwd)
  if [[ ! -x $BUILD/bin/mirasc || ! -x $BUILD/bin/miras ]]; then
    cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release
    ninja -C "$BUILD"
  fi
  MIRAS=$BUILD/bin/miras
  WORK=$BUILD/bench-gpu
  LIBS=$WORK/lib
  rm -rf "$WORK"
  mkdir -p "$WORK"
  echo "gpu.sh: GPU tests" >&2
  lit_rc=0
  # test/lit/CUDA plus the ptx and device modes of the example matrix (test/lit/Examples).
  /usr/lib/llvm-22/bin/lit "$BUILD/test/lit/CUDA" "$BUILD/test/lit/Examples" \
    --filter ':: (CUDA/|Examples/(ptx|device)/)' -sv > "$WORK/lit.log" 2>&1 || lit_rc=$?
  ctest_rc=0
  ctest --test-dir "$BUILD" -R 'Cuda|Bfloat16' --output-on-failure > "$WORK/ctest.log" 2>&1 || ctest_rc=$?
  WORK_TESTS="lit CUDA/ + Examples/{ptx,device}/: $(grep -E '^ *(Passed|Failed|Unsupported)' "$WORK/lit.log" | tr -s ' ' | tr '\n' ';' ) (exit $lit_rc); ctest Cuda: $(grep -E 'tests passed' "$WORK/ctest.log" || echo 'no summary') (exit $ctest_rc)"
  echo "gpu.sh: $WORK_TESTS" >&2
  compile_libs "$BUILD/bin/mirasc" "$LIBS"
fi
mkdir -p "$WORK/json"

for lib in "$LIBS"/*/libgated_deltanet.so; do
  tag=$(basename "$(dirname "$lib")")
  for dtype in f32 bf16; do
    echo "gpu.sh: bench $tag $dtype" >&2
    out=$WORK/json/${tag}_$dtype.json
    backward=()
    [[ $dtype == f32 ]] && backward=(--backward)
    if ! "$MIRAS" bench "$lib" --device cuda --input-dtype "$dtype" --json --batch "$B" \
        --length "$T" --heads "$H" --repeat "$REPEAT" --warmup "$WARMUP" "${backward[@]}" \
        > "$out" 2> "$out.err"; then
      printf '{"error": "%s", "tag": "%s", "input_dtype": "%s"}\n' \
        "$(head -1 "$out.err" | tr -d '"\\')" "$tag" "$dtype" > "$out"
    fi
  done
done

PYTEST="not run"
if [[ -z ${MIRAS_GPU_KIT:-} && -x $BUILD/venv/bin/python ]]; then
  MIRAS_BUILD=$BUILD "$BUILD/venv/bin/python" -m pytest "$ROOT/test/python" -q -k cuda \
    -p no:cacheprovider > "$WORK/pytest.log" 2>&1 || true
  PYTEST="pytest -k cuda: $(tail -1 "$WORK/pytest.log")"
  echo "gpu.sh: $PYTEST" >&2
fi
WORK_TESTS="$WORK_TESTS; $PYTEST"

for D in $DIMS; do
  for dtype in f32 bf16; do
    python3 "$ROOT/bench/torch_gdn.py" --batch "$B" --length "$T" --heads "$H" --dim "$D" \
      --dtype "$dtype" > "$WORK/json/torch_D${D}_$dtype.jsonl" 2>&1 || true
  done
done

DEVICE=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1 || true)
SOURCE=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)
python3 - "$WORK" "$ROOT/bench/RESULTS.md" "${DEVICE:-unknown}" "$SOURCE" "$WORK_TESTS" \
    "$B" "$T" "$H" "$REPEAT" <<'PY'
import datetime, glob, json, os, re, sys

work, results, device, source, tests, B, T, H, repeat = sys.argv[1:10]
fmt = lambda x, d: "-" if x is None else "%.*f" % (d, x)
rows = []
for path in sorted(glob.glob(os.path.join(work, "json", "gated_deltanet_*.json"))):
    r = json.load(open(path))
    if "error" in r:
        rows.append("| %s | %s | failed: %s | | | | | | | |" % (r["tag"], r["input_dtype"], r["error"]))
        continue
    backward = "-"
    if r.get("backward_ms") is not None:
        backward = "%s (%.2fx; %s)" % (fmt(r["backward_ms"], 3), r["backward_over_forward"],
                                        "%.1e" % r["backward_max_rel_diff_vs_cpu"]
                                        if r.get("backward_max_rel_diff_vs_cpu") is not None
                                        else r.get("backward_note") or "-")
    rows.append("| gated_deltanet D=%d %s C=%d | %s | %s | %.3g | %s | %s | %s | %s | %s | %s |" % (
        r["dk"], r["algorithm"], r["chunk"], r["input_dtype"], fmt(r["ms"], 3),
        r["tokens_per_s"] / 1e6, fmt(r["gflops"], 1), fmt(r["gbytes_per_s"], 1),
        fmt(None if r["fraction_of_copy_bandwidth"] is None
            else 100 * r["fraction_of_copy_bandwidth"], 1),
        "%.1e" % r["max_abs_diff_vs_cpu"] if r.get("max_abs_diff_vs_cpu") is not None else "-",
        "%d / %d" % (r["block_threads"], r["shared_bytes"]), backward))
copy = [json.load(open(p)).get("copy_gbytes_per_s") for p in
        glob.glob(os.path.join(work, "json", "gated_deltanet_*.json"))]
copy = [c for c in copy if c]
peers = []
for path in sorted(glob.glob(os.path.join(work, "json", "torch_*.jsonl"))):
    for line in open(path):
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if "error" in r:
            peers.append("| %s | - | - | %s |" % (r["peer"], r["error"]))
        else:
            peers.append("| %s D=%d | %s | %s | %.3g |" % (
                r["peer"], r["dim"], r["dtype"], fmt(r["ms"], 3), r["tokens_per_s"] / 1e6))
now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
lines = ["## GPU", "",
         "Measured %s on %s; source `%s`." % (now, device, source), "",
         "Command: `bench/gpu.sh`; each row is `miras bench LIB --device cuda --input-dtype DT "
         "--json --batch %s --length %s --heads %s --repeat %s` (median). Tests: %s." % (
             B, T, H, repeat, tests), "",
         "Columns: ms per forward (launch to completion); Mtok/s = B*T/s; GFLOP/s of the "
         "derived rule; GB/s = bytes a forward must move (inputs once, o, states in and out) "
         "per second, and %% of the GPU's measured device-to-device copy bandwidth (%s GB/s); "
         "max diff = max |o_gpu - o_cpu| against the same library's CPU kernel; threads / "
         "shared bytes per block; backward = ms of miras_library_backward_cuda (its ratio "
         "to the forward; the largest relative difference of its adjoints from the CPU "
         "backward's)." % (fmt(max(copy), 0) if copy else "?"), "",
         "| kernel | inputs | ms | Mtok/s | GFLOP/s | GB/s | % of copy bw | max diff vs cpu "
         "| threads / shared | backward ms (x fwd; diff) |",
         "|---|---|---|---|---|---|---|---|---|---|"] + rows
if peers:
    lines += ["", "Peers on the same GPU (bench/torch_gdn.py, same B, T, H):", "",
              "| peer | inputs | ms | Mtok/s |", "|---|---|---|---|"] + peers
gpu = "\n".join(lines) + "\n"
text = open(results).read() if os.path.exists(results) else "# miras benchmark results\n\n"
sections = re.split(r"(?m)^(?=## )", text)
kept = [s for s in sections if not s.startswith("## GPU")]
with open(results, "w") as f:
    f.write("".join(kept).rstrip("\n") + "\n\n" + gpu)
print("gpu.sh: wrote %s (%d rows, %d peer rows)" % (results, len(rows), len(peers)))
PY
