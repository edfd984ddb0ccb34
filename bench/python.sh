#!/usr/bin/env bash
# bench/python.sh [BUILD_DIR]: the "Python" table of bench/RESULTS.md.
#
# Forward + backward (a loss over o and the final states, loss.backward()) through the
# PyTorch API (miras.compile(..., D=64), B=1, H=4, T=1024, torch's threads) against, in
# the same run: the eager PyTorch recurrence with autograd (Gated DeltaNet in rank-1 form, the MLP
# memories as test/python/eager.py writes them), and for
# Gated DeltaNet fla's naive recurrent and chunked references (fla-core from PyPI,
# installed into BUILD_DIR/venv here when missing, run on the CPU); then the per-call
# cost at T=1 of the C API (miras bench), the binding alone and the whole Module call.
# Every peer's o and gradients are compared with miras' (largest relative difference).
#
# Environment: MIRAS_BENCH_T (default 1024), MIRAS_BENCH_REPEAT (5),
# MIRAS_BENCH_MODULES ("gated_deltanet titans ttt_mlp").
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/common.sh" "$@"
PY=$BUILD/venv/bin/python
[[ -x $PY ]] || { echo "python.sh: $PY not found; run make build first" >&2; exit 1; }
"$PY" -c 'import fla' 2>/dev/null || "$PY" -m pip install --quiet fla-core==0.6.0 einops==0.8.2
WORK=$BUILD/bench-python
mkdir -p "$WORK"
MIRAS_CACHE_DIR=$WORK/cache MIRAS_MIRASC=$MIRASC "$PY" "$ROOT/bench/python_bench.py" \
  --build "$BUILD" --length "${MIRAS_BENCH_T:-1024}" --repeat "${MIRAS_BENCH_REPEAT:-5}" \
  --modules "${MIRAS_BENCH_MODULES:-gated_deltanet titans ttt_mlp}" > "$WORK/report.json"

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
/usr/bin/python3 - "$WORK/report.json" "$ROOT/bench/RESULTS.md" "$SOURCE" "$LOAD_BEFORE" "$LOAD_AFTER" "$(( $(date +%s) - START ))" <<'PY'
import json, sys
sys.path.insert(0, sys.argv[2].rsplit("/", 1)[0])
from results_section import write_section

report_path, results, source, load_before, load_after, seconds = sys.argv[1:]
r = json.load(open(report_path))
rows = []
for m in r["modules"]:
    peers = [("eager PyTorch (autograd)", "eager"), ("fla naive recurrent", "fla_recurrent"),
             ("fla naive chunked (C = 64)", "fla_chunk")]
    for label, key in peers:
        if f"{key}_ms" not in m:
            continue
        rows.append(f"| {m['module']} | D={m['D']} B={m['B']} H={m['H']} T={m['T']} | "
                    f"{m['miras_ms']:.1f} | {label} | {m[key + '_ms']:.1f} | "
                    f"**{m['miras_speedup_vs_' + key]:.1f}x** | {m[key + '_max_rel_diff']:.1e} | "
                    f"{m['eager_f32_vs_f64']:.1e} |")
o = r["overhead"]
text = f"""## Python

`bench/python.sh` ({source}, torch {r['torch']}, {r['threads']} threads, {seconds} s; load
average before {load_before}, after {load_after}). Forward + backward (loss over o and
the final states, `loss.backward()`) through `miras.compile(...)(q, k, v, state, **gates)`
against peers on the same inputs; "max rel diff" is the largest relative difference of o
and of every gradient between the peer and miras; "f32 drift" is how far the eager
recurrence's own float32 o is from its float64 o over the sequence (a chaotic recurrence,
TTT-MLP at T = 1024, drifts by O(1): then no two float32 implementations agree, and the
diff says nothing about correctness; `test/python` checks every example at short T).
Targets: 20x eager PyTorch for gated_deltanet, 10x for MLP memories at T = 1024.

| module | shape | miras ms | peer | peer ms | miras speed-up | max rel diff | f32 drift |
|---|---|---|---|---|---|---|---|
""" + "\n".join(rows) + f"""

Per call at T = 1 (B = H = 1, D = 16, no gradient, one thread): the C API
(`miras_library_forward`, timed by `miras bench`) {o['c_api_us']:.2f} us; the binding
alone (`_core.Library.forward` on prepared tensor triples) {o['binding_us']:.2f} us
(+{o['binding_overhead_us']:.2f} us over the C call); the whole `Module` call (the Python
checks, the two output allocations, the binding) {o['module_call_us']:.2f} us
(+{o['module_overhead_us']:.2f} us). Target: binding overhead under 10 us per call.
"""
write_section(results, text, after="CPU backward")
PY
echo "python.sh: wrote the Python section of bench/RESULTS.md ($WORK/report.json)"
