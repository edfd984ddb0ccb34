#!/usr/bin/env python3
"""End-to-end test of `miras bench` (registered with CTest as bench.cli).

Compiles examples/gated_deltanet.miras and examples/mamba2.miras at D=16, runs
`miras bench --json` on each and checks that the report has every required key, that
the measured numbers are positive, and that the module's output agrees with the tool's
scalar reference (max |o - o_ref| < 1e-3): a wrong module or a wrong reference fails.
Also checks that the reference and the Gated DeltaNet baseline follow the module's
structure, not its name: a module named gated_deltanet that computes Mamba2 gets the
Mamba2 reference and no baseline, one with a decoupled decay gets neither, and a Gated
DeltaNet named otherwise (gates renamed) gets both; likewise a module named titans with
a relu MLP gets no reference, and a renamed Titans the Titans one. Also checks that `--device cuda` fails with a one-line reason naming cuda when it cannot
run (these modules are built for the cpu target; without a GPU even a cuda build fails
for lack of a driver), and that `--input-dtype bf16` without `--device cuda` is a usage
error. With --backward (check_backward): every model with a scalar reference (the linear
ones, Titans and TTT-MLP, with chunk 1 and 4), and a module reading before its write,
compiled with mirasc --backward: the forward's o against the reference's (relative
1e-4), the compiled adjoints of q, k, v, the gates and the initial state against the tool's
hand-written scalar reverse sweep (relative 1e-4), the recompute's state count
ceil((T + C - 1)/S) + S, and the errors for a library without a backward pass, for bf16
inputs and for a cpu-only library on cuda. With --decode (check_decode): a chunked Gated
DeltaNet, both algorithms, run as one-token calls gives the whole call's o (1e-5).
No timing assertions.
Standard library only (no numpy).
"""

import argparse
import json
import os
import subprocess
import sys

REQUIRED = ["module", "batch", "length", "heads", "dk", "dv", "threads", "chunk", "algorithm",
            "ms", "tokens_per_s", "gflops", "peak_gflops", "fraction_of_peak", "reference_ms",
            "speedup_vs_reference", "baseline_ms", "speedup_vs_baseline",
            "max_abs_diff_vs_reference"]
POSITIVE = ["ms", "tokens_per_s", "gflops", "peak_gflops", "fraction_of_peak", "reference_ms",
            "speedup_vs_reference"]
# Keys that only gated_deltanet fills (the hand-fused baseline).
BASELINE = ["baseline_ms", "speedup_vs_baseline"]

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL: " + what)


def run(cmd):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def compile_and_bench(args, tag, src, lib, mirasc_args=()):
    """The `miras bench --json` report of `src` compiled to `lib`, or None after a
    failed check."""
    r = run([args.mirasc, src, *mirasc_args, "-o", lib])
    if r.returncode != 0:
        check(False, "mirasc %s failed: %s" % (tag, r.stderr.strip()))
        return None
    r = run([args.miras, "bench", lib, "--json", "--length", "64", "--batch", "1", "--heads",
             "2", "--repeat", "1"])
    check(r.returncode == 0, "miras bench %s exited %d: %s" % (tag, r.returncode,
                                                              r.stderr.strip()))
    try:
        return json.loads(r.stdout)
    except ValueError:
        check(False, "miras bench %s printed no single JSON object: %r" % (tag, r.stdout))
        return None


def bench_module(args, name):
    lib = os.path.join(args.workdir, "lib%s.so" % name)
    src = os.path.join(args.examples, name + ".miras")
    report = compile_and_bench(args, name, src, lib, ["-DD=16"])
    return None if report is None else (lib, report)


# The reference and the baseline are picked by what a module computes, never its name.
IMPOSTOR = """// named gated_deltanet, computes Mamba2
module gated_deltanet {
  gate alpha : scalar in [0.85, 1];
  memory linear(dk = 16, dv = 16);
  bias dot;
  retention l2(decay = alpha);
  optimizer gd(lr = 0.5);
}
"""
DECOUPLED = """// named gated_deltanet, but the decay is applied after the gradient step (decoupled)
module gated_deltanet {
  gate eta : scalar in [0.05, 0.5];
  gate alpha : scalar in [0.85, 1];
  memory linear(dk = 16, dv = 16);
  bias l2;
  retention l2(decay = alpha, order = decoupled);
  optimizer gd(lr = eta);
}
"""
RENAMED = """// Gated DeltaNet under another name, its gates renamed and declared in another order
module my_memory {
  gate forget : scalar in [0.85, 1];
  gate rate : scalar in [0.05, 0.5];
  memory linear(dk = 16, dv = 16);
  bias l2;
  retention l2(decay = forget, order = before_gradient);
  optimizer gd(lr = rate);
}
"""

