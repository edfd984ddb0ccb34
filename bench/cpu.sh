#!/usr/bin/env bash
# bench/cpu.sh [BUILD_DIR]: the CPU benchmark table of bench/RESULTS.md.
#
# Compiles gated_deltanet, deltanet, mamba2, titans and moneta at D=64 and D=128 (and
# each again with --chunk=64 when this mirasc accepts that flag), runs
#   miras bench LIB --json --batch 2 --length T --heads 8 --threads N
# for N = nproc and N = 1, and rewrites the "CPU" section of bench/RESULTS.md with a
# markdown table (the other sections, GPU and CPU backward, are kept as they are). Libraries and the raw JSON
# reports go to BUILD_DIR/bench-cpu/. A module that fails to compile or run gets a row
# saying so; the script carries on.
#
# Environment: MIRAS_BENCH_T (default 4096), MIRAS_BENCH_REPEAT (3), MIRAS_BENCH_WARMUP (1),
# MIRAS_BENCH_MODULES (space separated), MIRAS_BENCH_DIMS ("64 128").
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/common.sh" "$@"
MODULES=${MIRAS_BENCH_MODULES:-"gated_deltanet deltanet mamba2 titans moneta"}

# The chunked variants need mirasc --chunk=N (SPEC section 7); seq64 runs the sequential
# algorithm on the same C = 64 semantics, so that the algorithms compare like for like.
VARIANTS="seq"
if "$MIRASC" --help 2>&1 | grep -q -- '--chunk='; then
  VARIANTS="seq chunk64"
  "$MIRASC" --help 2>&1 | grep -q -- '--algorithm=' && VARIANTS="seq seq64 chunk64"
fi

WORK=$BUILD/bench-cpu
rm -rf "$WORK"
mkdir -p "$WORK/lib" "$WORK/json"

for module in $MODULES; do
  for D in $DIMS; do
    for variant in $VARIANTS; do
      tag=${module}_D${D}_${variant}
      libdir=$WORK/lib/$tag
      mkdir -p "$libdir"
      flags=(-DD="$D")
      [[ $variant == chunk64 ]] && flags+=(--chunk=64 --algorithm=chunked)
      [[ $variant == seq64 ]] && flags+=(--chunk=64 --algorithm=sequential)
      echo "cpu.sh: $tag" >&2
      if ! "$MIRASC" "$ROOT/examples/$module.miras" "${flags[@]}" -o "$libdir/lib$module.so" \
          2> "$libdir/mirasc.err"; then
        printf '{"error": "mirasc failed", "tag": "%s"}\n' "$tag" > "$WORK/json/$tag.compile-error.json"
        continue
      fi
      for threads in $THREADS; do
        out=$WORK/json/${tag}_t$threads.json
        if ! "$MIRAS" bench "$libdir/lib$module.so" --json --batch $B --length "$T" --heads $H \
            --threads "$threads" --repeat "$REPEAT" --warmup "$WARMUP" > "$out" 2> "$out.err"; then
          printf '{"error": "miras bench failed", "tag": "%s", "threads": %s}\n' "$tag" "$threads" > "$out"
        fi
      done
    done
  done
done

ELAPSED=$(( $(date +%s) - START ))
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
COMMAND="bench/cpu.sh $(realpath --relative-to="$ROOT" "$BUILD" 2>/dev/null || echo "$BUILD")"
RUN="miras bench LIB --json --batch $B --length $T --heads $H --threads N --repeat $REPEAT --warmup $WARMUP"

python3 - "$WORK" "$ROOT/bench/RESULTS.md" "$COMMAND" "$RUN" "$ELAPSED" "$VARIANTS" \
    "$LOAD_BEFORE" "$LOAD_AFTER" "$SOURCE" <<'PY'
import datetime, glob, json, os, platform, re, subprocess, sys

work, results, command, run, elapsed, variants, load0, load1, source = sys.argv[1:10]

def cpu_model():
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"

def fmt(x, digits):
    return "-" if x is None else "%.*f" % (digits, x)

def first_line(path):
    """The first two non-empty lines of an error log, on one table cell."""
    try:
        with open(path) as f:
            lines = [l.strip() for l in f if l.strip()][:2]
        text = " ".join(lines).replace("|", "/")
        return re.sub(r'loc\("[^"]*"(:\d+)*\): ', "", text)[:160]
    except OSError:
        return ""

