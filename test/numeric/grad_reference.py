#!/usr/bin/python3
"""The sequence-level gradient of a memory module by finite differences of the float64
reference (reference.py), independently of the compiler's derived rules.

For a module, inputs drawn as check_module.py draws them (gate values from the sample
interval `miras info` reports for each gate, states from the model's initialisation) and
fixed random adjoints `do` [B,T,H,Dv] and `dS_T` (one per final state), the scalar

    L = <do, o> + sum_s <dS_T[s], S_T[s]>

is a function of q, k, v, every gate and every initial state; `fd_adjoints` returns dL/dx
for each of them by central differences of the reference forward, Richardson-extrapolated
(h and h/2, truncation O(h^4)), one coordinate at a time (every coordinate, or a random
subset per tensor). The perturbed copies of the inputs are stacked along the batch axis,
which every reference is vectorised over, so one forward call evaluates all of them.

    grad_reference.py --mirasc mirasc --miras miras --module examples/deltanet.miras \
        --model deltanet -DD=4 --T 8 --H 2 [--chunk 3] [--out adjoints.npz]

prints the shape and max |.| of every adjoint (and writes them with --out). The library
side (`Problem`, `draw_adjoints`, `fd_adjoints`) is what check_seq_backward.py compares
the compiler's composed @step_backward with.
"""
import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_module as CM  # noqa: E402
import reference as R  # noqa: E402


class Problem:
    """A module read through `miras info` (compiled once by mirasc, with --chunk=C when
    given), its reference model and the reference forward that goes with it."""

    def __init__(self, mirasc, miras, module, model_spec, defines=(), chunk=None,
                 workdir=None):
        self.module = module
        self.defines = list(defines)
        extra = ["--chunk=%d" % chunk] if chunk else []
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            lib = CM.compile_module(mirasc, module, tmp, self.defines, extra)
            info = CM.module_info(miras, lib)
        defs = CM.parse_defines(self.defines)
        D = int(float(defs.get("D", 64)))
        self.meta = CM.parse_info(info, {"dk": D, "dv": D})
        self.model, mode = CM.resolve_model(model_spec, module, self.defines)
        # The params as check_module.prepare_and_run resolves them: the module's values
        # (after -D) win over the registry's defaults.
        self.params = dict(self.model.params)
        for n in self.params:
            if n in self.meta["params"]:
                self.params[n] = self.meta["params"][n]
            elif n in defs:
                self.params[n] = float(defs[n])
        self.rule = self.model.rule(self.params)
        rechunked = bool(chunk) and self.meta["chunk"] is not None
        if rechunked:
            self.rule.chunk = self.meta["chunk"]
        self.mlp = isinstance(self.model, R.MlpModel)
        if self.mlp:
            CM.check_mlp_meta(self.model, self.rule, self.meta)
            self.state_names = self.rule.state_names()
        else:
            CM.check_against_model(self.model, self.rule, self.meta)
            self.state_names = ["W"]
        self.steps = getattr(self.model, "steps", 1)
        # Which reference: the SPEC section 6 closed form where it is this module's exact
        # function of all its inputs (the module's own chunk; a tied key, HGRN2's
        # k = 1 - alpha, makes the closed form ignore k, so the generic composition
        # takes k as the independent input it is); the generic composition otherwise,
        # with the closed-form psi (the FD psi of an "fd" model would nest one finite
        # difference in another; a user-written bias's psi is the FD one anyway).
        if self.mlp:
            self.reference = "run_mlp"
        elif self.steps > 1:
            self.reference = "closed"          # multistep: the closed form only
        elif (mode == "closed" and self.model.name in R.CLOSED and not rechunked
              and not getattr(self.model, "key_from", None)):
            self.reference = "closed"
        else:
            self.reference = "generic"
        self.gate_names = [g[0] for g in self.meta["gates"]]
        # the tensors with a time axis (axis 1), in the order the adjoints are reported
        self.sequence_names = ["q", "k", "v"] + self.gate_names
        self.input_names = self.sequence_names + self.state_names

    @property
    def chunk(self):
        return self.rule.chunk

    def draw_inputs(self, B, T, H, seed):
        """check_module.py's inputs (float32 values), as float64."""
        meta = self.meta
        if self.mlp:
            inp = R.make_mlp_inputs(self.model, self.rule, B, T, H, meta["dk"],
                                    meta["gates"], meta["sampling"], seed=seed)
        else:
            states = meta["states"] or [("W", (meta["dv"], meta["dk"]))]
            inp = R.make_inputs(B, T, H, meta["dk"], meta["dv"], meta["gates"],
                                meta["sampling"], seed=seed, model=self.model, states=states)
        return {n: np.asarray(x, np.float64) for n, x in inp.items()}

    def forward(self, inp):
        """(o, {state: final state}) of one call of the reference."""
        if self.mlp:
            return R.run_mlp(self.rule, inp)
        if self.reference == "closed":
            o, W = R.CLOSED[self.model.name](inp, self.params)
        else:
            o, W = R.run_generic(self.rule, inp, "closed")
        return o, {"W": W}

    def forward_split(self, inp, split):
        """Two calls chained by the state: t < split, then t >= split starting from the
        first call's final states (SPEC section 8). Each call's chunks start at its own
        first token (SPEC section 7)."""
        first = {n: (x[:, :split] if n in self.sequence_names else x) for n, x in inp.items()}
        o1, s1 = self.forward(first)
        second = {n: (x[:, split:] if n in self.sequence_names else s1.get(n, x))
                  for n, x in inp.items()}
        o2, s2 = self.forward(second)
        return np.concatenate([o1, o2], axis=1), s2


