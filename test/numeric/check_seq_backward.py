#!/usr/bin/python3
"""The compiler's reverse step composed over a whole sequence, against finite
differences of the independent float64 reference (grad_reference.py).

    check_seq_backward.py --mirasc mirasc --miras miras --module FILE.miras --model NAME \
        -DD=4 [--chunk C] [--T 8 --H 2] [--seed N] [--tol 1e-5] [--negative-control]

From `mirasc FILE --emit=backward --mlir-print-op-generic`, evaluated in float64 by
ir_eval.py for every (batch, head) pair:
- forward: @step over t = 0..T-1, keeping each token's arguments; with chunk C > 1 the
  anchor arguments of token t are the state at the start of t's chunk (t0 = C floor(t/C),
  SPEC section 7).
- reverse: t = T-1..0, @step_backward(args_t, dS_{t+1}, do_t) gives the adjoint of every
  argument of token t. The running state adjoint dS_t is its state results. An anchor is
  the state S_{t0} passed a second time, so the anchor adjoints of the tokens of a chunk
  are summed and added to dS_{t0} when the sweep reaches t0 (after t0's own step, whose
  state argument is S_{t0} too). dS_0 is the adjoint of the initial state.
The adjoints of q, k, v, the gates and the initial states are compared with the FD
adjoints of L = <do, o> + sum_s <dS_T, S_T> (relative error: max |difference| over
entries / max |FD|), after checking that the IR's forward matches the reference forward.

Split sequences: the same inputs as two calls chained by the state, the reverse sweep of
the second call first, its initial-state adjoint passed to the first call as the
final-state adjoint. At a chunk boundary (every split when C = 1) the two calls are the
single call's function, and their adjoints must equal the single call's. Inside a chunk
(C > 1) they are not: each call's chunks start at its own first token (SPEC section 7),
so the second call's first tokens take their gradient at the split state, not at the
single call's anchor; there the chained adjoints are compared with FD of the reference
run as the same two calls (and the script reports how far they are from the single call's,
to show the split is not trivial).

--negative-control also sweeps with a corrupted @step_backward (the first value it computes
from the incoming adjoints negated) and fails unless that is detected at the same
tolerance.

Prints `d<name>: max_rel_err=<e> OK|FAIL` per tensor and `seq_backward: N adjoints OK`
(or FAIL); exits 1 on a failure.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_module as CM  # noqa: E402
import grad_reference as GR  # noqa: E402
import ir_eval  # noqa: E402
import reference as R  # noqa: E402

ANCHOR_SUFFIX = "_anchor"


class StepIR:
    """@step and @step_backward of one module, with their argument roles."""

    def __init__(self, text):
        self.args, _, self.names, self.step = ir_eval.function(text, "step")
        self.back_args, _, back_names, self.back = ir_eval.function(text, "step_backward")
        anchors = [n for n in self.names if n.endswith(ANCHOR_SUFFIX)]
        first_anchor = self.names.index(anchors[0]) if anchors else None
        first_input = self.names.index("q")
        # @step takes states, [their anchors], q, k, v, gates, in that order
        self.states = self.names[:first_anchor if anchors else first_input]
        self.anchors = [n[:-len(ANCHOR_SUFFIX)] for n in anchors]
        self.inputs = self.names[first_input:]
        unknown = [s for s in self.anchors if s not in self.states]
        if unknown:
            raise SystemExit("check_seq_backward: anchors of no state: %s" % unknown)
        want = self.names + ["d%s_next" % s for s in self.states] + ["do"]
        if back_names[:len(want)] != want:
            raise SystemExit("check_seq_backward: @step_backward takes %s, expected %s" % (
                back_names, want))

    def corrupted(self):
        """A copy whose @step_backward negates the first value it computes from the
        incoming adjoints (dX_next, do): a sign error in the chain rule, which no
        invariance of the forward can hide (unlike, say, a flipped softmax shift)."""
        seeds = set(self.back_args[len(self.args):])
        lines = list(self.back)
        for i, line in enumerate(lines):
            m = ir_eval.OP.match(line)
            if not m or not m.group(1) or m.group(2) in ("func.return", "miras.yield"):
                continue
            if seeds & {x.strip() for x in m.group(3).split(",")}:
                res, rtype = m.group(1), m.group(6).strip()
                lines[i] = line.replace(res + " = ", res + "_unnegated = ", 1)
                lines.insert(i + 1, '%s = "arith.negf"(%s_unnegated) : (%s) -> %s' % (
                    res, res, rtype, rtype))
                break
        else:
            raise SystemExit("check_seq_backward: @step_backward does not read its adjoints")
        other = object.__new__(StepIR)
        other.__dict__.update(self.__dict__)
        other.back = lines
        return other


def _token(x, t):
    """token t of one (b, h) pair's sequence tensor: a float for a scalar gate"""
    v = x[t]
    return float(v) if np.ndim(v) == 0 else np.array(v)


