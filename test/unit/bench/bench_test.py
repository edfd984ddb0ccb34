#!/usr/bin/env python3
"""End-to-end test of `miras bench` (registered with CTest as bench.cli).

Compiles examples/gated_deltanet.miras and examples/mamba2.miras at D=16, runs
`miras bench --json` on each and checks that the report has every required key, that
the measured numbers are positive, and that the module's output agrees with the tool's
scalar reference (max |o - o_ref| < 1e-3): a wrong module or a wrong reference fails.
Also checks that `--device cuda` fails with a one-line reason naming cuda when it cannot
run (these modules are built for the cpu target; without a GPU even a cuda build fails
for lack of a driver), and that `--input-dtype bf16` without `--device cuda` is a usage
error. No timing assertions.
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


def bench_module(args, name):
    lib = os.path.join(args.workdir, "lib%s.so" % name)
    src = os.path.join(args.examples, name + ".miras")
    r = run([args.mirasc, src, "-DD=16", "-o", lib])
    if r.returncode != 0:
        check(False, "mirasc %s failed: %s" % (name, r.stderr.strip()))
        return None
    r = run([args.miras, "bench", lib, "--json", "--length", "64", "--batch", "1", "--heads",
             "2", "--repeat", "1"])
    check(r.returncode == 0, "miras bench %s exited %d: %s" % (name, r.returncode,
                                                               r.stderr.strip()))
    try:
        return lib, json.loads(r.stdout)
    except ValueError:
        check(False, "miras bench %s printed no single JSON object: %r" % (name, r.stdout))
        return None


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

    if failures:
        print("bench test: %d failure(s)" % len(failures))
        return 1
    print("bench test: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