# Titans' structure (W1, W2, S1, S2) with another activation: no reference computes it.
TITANS_RELU = """// named titans, but its MLP uses relu
module titans {
  gate theta : scalar in [0.01, 0.05];
  gate mu    : scalar in [0.5, 0.9];
  gate alpha : scalar in [0.97, 1];
  memory    mlp(dim = 8, depth = 2, expansion = 4, act = relu);
  bias      l2;
  retention l2(decay = alpha);
  optimizer momentum(lr = theta, beta = mu);
}
"""
# Titans with its gates renamed and declared in another order: the Titans reference.
TITANS_RENAMED = """// Titans under another name
module surprise_memory {
  gate forget   : scalar in [0.97, 1];
  gate momentum : scalar in [0.5, 0.9];
  gate rate     : scalar in [0.01, 0.05];
  memory    mlp(dim = 8, depth = 2, expansion = 4, act = silu);
  bias      l2;
  retention l2(decay = forget);
  optimizer momentum(lr = rate, beta = momentum);
}
"""


def bench_source(args, tag, source):
    path = os.path.join(args.workdir, tag + ".miras")
    with open(path, "w") as f:
        f.write(source)
    return compile_and_bench(args, tag, path, os.path.join(args.workdir, tag, "lib.so"))


def check_structure(args):
    report = bench_source(args, "impostor", IMPOSTOR)
    if report is not None:
        check(report.get("reference_model") == "mamba2",
              "module named gated_deltanet computing Mamba2: reference_model %r, want 'mamba2'"
              % report.get("reference_model"))
        check(report.get("baseline_ms") is None,
              "module named gated_deltanet computing Mamba2 got the Gated DeltaNet baseline")
        diff = report.get("max_abs_diff_vs_reference")
        check(isinstance(diff, (int, float)) and diff < 1e-3,
              "impostor: max_abs_diff_vs_reference %r" % diff)
    report = bench_source(args, "decoupled", DECOUPLED)
    if report is not None:
        check(report.get("reference_model") is None and report.get("reference_ms") is None,
              "gated_deltanet with a decoupled decay got a reference (%r): none computes it"
              % report.get("reference_model"))
        check(report.get("baseline_ms") is None,
              "gated_deltanet with a decoupled decay got the Gated DeltaNet baseline")
    report = bench_source(args, "renamed", RENAMED)
    if report is not None:
        check(report.get("reference_model") == "gated_deltanet",
              "renamed Gated DeltaNet: reference_model %r" % report.get("reference_model"))
        for key in ("baseline_ms", "speedup_vs_baseline"):
            value = report.get(key)
            check(isinstance(value, (int, float)) and value > 0,
                  "renamed Gated DeltaNet: %s = %r, want the baseline" % (key, value))
        for key in ("max_abs_diff_vs_reference", "baseline_max_abs_diff_vs_reference"):
            value = report.get(key)
            check(isinstance(value, (int, float)) and 0 <= value < 1e-3,
                  "renamed Gated DeltaNet: %s = %r (want < 1e-3)" % (key, value))
    report = bench_source(args, "titans_relu", TITANS_RELU)
    if report is not None:
        check(report.get("reference_model") is None and report.get("reference_ms") is None,
              "titans with relu got a reference (%r): none computes it"
              % report.get("reference_model"))
        check("no scalar reference" in str(report.get("reference_note")),
              "titans with relu: reference_note %r does not say why"
              % report.get("reference_note"))
    report = bench_source(args, "titans_renamed", TITANS_RENAMED)
    if report is not None:
        check(report.get("reference_model") == "titans",
              "renamed Titans: reference_model %r" % report.get("reference_model"))
        diff = report.get("max_rel_diff_vs_reference")
        check(isinstance(diff, (int, float)) and 0 <= diff < 1e-4,
              "renamed Titans: max_rel_diff_vs_reference = %r (want < 1e-4)" % diff)


BACKWARD_KEYS = ["backward_ms", "backward_over_forward", "backward_segment",
                 "backward_states_per_pair", "backward_saved_bytes", "reference_backward_ms",
                 "backward_speedup_vs_reference", "backward_max_rel_diff_vs_reference",
                 "backward_flops_per_token", "backward_from_checkpoints_gflops",
                 "backward_from_checkpoints_fraction_of_peak", "backward_work_over_forward",
                 "backward_rounds_forward_ms", "saving_forward_ms", "backward_from_checkpoints_ms"]
