#!/usr/bin/env bash
# bench/backward.sh [BUILD_DIR]: the "CPU backward" table of bench/RESULTS.md.
#
# Compiles the linear examples (linear_attention, retnet, mamba2, gla, deltanet,
# gated_deltanet, ttt_linear) and the MLP memories titans and ttt_mlp, each of which has
# a scalar reference backward in `miras bench`, with `mirasc --backward` at D=64 and D=128, runs
#   miras bench LIB --json --backward --batch 2 --length T --heads 8 --threads N
# for N = nproc and N = 1, and rewrites the "CPU backward" section of bench/RESULTS.md
# (the other sections are kept). Libraries and the raw JSON reports go to
# BUILD_DIR/bench-backward/. A module that fails to compile or run gets a row saying so.
#
# Environment: MIRAS_BENCH_T (default 4096), MIRAS_BENCH_REPEAT (3), MIRAS_BENCH_WARMUP (1),
# MIRAS_BENCH_MODULES (space separated), MIRAS_BENCH_DIMS ("64 128"), MIRAS_BENCH_MLP_DIMS
# ("64": an MLP memory's backward at D=128 takes minutes per run on a small machine),
# MIRAS_BENCH_RESUME=1 (keep BUILD_DIR/bench-backward and skip the runs whose report is
# there: an interrupted run goes on).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/common.sh" "$@"
MODULES=${MIRAS_BENCH_MODULES:-"gated_deltanet deltanet mamba2 gla retnet linear_attention ttt_linear titans ttt_mlp"}
MLP_DIMS=${MIRAS_BENCH_MLP_DIMS:-"64"}
MLP_MODULES="titans ttt_mlp"

WORK=$BUILD/bench-backward
[[ ${MIRAS_BENCH_RESUME:-0} == 1 ]] || rm -rf "$WORK"
mkdir -p "$WORK/lib" "$WORK/json"

for module in $MODULES; do
  dims=$DIMS
  [[ " $MLP_MODULES " == *" $module "* ]] && dims=$MLP_DIMS
  for D in $dims; do
    tag=${module}_D${D}
    libdir=$WORK/lib/$tag
    if [[ ${MIRAS_BENCH_RESUME:-0} == 1 ]] && ls "$WORK/json/${tag}"_t*.json > /dev/null 2>&1 &&
        ! grep -qs '"error"' "$WORK/json/${tag}"_t*.json; then
      echo "backward.sh: $tag (kept)" >&2
      continue
    fi
    mkdir -p "$libdir"
    echo "backward.sh: $tag" >&2
    # Which tree and when, per module: a resumed table mixes runs.
    echo "$SOURCE $(date -u '+%Y-%m-%d %H:%M UTC')" > "$WORK/json/$tag.source"
    if ! "$MIRASC" "$ROOT/examples/$module.miras" -DD="$D" --backward -o "$libdir/lib$module.so" \
        2> "$libdir/mirasc.err"; then
      printf '{"error": "mirasc failed", "tag": "%s"}\n' "$tag" > "$WORK/json/$tag.compile-error.json"
      continue
    fi
    for threads in $THREADS; do
      out=$WORK/json/${tag}_t$threads.json
      if ! "$MIRAS" bench "$libdir/lib$module.so" --json --backward --batch $B --length "$T" \
          --heads $H --threads "$threads" --repeat "$REPEAT" --warmup "$WARMUP" > "$out" 2> "$out.err"; then
        printf '{"error": "miras bench failed", "tag": "%s", "threads": %s}\n' "$tag" "$threads" > "$out"
      fi
    done
  done
done

ELAPSED=$(( $(date +%s) - START ))
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
COMMAND="bench/backward.sh $(realpath --relative-to="$ROOT" "$BUILD" 2>/dev/null || echo "$BUILD")"
[[ ${MIRAS_BENCH_RESUME:-0} == 1 ]] && COMMAND="MIRAS_BENCH_RESUME=1 $COMMAND"
RUN="miras bench LIB --json --backward --batch $B --length $T --heads $H --threads N --repeat $REPEAT --warmup $WARMUP"

python3 - "$WORK" "$ROOT/bench/RESULTS.md" "$COMMAND" "$RUN" "$ELAPSED" \
    "$LOAD_BEFORE" "$LOAD_AFTER" "$SOURCE" <<'PY'
import datetime, glob, json, os, platform, re, sys

work, results, command, run, elapsed, load0, load1, source = sys.argv[1:9]

def fmt(x, digits):
    return "-" if x is None else "%.*f" % (digits, x)

rows, segment_set, provenance = [], set(), {}
for path in sorted(glob.glob(os.path.join(work, "json", "*.source"))):
    with open(path) as f:
        provenance.setdefault(f.read().strip(), []).append(
            os.path.basename(path)[:-len(".source")])