def forward_pair(ir, chunk, states0, seq):
    """@step over one (b, h) pair's call. states0 {state: array}; seq {input: [T, ...]}.
    Returns (each token's step arguments and taped products, o [T, Dv], final
    states)."""
    T = seq["q"].shape[0]
    S = dict(states0)
    saved, o = [], []
    anchor = None
    for t in range(T):
        if t % chunk == 0:
            anchor = S
        x = ([S[n] for n in ir.states] + [anchor[n] for n in ir.anchors] +
             [_token(seq[n], t) for n in ir.inputs])
        env = dict(zip(ir.args, x))
        res = ir_eval.run(ir.step, env)
        saved.append((x, ir_eval.taped(ir.step, env)))
        S = dict(zip(ir.states, res[:len(ir.states)]))
        o.append(res[len(ir.states)])
    return saved, np.array(o), S


def backward_pair(ir, chunk, saved, dS_final, do):
    """The reverse sweep of one call: saved from forward_pair, dS_final {state: adjoint
    of the final state}, do [T, Dv]. Returns ({input: [T, ...] adjoints}, {state:
    adjoint of the initial state})."""
    T = len(saved)
    dS = dict(dS_final)
    d_anchor = {n: 0.0 for n in ir.anchors}
    d_seq = {n: [None] * T for n in ir.inputs}
    ns, na = len(ir.states), len(ir.anchors)
    for t in range(T - 1, -1, -1):
        x, taped = saved[t]
        env = dict(zip(ir.back_args, x + [dS[n] for n in ir.states] + [do[t]] + taped))
        adj = ir_eval.run(ir.back, env)
        dS = dict(zip(ir.states, adj[:ns]))
        for n, d in zip(ir.anchors, adj[ns:ns + na]):
            d_anchor[n] = d_anchor[n] + d
        for n, d in zip(ir.inputs, adj[ns + na:]):
            d_seq[n][t] = d
        if t % chunk == 0:   # S_t is this chunk's anchor: its adjoints join S_t's
            for n in ir.anchors:
                dS[n] = dS[n] + d_anchor[n]
                d_anchor[n] = 0.0
    return {n: np.array(v) for n, v in d_seq.items()}, dS


def composed(ir, chunk, inp, do, dS_T, split=None):
    """The compiler's forward and reverse sweep over [B, H]; with split, as two calls
    chained by the state. Returns (o, final states, {input name: adjoint})."""
    B, T, H = inp["q"].shape[:3]
    o = np.zeros(do.shape)
    final = {n: np.zeros(inp[n].shape) for n in ir.states}
    grads = {n: np.zeros(inp[n].shape) for n in ir.inputs + ir.states}
    calls = [(0, T)] if split is None else [(0, split), (split, T)]
    for b in range(B):
        for h in range(H):
            S = {n: inp[n][b, h] for n in ir.states}
            tapes = []
            for t0, t1 in calls:       # each call starts from the previous one's states
                saved, o[b, t0:t1, h], S = forward_pair(
                    ir, chunk, S, {n: inp[n][b, t0:t1, h] for n in ir.inputs})
                tapes.append(saved)
            for n in ir.states:
                final[n][b, h] = S[n]
            # the last call first; its initial-state adjoint is the previous call's dS_T
            dS = {n: dS_T[n][b, h] for n in ir.states}
            for (t0, t1), saved in reversed(list(zip(calls, tapes))):
                d_seq, dS = backward_pair(ir, chunk, saved, dS, do[b, t0:t1, h])
                for n in ir.inputs:
                    grads[n][b, t0:t1, h] = d_seq[n]
            for n in ir.states:
                grads[n][b, h] = dS[n]
    return o, final, grads


def masked_rel_err(x, ref, mask):
    """max |x - ref| / max |ref| over the differentiated coordinates"""
    return R.rel_err(np.asarray(x)[mask], np.asarray(ref)[mask])


def report(label, err, tol):
    ok = err < tol
    print("%s: max_rel_err=%.2e %s" % (label, err, "OK" if ok else "FAIL"))
    return 0 if ok else 1