rows, peaks = [], {}
for path in sorted(glob.glob(os.path.join(work, "json", "*.json"))):
    with open(path) as f:
        text = f.read().strip()
    try:
        r = json.loads(text)
    except ValueError:
        r = {"error": "no JSON", "tag": os.path.basename(path)}
    if "error" in r:
        tag = r["tag"]
        m = re.match(r"(.*)_D(\d+)_(seq|seq64|chunk64)$", tag)
        module, D, variant = m.groups() if m else (tag, "?", "?")
        if r["error"] == "mirasc failed":
            why = first_line(os.path.join(work, "lib", tag, "mirasc.err"))
        else:
            why = first_line(path[:-5] + ".json.err") or first_line(path + ".err")
        rows.append((module, int(D) if D.isdigit() else 0, variant, r.get("threads", 0),
                     "| %s | %s | %s | %s | %s failed: %s | | | | | | |" % (
                         module, D, "C=1" if variant == "seq" else "C=64",
                         r.get("threads", "-"), r["error"].split()[0], why)))
        continue
    peaks.setdefault((r["threads"], r.get("peak_isa", "")), []).append(r["peak_gflops"])
    algo = "%s C=%d" % (r["algorithm"], r["chunk"])
    mtok = r["tokens_per_s"] / 1e6
    pct = None if r["fraction_of_peak"] is None else 100 * r["fraction_of_peak"]
    xref = r["speedup_vs_reference"]
    xbase = r["speedup_vs_baseline"]
    diff = r["max_abs_diff_vs_reference"]
    cells = [r["module"], str(r["dk"]), algo, str(r["threads"]), fmt(r["ms"], 2), "%.3g" % mtok,
             fmt(r["gflops"], 1), fmt(pct, 1), fmt(xref, 2) if xref else "-",
             fmt(xbase, 2) if xbase else "-", "%.1e" % diff if diff is not None else "-"]
    if not r.get("output_finite", True):
        cells[-1] += " (o not finite)"
    variant = ("seq" if r["chunk"] == 1
               else "seq64" if r["algorithm"] == "sequential" else "chunk64")
    rows.append((r["module"], r["dk"], variant, r["threads"], "| " + " | ".join(cells) + " |"))

order = {m: i for i, m in enumerate(["gated_deltanet", "deltanet", "mamba2", "titans", "moneta"])}
variant_order = {"seq": 0, "seq64": 1, "chunk64": 2}
rows.sort(key=lambda x: (order.get(x[0], 99), x[1], variant_order.get(x[2], 3), -int(x[3] or 0)))

now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
lines = ["## CPU", "",
         "Measured %s on %s, %d logical CPUs (`lscpu` model name: %s)." % (
             now, platform.node() or "this machine", os.cpu_count() or 0, cpu_model()),
         "", "Command: `%s` (took %s s); each row is `%s`, B*H = 16 (batch, head) pairs, "
         "T tokens each, median of the timed forwards." % (command, elapsed, run),
         "Compiler and tool: %s/bin/{mirasc,miras} built from source `%s` "
         "(`-dirty`: with uncommitted changes of the working tree). Load average before/after: "
         "%s / %s; other processes share these CPUs, so treat single figures with care." % (
             os.path.basename(os.path.dirname(work)), source, load0, load1),
         "Modules are compiled for this machine (mirasc's default -mcpu)%s." % (
             "; C=64 rows add `--chunk=64` and `--algorithm=chunked` or `--algorithm=sequential` "
             "(same numbers, other algorithm)" if "chunk64" in variants.split()
             else "; this mirasc has no --chunk flag, so there are no chunked rows"),
         "",
         "Columns: ms per forward; Mtok/s = B*T tokens per second; GFLOP/s = the module's "
         "flops_per_token * B*T*H / s (the derived rule's arithmetic per token, the same "
         "for every algorithm: the chunked forms execute more, their products over a chunk "
         "included); %% of peak = of the measured fp32 FMA peak on the "
         "same threads, measured in each run (%s); x vs reference = speed-up over the scalar (non-vectorised) "
         "reference of `miras bench`, run on the same threads; x vs baseline = speed-up over "
         "the hand-fused ggml-style Gated DeltaNet (AVX-512 via target_clones, same threads); "
         "max diff = max |o - o_ref| against that reference (same chunk semantics). "
         "`-` = not applicable (references for the linear memories, Titans and TTT-MLP; the baseline for gated_deltanet "
         "only)." % (", ".join("%d thread%s: %.0f-%.0f GFLOP/s %s" % (
             t, "" if t == 1 else "s", min(g), max(g), isa)
             for (t, isa), g in sorted(peaks.items()))
             or "peak not measured"),
         "",
         "| module | D | algorithm/chunk | threads | ms | Mtok/s | GFLOP/s | % of peak "
         "| x vs reference | x vs baseline | max diff |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
lines += [r[-1] for r in rows]
cpu = "\n".join(lines) + "\n"

# The other sections (GPU, CPU backward) are kept as they are.
sys.path.insert(0, os.path.dirname(os.path.abspath(results)))
from results_section import has_section, write_section
write_section(results, cpu, first=True)
if not has_section(results, "## GPU"):
    write_section(results, "## GPU\n\nNot measured yet: run bench/gpu.sh on a machine with an "
                  "NVIDIA GPU.\n")
print("cpu.sh: wrote %s (%d rows)" % (results, len(rows)))
PY
