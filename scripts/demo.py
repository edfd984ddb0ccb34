#!/usr/bin/python3
"""miras demo: compile every examples/*.miras, run it on random data, check it.

    scripts/demo.py [--build BUILD_DIR] [--B 2 --T 1024 --H 4 --D 64] [--tol 1e-4]
                    [--examples DIR] [--out DIR]

Tools are BUILD_DIR/bin/mirasc and BUILD_DIR/bin/miras; libraries go to BUILD_DIR/demo/
(--out), inputs/outputs to BUILD_DIR/demo/data/<module>/. Gates are drawn from the ranges
the examples declare (`miras info`: sample). Each output is compared with the independent
float64 numpy reference of test/numeric/reference.py (SPEC section 6 closed forms). Prints
a table; a module whose error is at or above the tolerance is a FAIL row, never "ok", and
the demo exits 1 if any module fails to build, run or stay within the tolerance.

The regime is chosen so that the check means something: a long MLP-memory recurrence can
be chaotic, its float64 reference moving by O(1) when an input moves by 1e-7, and then no
float32 kernel can match it. For the modules where that is measured (MLP memories: the
reference is rerun with k nudged by 1e-7, relative), T is halved from --T until the
reference moves by less than tol / 10 (down to 16 tokens); the "T" and "cond" columns say
where each module ran and how much its reference moved.

Timing columns: "fwd ms" is the time `miras run` itself reports (blank when it prints none
we recognise); "process ms" is the wall time of the whole `miras run` process (loading the
library, reading and writing .npy files included), measured here.
"""

import argparse
import glob
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "test", "numeric"))
import check_module as C  # noqa: E402
import reference as R  # noqa: E402


def state_error(rule, name, x, ref):
    """Relative error of one state tensor. A dual state A (lq, kl) is compared
    through its map W = map(A): that is what the memory uses, and A itself may
    decay towards zero, where a relative error says little."""
    if rule is not None and getattr(rule, "mirror", False) and name.startswith("A"):
        x, ref = rule.map(x), rule.map(ref)
    return R.rel_err(x, ref)


def input_sensitivity(tm, rel=1e-7, seed=1):
    """Relative change of the float64 reference outputs when k is perturbed by
    `rel` (relative, random signs); None where the run did not keep its inputs."""
    if "rule" not in tm or "inputs" not in tm:
        return None
    inp = {n: np.asarray(x, dtype=np.float64) for n, x in tm["inputs"].items()}
    ref_o, ref_states = R.run_mlp(tm["rule"], inp)
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=inp["k"].shape)
    nudged = dict(inp, k=inp["k"] * (1 + rel * signs))
    o2, states2 = R.run_mlp(tm["rule"], nudged)
    drift = R.rel_err(o2, ref_o)
    for n in ref_states:
        drift = max(drift, state_error(tm["rule"], n, states2[n], ref_states[n]))
    return drift


# The shortest sequence the demo runs a module on while looking for a well-conditioned
# regime; below it the check is reported as it comes out.
MIN_T = 16


def main(argv=None):
    p = argparse.ArgumentParser(description="compile, run and check every example")
    p.add_argument("--build", default="build")
    p.add_argument("--B", type=int, default=2)
    p.add_argument("--T", type=int, default=1024)
    p.add_argument("--H", type=int, default=4)
    p.add_argument("--D", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    # fp32 over T = 1024 steps: the float32-vs-float64 gap of the reference itself is
    # ~1e-6 here (see check_module.py --self-test for T = 48); 1e-4 leaves headroom for
    # a different summation order (parallel/chunked kernels) without hiding real bugs,
    # which show up as errors of 1e-3 and more.
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--examples", default=os.path.join(ROOT, "examples"))
    p.add_argument("--out", default=None, help="libraries and data (default BUILD/demo)")
    a = p.parse_args(argv)

    build = os.path.abspath(a.build)
    mirasc = os.path.join(build, "bin", "mirasc")
    miras = os.path.join(build, "bin", "miras")
    for tool in (mirasc, miras):
        if not os.access(tool, os.X_OK):
            print("demo: %s not found; build first (make build)" % tool, file=sys.stderr)
            return 1
    demo = os.path.abspath(a.out) if a.out else os.path.join(build, "demo")
    files = sorted(glob.glob(os.path.join(a.examples, "*.miras")))
    if not files:
        print("demo: no examples in %s" % a.examples, file=sys.stderr)
        return 1

    print("miras demo: B=%d T=%d H=%d D=%d, float32, tolerance %.0e (max rel err vs float64 "
          "numpy reference); MLP memories at the longest T <= %d (halving) whose reference "
          "moves < tol/10 when k moves by 1e-7" % (a.B, a.T, a.H, a.D, a.tol, a.T))
    # state: the worst of W.. / S.., and map(A) for duals; cond: the reference's relative
    # move under the 1e-7 nudge of k ("-": not measured, linear memories)
    hdr = "%-20s %5s %8s %9s %11s %10s %12s %9s  %s" % (
        "module", "T", "tokens", "fwd ms", "process ms", "err o", "err state", "cond",
        "status")
    print(hdr)
    print("-" * len(hdr))
    failures = []
    for f in files:
        stem = os.path.splitext(os.path.basename(f))[0]
        try:
            name = C.module_name(f)
            if name not in R.MODELS:
                raise C.CheckError("no reference model named '%s'" % name)
            model = R.MODELS[name]
            T = a.T
            while True:
                res, tm = C.prepare_and_run(mirasc, miras, f, model, model.primary,
                                            ["D=%d" % a.D], a.B, T, a.H, a.seed,
                                            os.path.join(demo, "data", name), libdir=demo)
                drift = input_sensitivity(tm)
                if drift is None or drift < a.tol / 10 or T <= MIN_T:
                    break
                T = max(MIN_T, T // 2)
            eo = R.rel_err(*res["o"])
            # The worst of the module's state tensors (W; W1, W2; A1, S1, ...).
            eS = max(state_error(tm.get("rule"), n, *pair)
                     for n, pair in res.items() if n != "o")
            within = max(eo, eS) < a.tol  # False for NaN too
            if within:
                status = "ok"
            else:
                status = "FAIL (error >= tolerance %.0e)" % a.tol
                failures.append("%s: error %.2e >= tolerance %.0e" % (stem, max(eo, eS), a.tol))
            fwd = "%.2f" % tm["wall_ms"] if tm["wall_ms"] is not None else "-"
            cond = "%.1e" % drift if drift is not None else "-"
            print("%-20s %5d %8d %9s %11.1f %10.2e %12.2e %9s  %s" % (
                stem, T, a.B * T * a.H, fwd, tm["proc_ms"], eo, eS, cond, status))
        except C.CheckError as e:
            print("%-20s %5s %8s %9s %11s %10s %12s %9s  FAIL" % (
                stem, "-", "-", "-", "-", "-", "-", "-"))
            failures.append("%s: %s" % (stem, e))
        sys.stdout.flush()
    print("-" * len(hdr))
    if failures:
        print("demo: %d of %d modules failed" % (len(failures), len(files)))
        for msg in failures:
            print("  " + msg, file=sys.stderr)
        return 1
    print("demo: all %d modules match the reference" % len(files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