# Each ratio to the forward is the median of per-round ratios to the forward timed in the
# same round (miras bench --backward); with one round, the ratio of the two times.
ONE_ROUND_RATIOS = [("backward_over_forward", "backward_ms"),
                    ("saving_forward_over_forward", "saving_forward_ms"),
                    ("backward_from_checkpoints_over_forward", "backward_from_checkpoints_ms")]
# Linear attention's work by hand from its derived reverse step (mirasc --emit=rule
# --backward) at D = 8, by flops_per_token's conventions: dW = dW_next + do q^T (2 D^2),
# dq = sum(do * v) * k + W^T do (2 D^2 + 4 D), dk = sum(do * v) * q + dW_next^T v
# (2 D^2 + 2 D, the sum shared), dv = do * sum(q * k) + dW_next k (2 D^2 + 4 D), and the
# recompute's W + v k^T (2 D^2); the forward adds W' q (4 D^2 in all).
LINEAR_ATTENTION_WORK = {"flops_per_token": 4 * 8 * 8,
                         "backward_flops_per_token": 10 * 8 * 8 + 10 * 8}
# (tag, source, extra mirasc arguments, expected reference model)
BACKWARD_CASES = [(name, name, [], name) for name in (
    "linear_attention", "retnet", "mamba2", "gla", "deltanet", "gated_deltanet",
    "ttt_linear")] + [
    ("gated_deltanet_c4", "gated_deltanet", ["--chunk=4", "--backward-segment=8"],
     "gated_deltanet"),
    ("gla_c4", "gla", ["--chunk=4", "--backward-segment=8"], "gla"),
    ("ttt_linear_c4", "ttt_linear", ["--chunk=4", "--backward-segment=12"], "ttt_linear"),
    # Segments of one token: the recompute steps no state, and every token's taped
    # products (miras-tape-recomputed-products) come from the segment's last token.
    ("gated_deltanet_s1", "gated_deltanet", ["--backward-segment=1"], "gated_deltanet"),
    ("titans_s1", "titans", ["--backward-segment=1"], "titans"),
    # The MLP memories (reference_mlp.cpp), one with several segments.
    ("titans", "titans", [], "titans"),
    ("titans_s8", "titans", ["--backward-segment=8"], "titans"),
    ("ttt_mlp", "ttt_mlp", ["--backward-segment=16"], "ttt_mlp"),
    ("titans_c4", "titans", ["--chunk=4", "--backward-segment=8"], "titans"),
    ("ttt_mlp_c4", "ttt_mlp", ["--chunk=4", "--backward-segment=8"], "ttt_mlp"),
]