def draw_adjoints(problem, inp, seed):
    """Random fixed adjoints: do like o, one dS_T like each final state."""
    rng = np.random.default_rng(seed + 7919)
    B, T, H = inp["q"].shape[:3]
    do = rng.standard_normal((B, T, H, problem.meta["dv"]))
    dS = {n: rng.standard_normal(inp[n].shape) for n in problem.state_names}
    return do, dS


def loss(o, states, do, dS, batch_axes=1):
    """L per copy: the sums run over every axis after the first `batch_axes - 1`."""
    def dot(a, b):
        p = a * b
        return p.reshape(p.shape[:batch_axes - 1] + (-1,)).sum(axis=-1)
    return dot(o, do) + sum(dot(states[n], dS[n]) for n in dS)


def fd_adjoints(forward, inp, names, do, dS, h=1e-4, coords=None, seed=0, max_batch=4096):
    """{name: (dL/dname, mask of the coordinates differentiated)} by central differences
    of `forward` (inputs -> (o, states)): a step h * RMS(tensor) and h/2, combined by
    Richardson's extrapolation, (4 D(h/2) - D(h)) / 3. coords: at most this many
    coordinates per tensor, drawn at random (every coordinate when None)."""
    rng = np.random.default_rng(seed + 104729)
    B = inp["q"].shape[0]
    jobs = []                      # (name, flat index, step)
    masks = {}
    for n in names:
        size = inp[n].size
        idx = np.arange(size) if coords is None or coords >= size else \
            np.sort(rng.choice(size, coords, replace=False))
        mask = np.zeros(size, bool)
        mask[idx] = True
        masks[n] = mask.reshape(inp[n].shape)
        scale = float(np.sqrt(np.mean(np.square(inp[n])))) or 1.0
        jobs += [(n, int(i), h * scale) for i in idx]
    # per job four copies: +h, -h, +h/2, -h/2
    signs = np.array([1.0, -1.0, 0.5, -0.5])
    values = np.empty((len(jobs), 4))
    per_call = max(1, max_batch // 4)
    for start in range(0, len(jobs), per_call):
        chunk = jobs[start:start + per_call]
        n_copies = 4 * len(chunk)
        batch = {n: np.repeat(x[None], n_copies, axis=0) for n, x in inp.items()}
        for j, (n, i, step) in enumerate(chunk):
            for s, sign in enumerate(signs):
                batch[n][4 * j + s].reshape(-1)[i] += sign * step
        # the copies side by side on the batch axis, which the references vectorise over
        flat = {n: x.reshape((n_copies * B,) + x.shape[2:]) for n, x in batch.items()}
        o, states = forward(flat)
        o = o.reshape((n_copies, B) + o.shape[1:])
        states = {n: x.reshape((n_copies, B) + x.shape[1:]) for n, x in states.items()}
        values[start:start + len(chunk)] = loss(o, states, do[None], {
            n: x[None] for n, x in dS.items()}, batch_axes=2).reshape(len(chunk), 4)
    out = {n: np.zeros(inp[n].shape) for n in names}
    for (n, i, step), (lp, lm, lp2, lm2) in zip(jobs, values):
        coarse = (lp - lm) / (2 * step)
        fine = (lp2 - lm2) / step
        out[n].reshape(-1)[i] = (4 * fine - coarse) / 3
    return {n: (out[n], masks[n]) for n in names}


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mirasc", default="mirasc")
    p.add_argument("--miras", default="miras")
    p.add_argument("--module", required=True)
    p.add_argument("--model", required=True,
                   help="a reference.MODELS name, or dsl (read the module)")
    p.add_argument("-D", "--define", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--B", type=int, default=1)
    p.add_argument("--T", type=int, default=8)
    p.add_argument("--H", type=int, default=2)
    p.add_argument("--chunk", type=int, help="compile with mirasc --chunk=C")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--h", type=float, default=1e-4,
                   help="finite-difference step, relative to each tensor's RMS")
    p.add_argument("--fd-coords", type=int,
                   help="differentiate at most this many random coordinates per tensor")
    p.add_argument("--out", help="write the inputs, adjoints do/dS_T and dL/dx (npz)")
    return p


def main(argv=None):
    a = build_parser().parse_args(argv)
    try:
        prob = Problem(a.mirasc, a.miras, a.module, a.model, a.define, a.chunk)
    except CM.CheckError as e:
        print("error: %s" % e, file=sys.stderr)
        return 1
    inp = prob.draw_inputs(a.B, a.T, a.H, a.seed)
    do, dS = draw_adjoints(prob, inp, a.seed)
    grads = fd_adjoints(prob.forward, inp, prob.input_names, do, dS, a.h, a.fd_coords, a.seed)
    print("reference %s of model '%s', chunk %d" % (prob.reference, prob.model.name, prob.chunk))
    for n in prob.input_names:
        g, mask = grads[n]
        print("d%s: shape %s, %d coordinates, max|d| = %.6g" % (
            n, list(g.shape), int(mask.sum()), float(np.max(np.abs(g)))))
    if a.out:
        np.savez(a.out, do=do, **{"dS_T_" + n: x for n, x in dS.items()},
                 **{"in_" + n: x for n, x in inp.items()},
                 **{"d" + n: g for n, (g, _) in grads.items()},
                 **{"mask_" + n: m for n, (_, m) in grads.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
