#!/usr/bin/python3
"""Compile a .miras module, run it on random data and compare with the numpy reference.

    check_module.py --mirasc mirasc --miras miras --module FILE.miras --model NAME \
        [-DNAME=VALUE ...] [--B 2 --T 48 --H 3] [--seed N] --workdir DIR [--tol 1e-5]
    check_module.py --self-test          # reference vs reference, no compiler needed
    check_module.py --list-models

--model NAME picks the rule from reference.MODELS; "fd:NAME" forces the finite-difference
error signal (the loss differentiated numerically), "closed:NAME" / "generic:NAME" force the
other references. Gates, dims, chunk, read mode and states are read from `miras info`
(and cross-checked against the model). Prints one line per tensor,
    o: max_rel_err=1.2e-07 OK
and exits 1 on any mismatch. Use Debian's /usr/bin/python3 (numpy + stdlib only).
"""

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as R  # noqa: E402


class CheckError(Exception):
    pass


# --------------------------------------------------------------------------------------
# tools


def _run(cmd, what):
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except OSError as e:
        raise CheckError("%s: cannot execute %s: %s" % (what, cmd[0], e))
    if p.returncode != 0:
        raise CheckError("%s failed (exit %d): %s\n--- stdout\n%s--- stderr\n%s" % (
            what, p.returncode, " ".join(shlex.quote(c) for c in cmd), p.stdout, p.stderr))
    return p


def module_name(path):
    with open(path) as f:
        src = f.read()
    src = re.sub(r"/\*.*?\*/", " ", src, flags=re.S)
    src = re.sub(r"//[^\n]*", " ", src)
    m = re.search(r"\bmodule\s+([A-Za-z_][A-Za-z0-9_]*)", src)
    if not m:
        raise CheckError("%s: no 'module NAME' found" % path)
    return m.group(1)


def compile_module(mirasc, module, outdir, defines):
    name = module_name(module)
    os.makedirs(outdir, exist_ok=True)
    lib = os.path.join(outdir, "lib%s.so" % name)
    if os.path.exists(lib):
        os.remove(lib)
    cmd = [mirasc, module, "-o", lib] + ["-D%s" % d for d in defines]
    _run(cmd, "mirasc")
    if not os.path.exists(lib):
        raise CheckError("mirasc exited 0 but %s was not written" % lib)
    return lib


def module_info(miras, lib):
    p = _run([miras, "info", lib], "miras info")
    out = p.stdout
    i, j = out.find("{"), out.rfind("}")
    if i < 0 or j < i:
        raise CheckError("miras info printed no JSON object:\n%s" % out)
    try:
        return json.loads(out[i:j + 1])
    except ValueError as e:
        raise CheckError("miras info printed invalid JSON (%s):\n%s" % (e, out))


_TIME_RE = re.compile(r"([0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)\s*(ms|us|µs|s)\b")


def parse_wall_ms(text):
    """The time `miras run` reports, in ms (None when it prints none we recognise)."""
    for line in text.splitlines():
        low = line.lower()
        # `miras run` prints "<name>: B=.. T=.. H=.. forward 1.234 ms, wrote ..."
        keys = [low.find(w) for w in ("forward", "time", "wall", "elapsed") if w in low]
        if not keys:
            continue
        m = _TIME_RE.search(line, min(keys))
        if m:
            val, unit = float(m.group(1)), m.group(2)
            return val * {"ms": 1.0, "us": 1e-3, "µs": 1e-3, "s": 1e3}[unit]
    return None


def run_module(miras, lib, indir, outdir):
    os.makedirs(outdir, exist_ok=True)
    for f in os.listdir(outdir):
        if f.endswith(".npy"):
            os.remove(os.path.join(outdir, f))
    t0 = time.perf_counter()
    p = _run([miras, "run", lib, "--inputs", indir, "--outputs", outdir], "miras run")
    proc_ms = (time.perf_counter() - t0) * 1e3
    return p.stdout + p.stderr, proc_ms