def check_backward(args, before_write):
    length = 37  # neither the segment's nor the chunk's multiple
    cases = BACKWARD_CASES + [("before_write", before_write, [], "deltanet")]
    for tag, src, extra, model in cases:
        path = src if src.endswith(".miras") else os.path.join(args.examples, src + ".miras")
        lib = os.path.join(args.workdir, "backward", "lib%s.so" % tag)
        os.makedirs(os.path.dirname(lib), exist_ok=True)
        r = run([args.mirasc, path, "-DD=8", "--backward", *extra, "-o", lib])
        if r.returncode != 0:
            check(False, "mirasc --backward %s failed: %s" % (tag, r.stderr.strip()))
            continue
        r = run([args.miras, "bench", lib, "--json", "--backward", "--length", str(length),
                 "--batch", "2", "--heads", "2", "--threads", "2", "--repeat", "1"])
        if r.returncode != 0:
            check(False, "miras bench --backward %s exited %d: %s" % (tag, r.returncode,
                                                                    r.stderr.strip()))
            continue
        report = json.loads(r.stdout)
        for key in BACKWARD_KEYS:
            value = report.get(key)
            check(isinstance(value, (int, float)) and value > 0,
                  "%s: %s = %r is not a positive number" % (tag, key, value))
        check(report.get("reference_model") == model,
              "%s: reference_model %r, want %r" % (tag, report.get("reference_model"), model))
        forward_ms = report.get("backward_rounds_forward_ms")
        for ratio_key, ms_key in ONE_ROUND_RATIOS:
            ratio, ms = report.get(ratio_key), report.get(ms_key)
            if all(isinstance(x, (int, float)) and x > 0 for x in (ratio, ms, forward_ms)):
                # The report's numbers have 6 significant digits.
                check(abs(ratio - ms / forward_ms) <= 1e-4 * ratio,
                      "%s: %s = %r, want %s / backward_rounds_forward_ms = %r"
                      % (tag, ratio_key, ratio, ms_key, ms / forward_ms))
        diff = report.get("max_rel_diff_vs_reference")
        check(isinstance(diff, (int, float)) and diff < 1e-4,
              "%s: forward max_rel_diff_vs_reference = %r, want < 1e-4" % (tag, diff))
        work, flops = report.get("backward_flops_per_token"), report.get("flops_per_token")
        if isinstance(work, (int, float)) and isinstance(flops, (int, float)) and flops > 0:
            ratio = report.get("backward_work_over_forward")
            check(isinstance(ratio, (int, float)) and abs(ratio - work / flops) <= 1e-5 * ratio,
                  "%s: backward_work_over_forward %r, want %r / %r" % (tag, ratio, work, flops))
            # The report's numbers have 6 significant digits.
            ms = report.get("backward_from_checkpoints_ms")
            want = work * 2 * length * 2 / (ms * 1e-3) * 1e-9 if ms else None
            got = report.get("backward_from_checkpoints_gflops")
            check(want is not None and isinstance(got, (int, float))
                  and abs(got - want) <= 1e-4 * want,
                  "%s: backward_from_checkpoints_gflops %r, want %r" % (tag, got, want))
        if tag == "linear_attention":
            for key, want in LINEAR_ATTENTION_WORK.items():
                check(report.get(key) == want,
                      "linear_attention: %s = %r, want %r (by hand)" % (key, report.get(key), want))
        diff = report.get("backward_max_rel_diff_vs_reference")
        check(isinstance(diff, (int, float)) and diff < 1e-4,
              "%s: backward_max_rel_diff_vs_reference = %r (worst %r), want < 1e-4"
              % (tag, diff, report.get("backward_worst_output")))
        segment, chunk = report.get("backward_segment"), report.get("chunk")
        if isinstance(segment, int) and segment > 0 and isinstance(chunk, int):
            # The checkpoints of the chunk-aligned time (miras_abi.h backward_segment).
            want = (length - 1 + chunk - 1) // segment + 1 + segment
            check(report.get("backward_states_per_pair") == want,
                  "%s: backward_states_per_pair %r for T = %d, S = %d"
                  % (tag, report.get("backward_states_per_pair"), length, segment))
        check(report.get("backward_output_finite") is True, "%s: non-finite adjoints" % tag)

    # A library without a backward pass, and --backward on cuda.
    lib = os.path.join(args.workdir, "backward", "libforward_only.so")
    r = run([args.mirasc, os.path.join(args.examples, "deltanet.miras"), "-DD=8", "-o", lib])
    check(r.returncode == 0, "mirasc deltanet: %s" % r.stderr.strip())
    r = run([args.miras, "bench", lib, "--backward", "--length", "8", "--repeat", "1"])
    check(r.returncode == 1 and "mirasc --backward" in r.stderr and r.stdout == "",
          "--backward without a backward pass: want exit 1 naming mirasc --backward, got %d: %r"
          % (r.returncode, r.stderr))
    r = run([args.miras, "bench", lib, "--backward", "--device", "cuda", "--input-dtype", "bf16"])
    check(r.returncode == 2 and "f32" in r.stderr,
          "--backward with bf16 inputs: want a usage error (exit 2) naming f32, got %d: %r"
          % (r.returncode, r.stderr))
    # A cpu-only library on cuda: refused with the reason, before any GPU is needed.
    r = run([args.miras, "bench", lib, "--backward", "--device", "cuda"])
    check(r.returncode == 1 and "cuda" in r.stderr and r.stdout == "",
          "--backward --device cuda on a cpu library: want exit 1 naming cuda, got %d: %r"
          % (r.returncode, r.stderr))


