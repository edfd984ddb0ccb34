"""Checks the reverse step miras-derive-backward builds against central finite
differences of the step itself, both evaluated from the compiler's IR in float64 numpy
(ir_eval.py), independently of the lowering.

Input (stdin): `mirasc MODULE --emit=backward --mlir-print-op-generic`. At a random point
(states, anchors, q, k, v, gates drawn from each gate's declared range) and for random
adjoints dR of the step's results R (next states, o), the scalar L = sum <dR, R(x)> has
the directional derivative <d_i, u> along any direction u of argument i, where d_i is
the reverse step's result i; it is compared with central differences of L along a
random u per argument (as large as the argument, Richardson-extrapolated), at several
points. Prints one line per argument and
"step_backward: N adjoints OK" (or FAIL) at the end; exits 1 on a failure."""
import argparse
import re
import sys

import numpy as np

import ir_eval


def gate_ranges(text):
    """gate name -> (lo, hi) to draw from: the declared range, narrowed to its middle
    (away from the ends, where a decay of 1 or a rate of 0 hides terms), or
    [0.2, 0.8] for an undeclared or unbounded one."""
    ranges = {}
    for line in text.splitlines():
        if '"miras.gate"' not in line:
            continue
        name = re.search(r'sym_name = "(\w+)"', line).group(1)
        lo = re.search(r'range_lo = ([-\d.e+]+)', line)
        hi = re.search(r'range_hi = ([-\d.e+]+)', line)
        if lo and hi and np.isfinite(float(lo.group(1))) and np.isfinite(float(hi.group(1))):
            a, b = float(lo.group(1)), float(hi.group(1))
            ranges[name] = (a + 0.25 * (b - a), a + 0.75 * (b - a))
        else:
            ranges[name] = (0.2, 0.8)
    return ranges


def draw(rng, name, shape, ranges):
    if name in ranges:
        lo, hi = ranges[name]
        return rng.uniform(lo, hi, shape) if shape else float(rng.uniform(lo, hi))
    if name in ('q', 'k', 'v'):
        x = rng.standard_normal(shape)
        # Unit keys and queries, as the models normalise them (rows for multistep).
        if name != 'v':
            x = x / np.linalg.norm(x, axis=-1, keepdims=True)
        return x
    # States: positive entries with rows summing to about 1 (a point of the simplex
    # for f_div, away from sign and abs kinks at 0 for the others).
    x = rng.uniform(0.2, 1.0, shape)
    return x / (x.sum(axis=-1, keepdims=True) if len(shape) > 1 else x.sum())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--points', type=int, default=3)
    # The IR's constants are f32 (a product folded by the compiler is rounded once,
    # its unfolded factors are not), so the two sides differ by f32 roundings that
    # cancellation can amplify to ~1e-6; a wrong rule is off by O(1).
    parser.add_argument('--tol', type=float, default=1e-5)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--h', type=float, default=1e-4,
                        help='finite-difference step, relative to each argument')
    args = parser.parse_args()
    text = sys.stdin.read()
    step_args, step_types, step_names, step = ir_eval.function(text, 'step')
    back_args, _, _, back = ir_eval.function(text, 'step_backward')
    ranges = gate_ranges(text)
    n = len(step_args)
    shapes = [ir_eval.shape_of(t) for t in step_types]
    rng = np.random.default_rng(args.seed)
    worst = [0.0] * n
    for _ in range(args.points):
        x = [draw(rng, name, shp, ranges) for name, shp in zip(step_names, shapes)]
        env = dict(zip(step_args, x))
        results = ir_eval.run(step, env)
        seeds = [rng.standard_normal(np.shape(r)) if np.ndim(r) else float(rng.standard_normal())
                 for r in results]
        adjoints = ir_eval.run(back, dict(zip(back_args, x + seeds + ir_eval.taped(step, env))))

        def loss(point):
            out = ir_eval.run(step, dict(zip(step_args, point)))
            return sum(float(np.sum(s * r)) for s, r in zip(seeds, out))

        def central(i, u, h):
            plus = [xi + h * u if j == i else xi for j, xi in enumerate(x)]
            minus = [xi - h * u if j == i else xi for j, xi in enumerate(x)]
            return (loss(plus) - loss(minus)) / (2 * h)

        for i in range(n):
            # A direction as large as the argument (a rate of 1e-3 moves by 1e-3 *
            # h), and Richardson's extrapolation of two central differences: the
            # truncation error is O(h^4), so curvature (lp's tanh, lq's norms) does
            # not read as a wrong rule.
            scale = float(np.sqrt(np.mean(np.square(x[i])))) or 1.0
            u = scale * (rng.standard_normal(shapes[i]) if shapes[i]
                         else float(rng.standard_normal()))
            fd = (4 * central(i, u, args.h / 2) - central(i, u, args.h)) / 3
            an = float(np.sum(adjoints[i] * u))
            err = abs(fd - an) / max(abs(fd), abs(an), 1e-8)
            worst[i] = max(worst[i], err)
    failed = 0
    for name, err in zip(step_names, worst):
        ok = err < args.tol
        failed += not ok
        print('d%s: max_rel_err=%.2e %s' % (name, err, 'OK' if ok else 'FAIL'))
    print('step_backward: %d adjoints %s' % (n, 'OK' if not failed else 'FAIL (%d)' % failed))
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