def load_out(outdir, name, shape):
    path = os.path.join(outdir, name + ".npy")
    if not os.path.exists(path):
        raise CheckError("miras run did not write %s" % path)
    x = np.load(path)
    if tuple(x.shape) != tuple(shape):
        raise CheckError("%s.npy has shape %s, expected %s" % (name, x.shape, tuple(shape)))
    if not np.all(np.isfinite(x)):
        raise CheckError("%s.npy contains non-finite values" % name)
    return x


# --------------------------------------------------------------------------------------
# metadata


def _axis(a):
    if a is None:
        return None
    a = str(a).lower()
    return {"dk": "dk", "key": "dk", "k": "dk", "1": "dk", "dv": "dv", "value": "dv",
            "v": "dv", "2": "dv", "none": None, "0": None, "null": None}.get(a, a)


def _kind(k):
    k = str(k).lower()
    return {"0": "scalar", "1": "channel"}.get(k, k)


def parse_info(info, defaults):
    """-> dict(dk, dv, chunk, read, gates [(name, kind, axis, dim)], states, params)"""
    dk = int(info.get("dk", defaults["dk"]))
    dv = int(info.get("dv", defaults["dv"]))
    gates = []
    for g in info.get("gates", []):
        kind = _kind(g.get("kind", "scalar"))
        axis = _axis(g.get("axis"))
        dim = g.get("dim")
        if kind == "channel" and not dim:
            dim = dk if axis == "dk" else dv
        gates.append((g["name"], kind, axis if kind == "channel" else None,
                      int(dim) if dim else 1))
    states = [(s["name"], tuple(int(x) for x in s["shape"])) for s in info.get("states", [])]
    params = {}
    ps = info.get("params", {})
    if isinstance(ps, dict):
        params = {k: float(v) for k, v in ps.items() if isinstance(v, (int, float))}
    elif isinstance(ps, list):
        for p in ps:
            if isinstance(p, dict) and "name" in p and isinstance(p.get("value"), (int, float)):
                params[p["name"]] = float(p["value"])
    read = info.get("read", info.get("read_after_write"))
    if isinstance(read, bool) or isinstance(read, int):
        read = "after_write" if read else "before_write"
    chunk = info.get("chunk")
    return dict(dk=dk, dv=dv, chunk=None if chunk is None else int(chunk), read=read,
                gates=gates, states=states, params=params)


def check_against_model(model, rule, meta):
    errs = []
    want = dict(model.gates)
    got = {g[0]: (g[1], g[2]) for g in meta["gates"]}
    if set(want) != set(got):
        errs.append("gates: module has %s, model '%s' expects %s" % (
            sorted(got), model.name, sorted(want)))
    else:
        for n, (kind, axis) in want.items():
            if got[n] != (kind, axis):
                errs.append("gate %s: module says %s%s, model expects %s%s" % (
                    n, got[n][0], "(%s)" % got[n][1] if got[n][1] else "",
                    kind, "(%s)" % axis if axis else ""))
    if meta["chunk"] is not None and meta["chunk"] != rule.chunk:
        errs.append("chunk: module says %d, model expects %d" % (meta["chunk"], rule.chunk))
    if meta["read"] is not None and str(meta["read"]) != rule.read:
        errs.append("read: module says %s, model expects %s" % (meta["read"], rule.read))
    names = [s[0] for s in meta["states"]]
    if names and names != ["W"]:
        errs.append("states: module has %s, a linear memory carries exactly ['W']" % names)
    for n, shape in meta["states"]:
        if n == "W" and tuple(shape) != (meta["dv"], meta["dk"]):
            errs.append("state W has shape %s, expected [Dv, Dk] = %s" % (
                list(shape), [meta["dv"], meta["dk"]]))
    if errs:
        raise CheckError("module metadata does not match model '%s':\n  %s" % (
            model.name, "\n  ".join(errs)))