for path in sorted(glob.glob(os.path.join(work, "json", "*.json"))):
    with open(path) as f:
        text = f.read().strip()
    try:
        r = json.loads(text)
    except ValueError:
        r = {"error": "no JSON", "tag": os.path.basename(path)}
    if "error" in r:
        m = re.match(r"(.*)_D(\d+)$", r["tag"])
        module, D = m.groups() if m else (r["tag"], "0")
        err = os.path.join(work, "lib", r["tag"], "mirasc.err") if r["error"] == "mirasc failed" \
            else path + ".err"
        try:
            why = " ".join(l.strip() for l in open(err) if l.strip())[:160].replace("|", "/")
        except OSError:
            why = ""
        rows.append((module, int(D), r.get("threads", 0),
                     "| %s | %s | %s | %s failed: %s | | | | | | | | | | | | |" % (
                         module, D, r.get("threads", "-"), r["error"].split()[0], why)))
        continue
    segment_set.add(r["backward_segment"])
    mlp = r["module"] in ("titans", "ttt_mlp")
    target = 4.0 if mlp else 3.0
    ratio = r["backward_over_forward"]
    saved_ratio = r.get("backward_from_checkpoints_over_forward")
    # The forward timed in the same rounds as the backwards, the ratios' denominator
    # (miras bench --backward); its fraction of peak by the same flops.
    forward_ms = r.get("backward_rounds_forward_ms") or r["ms"]
    forward_peak = r.get("fraction_of_peak")
    if forward_peak:
        forward_peak *= r["ms"] / forward_ms
    cells = [r["module"], str(r["dk"]), str(r["threads"]), fmt(forward_ms, 2),
             fmt(r["backward_ms"], 2), "%.2f" % ratio,
             fmt(r.get("saving_forward_over_forward"), 3),
             fmt(r.get("backward_from_checkpoints_ms"), 2),
             "-" if saved_ratio is None else "%.2f (target %.0f)" % (saved_ratio, target),
             fmt(r.get("backward_work_over_forward"), 2),
             "%s / %s" % (fmt(100 * forward_peak if forward_peak else None, 1),
                          fmt(100 * r["backward_from_checkpoints_fraction_of_peak"]
                              if r.get("backward_from_checkpoints_fraction_of_peak") else None, 1)),
             "%d / %d" % (r["backward_states_per_pair"], r["backward_all_states_per_pair"]),
             "%.2f" % (r["backward_saved_bytes"] / 1e6),
             fmt(r["reference_backward_ms"], 1),
             fmt(r["backward_speedup_vs_reference"], 2),
             "%.1e" % r["backward_max_rel_diff_vs_reference"]
             if r["backward_max_rel_diff_vs_reference"] is not None else "-"]
    if not r.get("backward_output_finite", True):
        cells[-1] += " (adjoints not finite)"
    rows.append((r["module"], r["dk"], r["threads"], "| " + " | ".join(cells) + " |"))

order = {m: i for i, m in enumerate(["gated_deltanet", "deltanet", "mamba2", "gla", "retnet",
                                     "linear_attention", "ttt_linear", "titans", "ttt_mlp"])}
rows.sort(key=lambda x: (order.get(x[0], 99), x[1], -int(x[2] or 0)))
now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
segments = ", ".join(str(s) for s in sorted(segment_set)) or "-"
if len(provenance) > 1:  # a resumed table: say which rows come from which run
    built = "; ".join("`%s` at %s: %s" % (when.split(" ", 1)[0], when.split(" ", 1)[1],
                                          ", ".join(tags))
                      for when, tags in sorted(provenance.items(),
                                               key=lambda kv: kv[0].split(" ", 1)[1]))
else:
    built = "`%s`" % source
lines = ["## CPU backward", "",
         "Measured %s on %s, %d logical CPUs. Command: `%s` (took %s s%s); each row is `%s`, "
         "B*H = 16 pairs, chunk 1, segment S = %s. Built from %s. Load average "
         "before/after: %s / %s." % (now, platform.node() or "this machine", os.cpu_count() or 0,
                                     command, elapsed,
                                     ", the runs not kept from before" if "RESUME" in command
                                     else "", run, segments, built, load0, load1),
         "",
         "Columns: forward and backward ms (medians; `miras bench` times them in rounds, "
         "each round the forward, the backward, the saving forward and the backward from "
         "checkpoints once; this backward recomputes the forward itself: a checkpointing "
         "pass, then per segment a recompute and the reverse steps); bwd/fwd = their ratio, "
         "the median of the per-round ratios, as are the other ratios to the forward; saving fwd = the forward that also saves the checkpoints "
         "(miras_forward_args.checkpoints), over the plain forward; bwd from ckpt = the "
         "backward that reads them instead of its checkpointing pass (a training step's "
         "pair), and its ratio to the plain forward, with the issue's target (3 for linear "
         "memories, 4 for MLP memories); work / fwd = the backward from checkpoints' work "
         "over the forward's (metadata backward_flops_per_token over flops_per_token: the "
         "derived reverse step plus one recompute of the state update, against one update "
         "and one read), the time ratio it would have at the forward's GFLOP/s; % of peak = "
         "the forward's and that backward's GFLOP/s over the fp32 FMA peak measured in the "
         "same run; states kept = ceil(T/S) + S per (batch, head) pair in flight against T "
         "to keep them all; saved MB = those states for the pairs in flight (one per thread); "
         "reference = the hand-written scalar reverse sweep of `miras bench` (same segment, "
         "same threads; the MLP memories' written out through their inner gradient, "
         "Hessian-vector products included), x = its time over the module's; max rel diff = "
         "max |d - d_ref| / max |d_ref| over the adjoints of q, k, v, the gates and the "
         "initial states.",
         "",
         "| module | D | threads | forward ms | backward ms | bwd/fwd | saving fwd / fwd "
         "| bwd from ckpt ms | bwd from ckpt / fwd | work / fwd | % of peak fwd / bwd "
         "| states kept / T | saved MB | reference ms | x vs reference | max rel diff |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
lines += [r[-1] for r in rows]
section = "\n".join(lines) + "\n"

# After the forward CPU section when there is one, else at the end.
sys.path.insert(0, os.path.dirname(os.path.abspath(results)))
from results_section import write_section
write_section(results, section, after="## CPU")
print("backward.sh: wrote %s (%d rows)" % (results, len(rows)))
PY