def check_kernel(a, text, prob, inp, do, dS_T, fd, split):
    """The compiled backward kernel (mirasc --backward, float32) on the same inputs: its
    adjoints against the finite differences of the reference, and two kernel calls
    chained by the state (split at a chunk boundary, the state's adjoint passed back)
    against the single call. Returns the number of failed checks."""
    import check_backward_kernel as BK
    header = next(l for l in text.splitlines() if '"miras.module"' in l)
    name = header.split('sym_name = "')[1].split('"')[0]
    chunk = prob.chunk
    # Segments shorter than T and, with chunk 1, not dividing it.
    segment = a.segment or (2 * chunk if chunk > 1 else 3)
    extra = ["--chunk=%d" % a.chunk] if a.chunk else []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "lib%s.so" % name)
        cmd = [a.mirasc, a.module] + ["-D%s" % d for d in a.define] + extra + [
            "--backward", "--backward-segment=%d" % segment, "-o", path]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            print("kernel: %s failed: %s FAIL" % (" ".join(cmd), proc.stderr.strip()))
            return 1
        lib = BK.Library(path, name)
        f32 = lambda x: np.ascontiguousarray(x, dtype=np.float32)  # noqa: E731
        seq = [f32(inp[n]) for n in prob.sequence_names]
        states = [f32(inp[n]) for n in prob.state_names]
        d_o = f32(do)
        d_final = [f32(dS_T[n]) for n in prob.state_names]
        B, T, H = seq[0].shape[:3]
        d_seq, d_states = lib.backward(B, T, H, seq, states, d_o, d_final)
        got = dict(zip(prob.sequence_names, d_seq))
        got.update(zip(prob.state_names, d_states))
        failed = 0
        for n in prob.input_names:
            g, mask = fd[n]
            failed += report("kernel (S=%d) d%s vs FD of the reference" % (segment, n),
                             masked_rel_err(got[n], g, mask), a.kernel_tol)
        if split is None:
            return failed
        # Forward over the first part for the state in between, then the second part's
        # backward from the final adjoints, then the first part's from the adjoint of
        # the state in between.
        first = [f32(x[:, :split]) for x in seq]
        second = [f32(x[:, split:]) for x in seq]
        dv = d_o.shape[-1]
        _, middle = lib.forward(B, split, H, dv, first, states)
        d2, d_middle = lib.backward(B, T - split, H, second, [f32(m) for m in middle],
                                    f32(d_o[:, split:]), d_final)
        d1, d0 = lib.backward(B, split, H, first, states, f32(d_o[:, :split]),
                              [f32(m) for m in d_middle])
        chained = {n: np.concatenate([x, y], axis=1)
                   for n, x, y in zip(prob.sequence_names, d1, d2)}
        chained.update(zip(prob.state_names, d0))
        err = max(R.rel_err(chained[n], got[n]) for n in prob.input_names)
        failed += report("kernel: split at t=%d: chained calls (state adjoint passed back) "
                         "vs single call" % split, err, 1e-5)
        return failed


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mirasc", default="mirasc")
    p.add_argument("--miras", default="miras")
    p.add_argument("--module", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("-D", "--define", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--chunk", type=int, help="mirasc --chunk=C")
    p.add_argument("--B", type=int, default=1)
    p.add_argument("--T", type=int, default=8)
    p.add_argument("--H", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    # Both sides are float64, but the IR's constants are printed f32 values (GELU's
    # sqrt(2/pi), LayerNorm's eps, a gate range folded into a constant): ~1e-7 relative;
    # the FD truncation after extrapolation is O(h^4). A wrong rule is off by O(1e-2..1).
    p.add_argument("--tol", type=float, default=1e-5)
    p.add_argument("--h", type=float, default=1e-4,
                   help="finite-difference step, relative to each tensor's RMS")
    p.add_argument("--fd-coords", type=int,
                   help="FD on at most this many random coordinates per tensor")
    p.add_argument("--negative-control", action="store_true",
                   help="also require that a corrupted @step_backward fails")
    p.add_argument("--ir", help="read the --emit=backward IR from this file instead of "
                   "running mirasc (e.g. a hand-edited one)")
    p.add_argument("--kernel", action="store_true",
                   help="also the compiled backward kernel (mirasc --backward) against the "
                   "same finite differences, and split into two chained kernel calls")
    p.add_argument("--segment", type=int, help="the kernel's --backward-segment (default: "
                   "3 with chunk 1, else 2 chunks)")
    p.add_argument("--kernel-tol", type=float, default=1e-3,
                   help="the float32 kernel against the float64 finite differences")
    a = p.parse_args(argv)
    if a.ir:
        with open(a.ir) as f:
            text = f.read()
    else:
        extra = ["--chunk=%d" % a.chunk] if a.chunk else []
        cmd = [a.mirasc, a.module] + ["-D%s" % d for d in a.define] + extra + [
            "--emit=backward", "--mlir-print-op-generic"]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            print("error: %s failed:\n%s" % (" ".join(cmd), proc.stderr), file=sys.stderr)
            return 1
        text = proc.stdout
    ir = StepIR(text)
    try:
        prob = GR.Problem(a.mirasc, a.miras, a.module, a.model, a.define, a.chunk)
    except CM.CheckError as e:
        print("error: %s" % e, file=sys.stderr)
        return 1
    chunk = prob.chunk
    if ir.states != prob.state_names or set(ir.inputs) != set(prob.sequence_names):
        print("error: @step takes states %s and inputs %s; the reference has %s and %s" % (
            ir.states, ir.inputs, prob.state_names, prob.sequence_names), file=sys.stderr)
        return 1
    if (chunk > 1) != bool(ir.anchors):
        print("error: chunk %d but @step has anchors %s" % (chunk, ir.anchors), file=sys.stderr)
        return 1
    inp = prob.draw_inputs(a.B, a.T, a.H, a.seed)
    do, dS_T = GR.draw_adjoints(prob, inp, a.seed)
    names = prob.input_names
    print("model '%s' (reference %s), chunk %d, B=%d T=%d H=%d, anchors %s" % (
        prob.model.name, prob.reference, chunk, a.B, a.T, a.H, ir.anchors or "none"))

    failed = 0
    # 1. the two forwards are the same function (else the adjoints cannot agree)
    o, final, grads = composed(ir, chunk, inp, do, dS_T)
    ref_o, ref_states = prob.forward(inp)
    failed += report("forward o", R.rel_err(o, ref_o), a.tol)
    for n in prob.state_names:
        failed += report("forward %s_T" % n, R.rel_err(final[n], ref_states[n]), a.tol)
    # 2. the composed reverse sweep vs finite differences of the reference
    fd = GR.fd_adjoints(prob.forward, inp, names, do, dS_T, a.h, a.fd_coords, a.seed)
    for n in names:
        g, mask = fd[n]
        failed += report("d%s" % n, masked_rel_err(grads[n], g, mask), a.tol)
    # 3. split sequences
    T = a.T
    boundary = (T // 2) // chunk * chunk or chunk
    splits = [(boundary, "at a chunk boundary")] if 0 < boundary < T else []
    if chunk > 1:
        inside = boundary + chunk // 2 if boundary + chunk // 2 < T else boundary - chunk // 2
        if 0 < inside < T and inside % chunk:
            splits.append((inside, "inside a chunk"))
    for split, where in splits:
        o2, final2, grads2 = composed(ir, chunk, inp, do, dS_T, split)
        if split % chunk == 0:
            err = max([R.rel_err(grads2[n], grads[n]) for n in names] + [R.rel_err(o2, o)] +
                      [R.rel_err(final2[n], final[n]) for n in final])
            failed += report("split at t=%d (%s): chained calls vs single call" % (
                split, where), err, a.tol)
        else:
            fd2 = GR.fd_adjoints(lambda x: prob.forward_split(x, split), inp, names, do,
                                 dS_T, a.h, a.fd_coords, a.seed)
            ref_o2, ref_final2 = prob.forward_split(inp, split)
            err = max([masked_rel_err(grads2[n], fd2[n][0], fd2[n][1]) for n in names] +
                      [R.rel_err(o2, ref_o2)] +
                      [R.rel_err(final2[n], ref_final2[n]) for n in final2])
            failed += report("split at t=%d (%s): chained calls vs FD of the reference "
                             "as the same two calls" % (split, where), err, a.tol)
            apart = max(R.rel_err(grads2[n], grads[n]) for n in names)
            print("split at t=%d (%s): chained calls vs single call differ by "
                  "max_rel_err=%.2e (a new chunk starts at the split)" % (split, where, apart))
    # 4. the compiled kernel
    if a.kernel:
        failed += check_kernel(a, text, prob, inp, do, dS_T, fd,
                               boundary if 0 < boundary < T else None)
    # 5. negative control: a wrong rule must not pass the same comparison
    if a.negative_control:
        _, _, wrong = composed(ir.corrupted(), chunk, inp, do, dS_T)
        err = max(masked_rel_err(wrong[n], fd[n][0], fd[n][1]) for n in names)
        detected = err >= a.tol
        print("negative control (@step_backward's first value from the adjoints negated): "
              "max_rel_err=%.2e %s" % (err, "detected" if detected else "NOT DETECTED"))
        failed += not detected
    print("seq_backward: %d adjoints %s" % (len(names), "OK" if not failed else
                                            "FAIL (%d)" % failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