def resolve_model(spec):
    mode = None
    if ":" in spec:
        mode, spec = spec.split(":", 1)
        if mode not in ("fd", "closed", "generic"):
            raise CheckError("unknown reference mode '%s' (fd, closed, generic)" % mode)
    if spec not in R.MODELS:
        raise CheckError("unknown model '%s'; known: %s" % (spec, ", ".join(sorted(R.MODELS))))
    m = R.MODELS[spec]
    if mode == "fd" and not m.fd:
        raise CheckError("model '%s' has no loss to differentiate numerically" % spec)
    if mode == "closed" and spec not in R.CLOSED:
        raise CheckError("model '%s' has no closed form" % spec)
    return m, mode or m.primary


def parse_defines(defs):
    out = {}
    for d in defs or []:
        if "=" not in d:
            raise CheckError("bad define '%s' (want NAME=VALUE)" % d)
        n, v = d.split("=", 1)
        out[n.strip()] = v.strip()
    return out


# --------------------------------------------------------------------------------------
# one check


def prepare_and_run(args_mirasc, args_miras, module, model, mode, defines, B, T, H, seed,
                    workdir, libdir=None):
    """Compile, run, compute the reference. Returns (results dict, timing info)."""
    defs = parse_defines(defines)
    lib = compile_module(args_mirasc, module, libdir or os.path.join(workdir, "lib"), defines)
    info = module_info(args_miras, lib)
    D = int(float(defs.get("D", 64)))
    meta = parse_info(info, {"dk": D, "dv": D})
    params = dict(model.params)
    for n in params:
        if n in meta["params"]:
            params[n] = meta["params"][n]
        elif n in defs:
            params[n] = float(defs[n])
    for n, val in defs.items():            # -D and the module must agree
        if n in meta["params"] and abs(meta["params"][n] - float(val)) > 1e-12 * max(1, abs(float(val))):
            raise CheckError("param %s: compiled with %s but -D%s=%s" % (
                n, meta["params"][n], n, val))
    rule = model.rule(params)
    check_against_model(model, rule, meta)
    dk, dv = meta["dk"], meta["dv"]
    states = meta["states"] or [("W", (dv, dk))]
    inp = R.make_inputs(B, T, H, dk, dv, meta["gates"], seed=seed, model=model, states=states)
    indir = os.path.join(workdir, "in")
    os.makedirs(indir, exist_ok=True)
    for f in os.listdir(indir):
        if f.endswith(".npy"):
            os.remove(os.path.join(indir, f))
    for n, x in inp.items():
        np.save(os.path.join(indir, n + ".npy"), np.ascontiguousarray(x, dtype=np.float32))
    outdir = os.path.join(workdir, "out")
    log, proc_ms = run_module(args_miras, lib, indir, outdir)
    o = load_out(outdir, "o", (B, T, H, dv))
    W = load_out(outdir, "W", (B, H, dv, dk))
    ref_o, ref_W = model.reference(inp, params, mode)
    return {"o": (o, ref_o), "W": (W, ref_W)}, {"proc_ms": proc_ms,
                                                "wall_ms": parse_wall_ms(log)}