def check_decode(args):
    """--decode: the sequence as one-token calls, every state carried (a chunked module's
    anchors and chunk position too), gives the whole call's o, for both algorithms."""
    for algorithm in ("sequential", "chunked"):
        lib = os.path.join(args.workdir, "decode", "lib_%s.so" % algorithm)
        os.makedirs(os.path.dirname(lib), exist_ok=True)
        r = run([args.mirasc, os.path.join(args.examples, "gated_deltanet.miras"), "-DD=8",
                 "--chunk=4", "--algorithm=" + algorithm, "-o", lib])
        if r.returncode != 0:
            check(False, "mirasc --algorithm=%s failed: %s" % (algorithm, r.stderr.strip()))
            continue
        r = run([args.miras, "bench", lib, "--json", "--decode", "--length", "37",
                 "--batch", "2", "--heads", "2", "--threads", "1", "--repeat", "1",
                 "--no-reference"])
        if r.returncode != 0:
            check(False, "miras bench --decode (%s) exited %d: %s" % (
                algorithm, r.returncode, r.stderr.strip()))
            continue
        report = json.loads(r.stdout)
        for key in ("decode_ms_per_token", "decode_over_whole"):
            value = report.get(key)
            check(isinstance(value, (int, float)) and value > 0,
                  "decode (%s): %s = %r is not a positive number" % (algorithm, key, value))
        diff = report.get("decode_max_rel_diff_vs_whole")
        check(isinstance(diff, (int, float)) and 0 <= diff < 1e-5,
              "decode (%s): max_rel_diff_vs_whole = %r, want < 1e-5" % (algorithm, diff))
    r = run([args.miras, "bench", lib, "--decode", "--device", "cuda"])
    check(r.returncode == 2 and "cpu" in r.stderr,
          "--decode --device cuda: want a usage error naming cpu, got %d: %r"
          % (r.returncode, r.stderr))


def json_device(text):
    try:
        return json.loads(text).get("device")
    except ValueError:
        return None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mirasc", required=True)
    p.add_argument("--miras", required=True)
    p.add_argument("--examples", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--before-write", required=True,
                   help="a module reading o before its write (test/numeric/modules)")
    args = p.parse_args()
    os.makedirs(args.workdir, exist_ok=True)

    lib = None
    for name in ("gated_deltanet", "mamba2"):
        got = bench_module(args, name)
        if got is None:
            continue
        lib, report = got
        for key in REQUIRED:
            check(key in report, "%s: key '%s' missing" % (name, key))
        check(report.get("module") == name, "%s: module is %r" % (name, report.get("module")))
        check((report.get("batch"), report.get("length"), report.get("heads")) == (1, 64, 2),
              "%s: batch/length/heads %r" % (name, [report.get(k) for k in
                                                    ("batch", "length", "heads")]))
        check(report.get("dk") == 16 and report.get("dv") == 16, "%s: dk/dv not 16" % name)
        check(isinstance(report.get("threads"), int) and report["threads"] >= 1,
              "%s: threads %r" % (name, report.get("threads")))
        positive = POSITIVE + (BASELINE if name == "gated_deltanet" else [])
        for key in positive:
            value = report.get(key)
            check(isinstance(value, (int, float)) and value > 0,
                  "%s: %s = %r is not a positive number" % (name, key, value))
        if name != "gated_deltanet":
            for key in BASELINE:
                check(report.get(key, 0) is None, "%s: %s should be null" % (name, key))
        diff = report.get("max_abs_diff_vs_reference")
        check(isinstance(diff, (int, float)) and 0 <= diff < 1e-3,
              "%s: max_abs_diff_vs_reference = %r (want < 1e-3)" % (name, diff))
        if name == "gated_deltanet":
            bdiff = report.get("baseline_max_abs_diff_vs_reference")
            check(isinstance(bdiff, (int, float)) and 0 <= bdiff < 1e-3,
                  "%s: baseline_max_abs_diff_vs_reference = %r" % (name, bdiff))

    if lib is not None:
        r = run([args.miras, "bench", lib, "--device", "cuda"])
        lines = r.stderr.strip().splitlines()
        if r.returncode == 0:
            # A cuda build on a machine with a GPU: the report is the cuda one.
            check(json_device(r.stdout) in (None, "cuda"), "--device cuda: not a cuda report")
        else:
            check(r.returncode == 1, "--device cuda exited %d (want 1)" % r.returncode)
            check(len(lines) == 1 and lines[0].startswith("miras: error: ") and
                  "cuda" in lines[0].lower() and
                  any(why in lines[0] for why in ("no cuda kernels", "CUDA driver",
                                                  "cuInit", "CUDA device")),
                  "--device cuda: want one error line naming cuda and the reason, got %r" %
                  r.stderr)
            check(r.stdout == "", "--device cuda printed on stdout: %r" % r.stdout)
        r = run([args.miras, "bench", lib, "--input-dtype", "bf16"])
        check(r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1,
              "--input-dtype bf16 without --device cuda: want a one-line usage error (exit 2), "
              "got %d: %r" % (r.returncode, r.stderr))

    check_structure(args)
    check_backward(args, args.before_write)
    check_decode(args)

    if failures:
        print("bench test: %d failure(s)" % len(failures))
        return 1
    print("bench test: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