def main_check(a):
    model, mode = resolve_model(a.model)
    os.makedirs(a.workdir, exist_ok=True)
    res, _ = prepare_and_run(a.mirasc, a.miras, a.module, model, mode, a.define, a.B, a.T,
                             a.H, a.seed, a.workdir)
    bad = []
    for name in ("o", "W"):
        x, ref = res[name]
        err = R.rel_err(x, ref)
        ok = err < a.tol
        print("%s: max_rel_err=%.3e %s" % (name, err, "OK" if ok else "FAIL"))
        if not ok:
            idx = np.unravel_index(np.argmax(np.abs(np.asarray(x, np.float64) - ref)), ref.shape)
            bad.append("%s differs from the %s reference of model '%s': max_rel_err %.3e >= "
                       "tol %.1e (worst at index %s: got %.7g, expected %.7g)" % (
                           name, mode, model.name, err, a.tol, tuple(int(i) for i in idx),
                           float(x[idx]), float(ref[idx])))
    if bad:
        for b in bad:
            print("error: " + b, file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------------------
# self-test: the references against each other, no compiler involved

# sizes of the lit tests (test/lit/Numeric), per model: (B, T, H, D)
LIT_SIZES = {"chunked_decoupled": [(2, 50, 3, 16)], "gla": [(2, 32, 3, 32)],
             "longhorn": [(2, 32, 3, 32)],
             "gated_deltanet": [(2, 48, 3, 16), (2, 32, 2, 64)]}
LIT_DEFAULT_SIZE = [(2, 48, 3, 16)]


def _model_inputs(model, B, T, H, D, seed):
    gates = []
    for n, (kind, axis) in model.gates.items():
        gates.append((n, kind, axis, D if kind == "channel" else 1))
    return R.make_inputs(B, T, H, D, D, gates, seed=seed, model=model)


def self_test(tol_exact=1e-9, tol_fp32=2e-6):
    fails = []

    def report(label, err, tol):
        ok = err < tol
        print("  %-58s %.2e %s" % (label, err, "ok" if ok else "FAIL (tol %.0e)" % tol))
        if not ok:
            fails.append(label)

    print("[1] SPEC section 6 closed forms vs generic psi/retention/optimizer composition")
    for name, m in sorted(R.MODELS.items()):
        if name not in R.CLOSED:
            continue
        P = dict(m.params)
        for (B, T, H, D, seed) in ((2, 21, 2, 8, 1), (1, 37, 3, 16, 2)):
            inp = _model_inputs(m, B, T, H, D, seed)
            co, cW = R.CLOSED[name](inp, P)
            go, gW = R.run_generic(m.rule(P), inp, "closed")
            report("%s closed vs generic (T=%d D=%d) o" % (name, T, D), R.rel_err(go, co), tol_exact)
            report("%s closed vs generic (T=%d D=%d) W" % (name, T, D), R.rel_err(gW, cW), tol_exact)

    print("[2] parallel (attention) forms of the dot-bias models vs closed forms")
    for name in ("linear_attention", "retnet", "mamba2"):
        m = R.MODELS[name]
        inp = _model_inputs(m, 2, 40, 2, 8, 3)
        alpha = {"linear_attention": None, "retnet": m.params.get("gamma"),
                 "mamba2": inp.get("alpha")}[name]
        if name == "retnet":
            alpha = np.full(inp["q"].shape[:3], alpha)
        po, pW = R.parallel_decay_attention(inp, None if alpha is None else
                                            np.asarray(alpha, np.float64))
        co, cW = R.CLOSED[name](inp, m.params)
        report("%s parallel vs closed o" % name, R.rel_err(po, co), tol_exact)
        report("%s parallel vs closed W" % name, R.rel_err(pW, cW), tol_exact)

    print("[3] finite-difference psi (loss differentiated numerically) vs closed-form psi")
    rng = np.random.default_rng(7)
    y = rng.standard_normal((3, 4, 16)) * 1.5
    v = rng.standard_normal((3, 4, 16))
    dgate = rng.uniform(0.2, 1.0, size=(3, 4, 1))
    cases = [("dot", {}), ("l2", {}), ("lp", {"p": 3.0}), ("lp", {"p": 4.0}),
             ("huber", {"delta": dgate}), ("huber", {"delta": 0.7}),
             ("huber_norm", {"delta": 3.0}), ("huber_norm", {"delta": dgate * 6}),
             ("value_shift", {"delta": dgate}), ("logcosh", {}),
             ("pseudo_huber", {"c": 0.25})]
    for bias, g in cases:
        fd = R.fd_psi(R.LOSSES[bias], y, v, g)
        cf = R.PSI[bias](y, v, g)
        lab = "%s(%s)" % (bias, ", ".join("%s=%s" % (k, "gate" if np.ndim(x) else x)
                                          for k, x in g.items()))
        report("psi " + lab, R.rel_err(fd, cf), tol_exact)

    print("[4] whole recurrences: FD-psi reference vs closed-psi reference")
    for name, m in sorted(R.MODELS.items()):
        if not m.fd:
            continue
        inp = _model_inputs(m, 2, 32, 2, 16, 4)
        fo, fW = R.run_generic(m.rule(m.params), inp, "fd")
        go, gW = R.run_generic(m.rule(m.params), inp, "closed")
        report("%s fd vs closed o" % name, R.rel_err(fo, go), tol_exact)
        report("%s fd vs closed W" % name, R.rel_err(fW, gW), tol_exact)

    print("[5] sanity properties")
    # DeltaNet with eta = 1 and unit keys writes v exactly: W_t k_t = v_t
    m = R.MODELS["deltanet"]
    inp = _model_inputs(m, 1, 1, 2, 8, 5)
    inp["eta"] = np.ones_like(inp["eta"])
    k64 = inp["k"].astype(np.float64)               # exactly unit in float64
    inp["k"] = k64 / np.linalg.norm(k64, axis=-1, keepdims=True)
    _, W1 = R.CLOSED["deltanet"](inp, {})
    report("deltanet eta=1: W_1 k_1 = v_1", R.rel_err(R._mv(W1, inp["k"][:, 0].astype(float)),
                                                      inp["v"][:, 0]), tol_exact)
    # Longhorn solves the implicit equation W_t - W_{t-1} + eta (W_t k - v) k^T = 0
    m = R.MODELS["longhorn"]
    inp = _model_inputs(m, 2, 1, 2, 8, 6)
    inp["k"] = inp["k"] * 1.7                       # non-unit keys
    _, W1 = R.CLOSED["longhorn"](inp, {})
    k0, v0, b = (inp[n][:, 0].astype(float) for n in ("k", "v", "eta"))
    res = W1 - inp["W"] + b[..., None, None] * R._outer(R._mv(W1, k0) - v0, k0)
    report("longhorn: implicit-equation residual", float(np.max(np.abs(res))), tol_exact)
    # coupled: stationarity g + (W_t - W_{t-1}) / eta + W_t / s = 0, g = (W_{t-1} k - v) k^T
    m = R.MODELS["coupled"]
    inp = _model_inputs(m, 2, 1, 2, 8, 8)
    _, W1 = R.CLOSED["coupled"](inp, m.params)
    k0, v0, eta = (inp[n][:, 0].astype(float) for n in ("k", "v", "eta"))
    W0 = inp["W"].astype(float)
    g = R._outer(R._mv(W0, k0) - v0, k0)
    res = g + (W1 - W0) / eta[..., None, None] + W1 / m.params["s"]
    report("coupled: proximal stationarity residual", float(np.max(np.abs(res))), tol_exact)
    # smoothed lp tends to the exact lp psi as kappa -> inf, eps -> 0
    e_y = rng.standard_normal((50, 16))
    e_y = e_y[np.all(np.abs(e_y) > 1e-2, axis=-1)]
    sm = R.psi_lp_smooth(e_y, 0 * e_y, {"p": 1.5, "kappa": 1e7, "eps": 1e-30})
    ex = R.psi_lp(e_y, 0 * e_y, {"p": 1.5})
    report("lp smooth(kappa=1e7, eps=1e-30) -> exact lp, p=1.5", R.rel_err(sm, ex), 1e-6)
    # chunk 1 of the chunked model is Gated DeltaNet; GLA with an equal gate is Mamba2
    m = R.MODELS["gated_deltanet"]
    inp = _model_inputs(m, 2, 24, 2, 8, 9)
    r = R.MODELS["chunked"].rule({})
    r.chunk = 1
    go, gW = R.run_generic(r, inp, "closed")
    co, cW = R.CLOSED["gated_deltanet"](inp, {})
    report("chunked rule with C=1 == gated_deltanet", max(R.rel_err(go, co), R.rel_err(gW, cW)),
           tol_exact)
    # the parallel chunk form with C=1 also is gated deltanet
    po, pW = R._closed_chunk_parallel(inp, 1, True)
    report("parallel chunk form with C=1 == gated_deltanet",
           max(R.rel_err(po, co), R.rel_err(pW, cW)), tol_exact)
    # chunks differ from C=1 (the test would be vacuous otherwise)
    c4o, _ = R.CLOSED["chunked"](inp, {})
    d = R.rel_err(c4o, co)
    print("  %-58s %.2e %s" % ("chunk 4 vs chunk 1 differ by", d, "ok" if d > 1e-3 else "FAIL"))
    if d <= 1e-3:
        fails.append("chunk 4 == chunk 1")
    inp2 = _model_inputs(R.MODELS["mamba2"], 2, 20, 2, 8, 10)
    a = inp2["alpha"]
    inp3 = dict(inp2)
    inp3["alpha"] = np.repeat(a[..., None], 8, axis=-1)
    mo, mW = R.CLOSED["mamba2"](inp2, {})
    for gname in ("gla", "gla_dv"):
        go, gW = R.CLOSED[gname](inp3, {})
        report("%s with a uniform channel gate == mamba2" % gname,
               max(R.rel_err(go, mo), R.rel_err(gW, mW)), tol_exact)

    print("[6] fp32 conditioning at the lit-test sizes (generic in float32 vs float64)")
    for name, m in sorted(R.MODELS.items()):
        for B, T, H, D in LIT_SIZES.get(name, LIT_DEFAULT_SIZE):
            inp = _model_inputs(m, B, T, H, D, 0)
            r = m.rule(m.params)
            o64, W64 = R.run_generic(r, inp, "closed", np.float64)
            o32, W32 = R.run_generic(r, inp, "closed", np.float32)
            err = max(R.rel_err(o32, o64), R.rel_err(W32, W64))
            report("%s (B=%d T=%d H=%d D=%d) max|o|=%.1f" % (
                name, B, T, H, D, float(np.max(np.abs(o64)))), err, tol_fp32)

    print("self-test: %s" % ("PASS" if not fails else "FAIL (%d): %s" % (len(fails),
                                                                       ", ".join(fails))))
    return 0 if not fails else 1


# --------------------------------------------------------------------------------------


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mirasc", default="mirasc")
    p.add_argument("--miras", default="miras")
    p.add_argument("--module")
    p.add_argument("--model")
    p.add_argument("-D", "--define", action="append", default=[], metavar="NAME=VALUE",
                   help="passed to mirasc as -DNAME=VALUE (also -DNAME=VALUE here)")
    p.add_argument("--B", type=int, default=2)
    p.add_argument("--T", type=int, default=48)
    p.add_argument("--H", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir")
    p.add_argument("--tol", type=float, default=1e-5)
    p.add_argument("--self-test", action="store_true")
    p.add_argument("--list-models", action="store_true")
    return p


def main(argv=None):
    a = build_parser().parse_args(argv)
    if a.self_test:
        return self_test()
    if a.list_models:
        for n, m in sorted(R.MODELS.items()):
            print("%-18s gates=%s reference=%s%s" % (
                n, ",".join("%s:%s%s" % (g, k, "(%s)" % ax if ax else "")
                            for g, (k, ax) in m.gates.items()) or "-",
                m.primary, " (fd available)" if m.fd else ""))
        return 0
    missing = [o for o in ("module", "model", "workdir") if getattr(a, o) is None]
    if missing:
        print("error: missing --%s" % ", --".join(missing), file=sys.stderr)
        return 2
    try:
        return main_check(a)
    except CheckError as e:
        print("error: %s" % e, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
