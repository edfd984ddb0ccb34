#!/usr/bin/python3
"""Compile a .miras module, run it on random data and compare with the numpy reference.

    check_module.py --mirasc mirasc --miras miras --module FILE.miras --model NAME \
        [-DNAME=VALUE ...] [--B 2 --T 48 --H 3] [--seed N] --workdir DIR [--tol 1e-5]
    check_module.py ... --mirasc-arg=--chunk=8 --compare-algorithms
                                         # chunked parallel vs sequential kernel
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


def compile_module(mirasc, module, outdir, defines, extra=()):
    name = module_name(module)
    os.makedirs(outdir, exist_ok=True)
    lib = os.path.join(outdir, "lib%s.so" % name)
    if os.path.exists(lib):
        os.remove(lib)
    cmd = [mirasc, module, "-o", lib] + ["-D%s" % d for d in defines] + list(extra)
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


def run_module(miras, lib, indir, outdir, run_args=()):
    os.makedirs(outdir, exist_ok=True)
    for f in os.listdir(outdir):
        if f.endswith(".npy"):
            os.remove(os.path.join(outdir, f))
    t0 = time.perf_counter()
    p = _run([miras, "run", lib, "--inputs", indir, "--outputs", outdir] + list(run_args),
             "miras run")
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
    # The carried states: what the references model. A chunked module's anchors and
    # chunk position (role "anchor", "chunk_position") are what continuing a sequence
    # needs; a single call starts from none (check_continuation.py checks them).
    states = [(s["name"], tuple(int(x) for x in s["shape"])) for s in info.get("states", [])
              if s.get("role", "carried") == "carried"]
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
    # Where each gate's random values come from: its declared range, as `miras info`
    # reports it (GateSampling.from_info).
    try:
        sampling = {g["name"]: R.GateSampling.from_info(g) for g in info.get("gates", [])}
    except ValueError as e:
        raise CheckError(str(e))
    return dict(dk=dk, dv=dv, chunk=None if chunk is None else int(chunk), read=read,
                gates=gates, states=states, params=params, sampling=sampling)


def gate_mismatches(model, meta):
    """The differences between the module's gates and the ones the model expects."""
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
    return errs


def check_against_model(model, rule, meta):
    errs = gate_mismatches(model, meta)
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


def check_mlp_meta(model, rule, meta):
    errs = gate_mismatches(model, meta)
    if meta["dk"] != meta["dv"]:
        errs.append("an mlp memory maps D -> D, module says dk=%d dv=%d" % (meta["dk"], meta["dv"]))
    if meta["chunk"] is not None and meta["chunk"] != rule.chunk:
        errs.append("chunk: module says %d, model expects %d" % (meta["chunk"], rule.chunk))
    if meta["read"] is not None and str(meta["read"]) != rule.read:
        errs.append("read: module says %s, model expects %s" % (meta["read"], rule.read))
    want_states = list(zip(rule.state_names(), rule.state_shapes(meta["dk"])))
    got_states = [(n, tuple(sh)) for n, sh in meta["states"]]
    if got_states != want_states:
        errs.append("states (SPEC section 6 naming, ABI order): module has %s, model '%s' "
                    "(%r, retention %s, optimizer %s) expects %s" % (
                        ["%s%s" % (n, list(sh)) for n, sh in got_states], model.name,
                        rule.mlp, rule.retention, rule.optimizer,
                        ["%s%s" % (n, list(sh)) for n, sh in want_states]))
    if errs:
        raise CheckError("module metadata does not match model '%s':\n  %s" % (
            model.name, "\n  ".join(errs)))


def resolve_model(spec, module=None, defines=None):
    if spec == "dsl":
        if not module:
            raise CheckError("--model dsl needs --module")
        with open(module) as f:
            src = f.read()
        try:
            m = R.model_from_source(src, {n: v for n, v in parse_defines(defines).items()})
        except (ValueError, KeyError, AttributeError) as e:
            raise CheckError("--model dsl: %s" % e)
        return m, m.primary
    mode = None
    if ":" in spec:
        mode, spec = spec.split(":", 1)
        if mode not in ("fd", "closed", "generic"):
            raise CheckError("unknown reference mode '%s' (fd, closed, generic)" % mode)
    if spec not in R.MODELS:
        raise CheckError("unknown model '%s'; known: %s" % (spec, ", ".join(sorted(R.MODELS))))
    m = R.MODELS[spec]
    if isinstance(m, R.MlpModel):
        if mode in ("fd", "closed"):
            raise CheckError("model '%s' (MLP memory) has one reference, run_mlp; use "
                             "--model %s (or --fd-gradient for the gradient)" % (spec, spec))
        return m, "generic"
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


def _write_inputs(inp, workdir):
    indir = os.path.join(workdir, "in")
    os.makedirs(indir, exist_ok=True)
    for f in os.listdir(indir):
        if f.endswith(".npy"):
            os.remove(os.path.join(indir, f))
    for n, x in inp.items():
        np.save(os.path.join(indir, n + ".npy"), np.ascontiguousarray(x, dtype=np.float32))
    return indir


def to_bf16_values(x):
    """float32 -> the nearest bfloat16 value (round to nearest even), kept as float32."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return u.astype(np.uint32).view(np.float32)


def _bf16_inputs(inp, meta):
    """q, k, v and the gates rounded to bfloat16 values, the initial states untouched: what a
    bf16 GPU run reads, exactly, so that every run and the reference see the same numbers
    and the comparison measures the kernel, not the rounding of its inputs."""
    rounded = {"q", "k", "v"} | {g[0] for g in meta["gates"]}
    return {n: to_bf16_values(x) if n in rounded else x for n, x in inp.items()}


def _prepare_and_run_mlp(miras, lib, model, rule, meta, B, T, H, seed, workdir, fd_eta=None,
                         run_args=(), bf16_values=False):
    """MLP memories: every state by name, in the module's order. Results: o, then states."""
    D = meta["dk"]
    inp = R.make_mlp_inputs(model, rule, B, T, H, D, meta["gates"], meta["sampling"], seed=seed)
    if bf16_values:
        inp = _bf16_inputs(inp, meta)
    if fd_eta is not None:
        inp[rule.lr[1]] = np.full_like(inp[rule.lr[1]], fd_eta)
    indir = _write_inputs(inp, workdir)
    outdir = os.path.join(workdir, "out")
    log, proc_ms = run_module(miras, lib, indir, outdir, run_args)
    res = {}
    names = [n for n, _ in meta["states"]]
    if fd_eta is None:
        trace = []
        ref_o, ref_states = R.run_mlp(rule, inp, trace=trace)
        res["o"] = (load_out(outdir, "o", (B, T, H, D)), ref_o)
        if rule.bias == "yaad_mix":
            _yaad_margin(trace)
    else:
        ref_states = None
    for (n, shape) in meta["states"]:
        x = load_out(outdir, n, (B, H) + tuple(shape))
        res[n] = (x, None if ref_states is None else ref_states[n])
    return res, {"proc_ms": proc_ms, "wall_ms": parse_wall_ms(log), "inputs": inp,
                 "rule": rule, "states": names}


def _yaad_margin(trace, warn_below=1e-4):
    """The yaad_mix switch is discontinuous: warn when a token sits on the threshold."""
    m = min(float(np.min(np.abs(ne - np.asarray(g["delta"])[..., 0]) /
                         np.asarray(g["delta"])[..., 0])) for ne, g in trace)
    if m < warn_below:
        print("warning: yaad_mix: a token has | ||e|| - delta | / delta = %.1e; float32 may "
              "take the other branch there (try another --seed)" % m, file=sys.stderr)
    return m


def prepare_and_run(args_mirasc, args_miras, module, model, mode, defines, B, T, H, seed,
                    workdir, libdir=None, fd_eta=None, mirasc_args=(), run_args=(),
                    bf16_values=False):
    """Compile, run, compute the reference. Returns (results dict, timing info). With
    bf16_values, q, k, v and the gates are rounded to bfloat16 values first."""
    defs = parse_defines(defines)
    lib = compile_module(args_mirasc, module, libdir or os.path.join(workdir, "lib"), defines,
                         mirasc_args)
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
    # mirasc --chunk overrides the module's chunk: the generic reference follows (the
    # closed forms are written for the module's own chunk).
    rechunked = any(arg.startswith("--chunk=") for arg in mirasc_args)
    if rechunked and meta["chunk"] is not None:
        rule.chunk = meta["chunk"]
    if isinstance(model, R.MlpModel):
        check_mlp_meta(model, rule, meta)
        return _prepare_and_run_mlp(args_miras, lib, model, rule, meta, B, T, H, seed, workdir,
                                    fd_eta, run_args, bf16_values)
    check_against_model(model, rule, meta)
    dk, dv = meta["dk"], meta["dv"]
    states = meta["states"] or [("W", (dv, dk))]
    inp = R.make_inputs(B, T, H, dk, dv, meta["gates"], meta["sampling"], seed=seed, model=model,
                        states=states)
    if bf16_values:
        inp = _bf16_inputs(inp, meta)
    indir = _write_inputs(inp, workdir)
    outdir = os.path.join(workdir, "out")
    log, proc_ms = run_module(args_miras, lib, indir, outdir, run_args)
    o = load_out(outdir, "o", (B, T, H, dv))
    W = load_out(outdir, "W", (B, H, dv, dk))
    if rechunked:
        ref_o, ref_W = R.run_generic(rule, inp, "fd" if mode == "fd" else "closed")
    else:
        ref_o, ref_W = model.reference(inp, params, mode)
    return {"o": (o, ref_o), "W": (W, ref_W)}, {"proc_ms": proc_ms,
                                                "wall_ms": parse_wall_ms(log)}


def _report(res, names, tol, what):
    bad = []
    for name in names:
        x, ref = res[name]
        err = R.rel_err(x, ref)
        ok = err < tol
        print("%s: max_rel_err=%.3e %s" % (name, err, "OK" if ok else "FAIL"))
        if not ok:
            idx = np.unravel_index(np.argmax(np.abs(np.asarray(x, np.float64) - ref)), ref.shape)
            bad.append("%s differs from the %s: max_rel_err %.3e >= "
                       "tol %.1e (worst at index %s: got %.7g, expected %.7g)" % (
                           name, what, err, tol, tuple(int(i) for i in idx),
                           float(x[idx]), float(ref[idx])))
    return bad


def main_compare_algorithms(a):
    """SPEC section 7: for the same chunk size, the chunked parallel kernel gives the
    sequential kernel's numbers (float32 rounding apart), on the same inputs."""
    model, mode = resolve_model(a.model, a.module, a.define)
    results = {}
    for algorithm in ("sequential", "chunked"):
        workdir = os.path.join(a.workdir, algorithm)
        os.makedirs(workdir, exist_ok=True)
        try:
            results[algorithm], _ = prepare_and_run(
                a.mirasc, a.miras, a.module, model, mode, a.define, a.B, a.T, a.H, a.seed,
                workdir, mirasc_args=a.mirasc_arg + ["--algorithm=" + algorithm])
        except CheckError as e:
            why = re.search(r"the chunked algorithm does not apply: ([^\n]*)", str(e))
            if algorithm != "chunked" or not why:
                raise
            print("chunked algorithm not applicable: %s" % why.group(1).strip())
            return 0
    lib = os.path.join(a.workdir, "chunked", "lib", "lib%s.so" % module_name(a.module))
    built = module_info(a.miras, lib).get("algorithm")
    return _report_pair(results["chunked"], results["sequential"], a.tol, model, mode,
                        "%s vs sequential kernel (%s):" % (built, " ".join(a.mirasc_arg)),
                        "sequential kernel", "chunked")


def _report_pair(new, base, tol, model, mode, heading, base_what, new_name):
    """Prints `new` against `base` (two runs on the same inputs), then `new` against the
    reference; returns the exit status."""
    print(heading)
    both = {n: (new[n][0], np.asarray(base[n][0], np.float64)) for n in base}
    bad = _report(both, list(both), tol, base_what)
    print("%s vs float64 reference of model '%s':" % (new_name, model.name))
    bad += _report(new, [n for n in new if new[n][1] is not None], tol,
                   "%s reference of model '%s'" % (mode, model.name))
    for b in bad:
        print("error: " + b, file=sys.stderr)
    return 1 if bad else 0


def main_compare_devices(a):
    """The CUDA kernels against the CPU kernel of the same library (--target=cpu,cuda),
    on the same inputs, then against the float64 reference. With --input-dtype bf16 the
    GPU reads q, k, v and the gates as bfloat16 (state and accumulation float32); the
    inputs are then bfloat16 values for every run, the CPU's and the reference's too."""
    model, mode = resolve_model(a.model, a.module, a.define)
    mirasc_args = a.mirasc_arg + ["--target=cpu,cuda"]
    results = {}
    for device, run_args in (("cpu", []),
                             ("cuda", ["--device", "cuda", "--input-dtype", a.input_dtype])):
        workdir = os.path.join(a.workdir, device)
        os.makedirs(workdir, exist_ok=True)
        results[device], _ = prepare_and_run(
            a.mirasc, a.miras, a.module, model, mode, a.define, a.B, a.T, a.H, a.seed,
            workdir, mirasc_args=mirasc_args, run_args=run_args,
            bf16_values=a.input_dtype == "bf16")
    return _report_pair(results["cuda"], results["cpu"], a.tol, model, mode,
                        "cuda (%s inputs) vs cpu kernel:" % a.input_dtype, "cpu kernel", "cuda")


def main_check(a):
    model, mode = resolve_model(a.model, a.module, a.define)
    os.makedirs(a.workdir, exist_ok=True)
    res, _ = prepare_and_run(a.mirasc, a.miras, a.module, model, mode, a.define, a.B, a.T,
                             a.H, a.seed, a.workdir, mirasc_args=a.mirasc_arg)
    bad = _report(res, list(res), a.tol, "%s reference of model '%s'" % (mode, model.name))
    if bad:
        for b in bad:
            print("error: " + b, file=sys.stderr)
        return 1
    return 0


def fd_gradient_check(model, rule, W0, W1, inp, eta, h=1e-5):
    """g_i = (Wi(0) - Wi(1)) / eta from the kernel's first step, vs central differences of
    the loss in float64 (and the numpy backprop vs the same differences, as a sanity line).
    Returns [(name, kernel g, FD g)], backprop-vs-FD error."""
    if rule.bias not in R.LOSSES:
        raise CheckError("bias %s of model '%s' has no loss to differentiate" % (
            rule.bias, model.name))
    loss = R.LOSSES[rule.bias]
    g = {n: v for n, v in rule.bias_args.items()}
    if any(isinstance(v, tuple) for v in g.values()):
        raise CheckError("--fd-gradient: bias arguments must be numbers")
    z = np.asarray(inp["k"][:, 0], np.float64)
    v = np.asarray(inp["v"][:, 0], np.float64)
    W0 = [np.asarray(x, np.float64) for x in W0]
    fd = R.fd_mlp_grad(rule.mlp, W0, z, v, loss, g, h=h)
    y, cache = R.mlp_forward(rule.mlp, W0, z)
    hand = R.mlp_vjp(rule.mlp, W0, cache, R.PSI[rule.bias](y, v, g))
    hand_err = max(R.rel_err(a, b) for a, b in zip(hand, fd))
    out = [(n, (w0 - np.asarray(w1, np.float64)) / eta, f)
           for n, w0, w1, f in zip(rule.state_names(), W0, W1, fd)]
    return out, hand_err


def main_fd_gradient(a):
    model, _ = resolve_model(a.model, a.module, a.define)
    if not isinstance(model, R.MlpModel):
        raise CheckError("--fd-gradient needs an MLP model")
    defs = parse_defines(a.define)
    rule = model.rule(dict(model.params, **{n: float(v) for n, v in defs.items()}))
    if rule.retention != "none" or rule.optimizer != "gd" or not isinstance(rule.lr, tuple):
        raise CheckError("--fd-gradient isolates g from one gd step: the module needs "
                         "retention none and optimizer gd(lr = <scalar gate>)")
    os.makedirs(a.workdir, exist_ok=True)
    res, info = prepare_and_run(a.mirasc, a.miras, a.module, model, "generic", a.define,
                                1, 1, 1, a.seed, a.workdir, fd_eta=a.fd_eta)
    inp = info["inputs"]
    names = info["states"]
    W0 = [inp[n] for n in names]
    W1 = [res[n][0] for n in names]
    pairs, hand_err = fd_gradient_check(model, rule, W0, W1, inp, a.fd_eta)
    ok_hand = hand_err < 1e-6
    print("# numpy backprop vs central differences: max_rel_err=%.3e %s" % (
        hand_err, "ok" if ok_hand else "FAIL"))
    cmp = {"g_" + n: (g, f) for n, g, f in pairs}
    bad = _report(cmp, list(cmp), a.fd_tol,
                  "float64 central differences of the loss (model '%s')" % model.name)
    if not ok_hand:
        bad.append("the numpy backprop disagrees with finite differences (%.3e)" % hand_err)
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


_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _declared_sampling(model):
    """The gate ranges the module file of a registry model declares (examples/NAME.miras,
    else test/numeric/modules/NAME.miras): the self-test draws what the lit tests draw."""
    for d in (os.path.join(_ROOT, "examples"), os.path.join(_ROOT, "test", "numeric", "modules")):
        path = os.path.join(d, model.name + ".miras")
        if os.path.exists(path):
            with open(path) as f:
                return R.declared_sampling(f.read())
    raise CheckError("self-test: no module file for model '%s'" % model.name)


def _model_inputs(model, B, T, H, D, seed):
    gates = []
    for n, (kind, axis) in model.gates.items():
        gates.append((n, kind, axis, D if kind == "channel" else 1))
    return R.make_inputs(B, T, H, D, D, gates, _declared_sampling(model), seed=seed, model=model)


MLP_LIT_SIZE = (2, 24, 2, 8)     # B, T, H, D of test/lit/Numeric/<mlp example>.test
FD_LIT_D = 4                     # -DD of the --fd-gradient lit tests


def _mlp_inputs(model, B, T, H, D, seed):
    r = model.rule(model.params)
    return R.make_mlp_inputs(model, r, B, T, H, D, R.mlp_gates(model), _declared_sampling(model),
                             seed=seed), r


def _self_test_mlp(report, fails, tol_fd=1e-7, tol_exact=1e-9, tol_fp32=2e-6):
    rng = np.random.default_rng(11)

    print("[7] MLP memory: activations' derivatives and hand-written backprop vs central "
          "differences (float64)")
    x = np.concatenate([np.linspace(-4, 4, 41) + 0.0123, rng.standard_normal(40) * 2])
    for act, (f, df) in sorted(R.ACTS.items()):
        h = 1e-6
        fd = (f(x + h) - f(x - h)) / (2 * h)
        report("act %s: d/dx vs central differences" % act, R.rel_err(df(x), fd), tol_fd)
    D, E = 3, 2
    z = rng.standard_normal((2, D))
    v = rng.standard_normal((2, D))
    for depth in (2, 3):
        for act in sorted(R.ACTS):
            for res, ln in ((False, False), (True, False), (False, True), (True, True)):
                mlp = R.Mlp(depth, E, act, res, ln)
                Ws = [rng.standard_normal((2,) + sh) / np.sqrt(sh[1]) for sh in mlp.shapes(D)]
                for bias, g in (("l2", {}), ("lp", {"p": 3.0}), ("logcosh", {})):
                    if bias != "l2" and (res, ln) not in ((True, True),):
                        continue
                    y, cache = R.mlp_forward(mlp, Ws, z)
                    hand = R.mlp_vjp(mlp, Ws, cache, R.PSI[bias](y, v, g))
                    fd = R.fd_mlp_grad(mlp, Ws, z, v, R.LOSSES[bias], g)
                    err = max(R.rel_err(a, b) for a, b in zip(hand, fd))
                    report("backprop %r %s" % (mlp, bias), err, tol_fd)

    print("[8] mirror maps")
    A = rng.standard_normal((2, 3, 6, 5)) * 2
    W = R.map_softmax(A)
    report("softmax map: rows sum to 1", float(np.max(np.abs(W.sum(-1) - 1))), tol_exact)
    report("softmax map: entries > 0 (min entry, want > 0)", 0.0 if W.min() > 0 else 1.0, 0.5)
    report("softmax map: invariant to a per-row shift of A",
           R.rel_err(R.map_softmax(A + rng.standard_normal((2, 3, 6, 1)) * 5), W), tol_exact)
    report("softmax map: log W - A is constant along each row",
           float(np.max(np.ptp(np.log(W) - A, axis=-1))), tol_exact)
    for q in (2.5, 4.0, 5.0):
        Wq = R.map_lq(A, q)
        nA, nW = R.lq_norm(A, q), R.lq_norm(Wq, q)
        report("lq map q=%g: ||W||_q = ||A||_q^(3-q)" % q, R.rel_err(nW, nA ** (3 - q)), tol_exact)
        report("lq map q=%g: map(c A) = c^(3-q) map(A), c = 1.7" % q,
               R.rel_err(R.map_lq(1.7 * A, q), 1.7 ** (3 - q) * Wq), tol_exact)
        report("lq map q=%g: W parallel to A (W / A constant per tensor)" % q,
               float(np.max(np.ptp((Wq / A).reshape(2, 3, -1), axis=-1))), tol_exact)
        report("lq map q=%g: inverse map" % q, R.rel_err(R.inv_map_lq(Wq, q), A), tol_exact)
        per = np.stack([np.stack([R.map_lq(A[b, h], q) for h in range(3)]) for b in range(2)])
        report("lq map q=%g: per tensor and head" % q, R.rel_err(per, Wq), tol_exact)
    report("lq map q=4 is an involution", R.rel_err(R.map_lq(R.map_lq(A, 4.0), 4.0), A), tol_exact)
    report("lq map q=2 is the identity", R.rel_err(R.map_lq(A, 2.0), A), tol_exact)

    print("[9] MLP recurrences: identities between compositions")
    B, T, H, D = 2, 12, 2, 4
    m = R.MODELS["titans"]
    inp, r = _mlp_inputs(m, B, T, H, D, 21)
    inp0 = dict(inp, mu=np.zeros_like(inp["mu"]))
    mo, ms = R.run_mlp(r, inp0)
    rg = R.MlpRule(r.mlp, "l2", retention="l2", decay=R.G("alpha"), lr=R.G("theta"))
    go, gs = R.run_mlp(rg, inp0)
    report("momentum with mu = 0 == gd with decay (o, W1, W2)",
           max(R.rel_err(mo, go), R.rel_err(ms["W1"], gs["W1"]), R.rel_err(ms["W2"], gs["W2"])),
           tol_exact)
    # momentum with mu = 1, alpha = 1: W_t - W_{t-1} = S_t = S_0 - theta sum g
    inp1 = dict(inp0, mu=np.ones_like(inp["mu"]), alpha=np.ones_like(inp["alpha"]))
    _, s1 = R.run_mlp(r, inp1)
    # S_T = S_0 - sum theta g  and  W_T = W_0 + sum_t S_t: check by a second independent loop
    Wl = [np.asarray(inp[n], float) for n in ("W1", "W2")]
    Sl = [np.asarray(inp[n], float) for n in ("S1", "S2")]
    for t in range(T):
        y, c = R.mlp_forward(r.mlp, Wl, inp["k"][:, t].astype(float))
        gr = R.mlp_vjp(r.mlp, Wl, c, y - inp["v"][:, t])
        th = inp["theta"][:, t].astype(float)[..., None, None]
        Sl = [s_ - th * g_ for s_, g_ in zip(Sl, gr)]
        Wl = [w_ + s_ for w_, s_ in zip(Wl, Sl)]
    report("momentum mu = 1, alpha = 1 vs a hand loop",
           max(R.rel_err(s1["W1"], Wl[0]), R.rel_err(s1["S2"], Sl[1])), tol_exact)
    m = R.MODELS["moneta"]
    inp, r = _mlp_inputs(m, B, T, H, D, 22)
    r2 = R.MlpRule(r.mlp, r.bias, r.bias_args, retention="lq", q=2.0, decay=r.decay, lr=r.lr)
    rl = R.MlpRule(r.mlp, r.bias, r.bias_args, retention="l2", decay=r.decay, lr=r.lr)
    a2 = dict(inp)
    a2.update({"W1": inp["A1"], "W2": inp["A2"]})
    o2, s2 = R.run_mlp(r2, inp)
    ol, sl = R.run_mlp(rl, a2)
    report("lq retention with q = 2 == l2 retention", max(R.rel_err(o2, ol),
                                                           R.rel_err(s2["A1"], sl["W1"])), tol_exact)
    # Moneta in primal form: W_t = map(alpha A_{t-1} - eta g(W_{t-1})) with A_{t-1} = map^-1(W_{t-1})
    o4, s4 = R.run_mlp(r, inp)
    Wp = [R.map_lq(np.asarray(inp[n], float), 4.0) for n in ("A1", "A2")]
    op = np.zeros_like(o4)
    for t in range(T):
        y, c = R.mlp_forward(r.mlp, Wp, inp["k"][:, t].astype(float))
        gr = R.mlp_vjp(r.mlp, Wp, c, R.psi_lp(y, inp["v"][:, t], {"p": 3.0}))
        al = inp["alpha"][:, t].astype(float)[..., None, None]
        et = inp["eta"][:, t].astype(float)[..., None, None]
        Wp = [R.map_lq(al * R.inv_map_lq(w_, 4.0) - et * g_, 4.0) for w_, g_ in zip(Wp, gr)]
        op[:, t] = R.mlp_forward(r.mlp, Wp, inp["q"][:, t].astype(float))[0]
    report("moneta dual (A) == primal (W = map(alpha map^-1(W) - eta g))",
           max(R.rel_err(o4, op), R.rel_err(R.map_lq(s4["A2"], 4.0), Wp[1])), 1e-8)
    # Memora in the SPEC's primal form: W_t = softmax(alpha log W_{t-1} - eta g) row-wise
    m = R.MODELS["memora"]
    inp, r = _mlp_inputs(m, B, T, H, D, 23)
    om, sm = R.run_mlp(r, inp)
    Wp = [R.map_softmax(np.asarray(inp[n], float)) for n in ("A1", "A2")]
    op = np.zeros_like(om)
    for t in range(T):
        y, c = R.mlp_forward(r.mlp, Wp, inp["k"][:, t].astype(float))
        gr = R.mlp_vjp(r.mlp, Wp, c, y - inp["v"][:, t])
        al = inp["alpha"][:, t].astype(float)[..., None, None]
        et = inp["eta"][:, t].astype(float)[..., None, None]
        Wp = [R.map_softmax(al * np.log(w_) - et * g_) for w_, g_ in zip(Wp, gr)]
        op[:, t] = R.mlp_forward(r.mlp, Wp, inp["q"][:, t].astype(float))[0]
    report("memora dual (logits) == primal softmax(alpha log W - eta g)",
           max(R.rel_err(om, op), R.rel_err(R.map_softmax(sm["A1"]), Wp[0])), 1e-8)
    m = R.MODELS["yaad"]
    inp, r = _mlp_inputs(m, B, T, H, D, 24)
    rl = R.MlpRule(r.mlp, "l2", retention="l2", decay=r.decay, lr=r.lr)
    ob, sb = R.run_mlp(r, dict(inp, delta=np.full_like(inp["delta"], 1e9)))
    ol, sl = R.run_mlp(rl, inp)
    report("yaad_mix with delta = 1e9 == l2 bias", max(R.rel_err(ob, ol),
                                                      R.rel_err(sb["W1"], sl["W1"])), tol_exact)
    e = rng.standard_normal((5, 8)) * 2
    d = np.full((5, 1), 0.7)
    ps = R.psi_yaad_mix(e, 0 * e, {"delta": d, "kappa": 10.0})
    big = np.linalg.norm(e, axis=-1) > 0.7
    report("yaad_mix psi: delta tanh(10 e) above delta, e below",
           max(R.rel_err(ps[big], 0.7 * np.tanh(10 * e[big])),
               R.rel_err(ps[~big], e[~big]) if np.any(~big) else 0.0), tol_exact)
    # a small gd step on the MIRAS MLP decreases the l2 loss of its own token
    m = R.MODELS["ttt_mlp"]
    inp, r = _mlp_inputs(m, 2, 1, 2, 4, 25)
    Ws = [np.asarray(inp[n], float) for n in ("W1", "W2")]
    kk, vv = inp["k"][:, 0].astype(float), inp["v"][:, 0].astype(float)
    L0 = R.mlp_loss(r.mlp, Ws, kk, vv, R.LOSSES["l2"])
    _, s1 = R.run_mlp(r, dict(inp, eta=np.full_like(inp["eta"], 1e-3)))
    L1 = R.mlp_loss(r.mlp, [s1["W1"], s1["W2"]], kk, vv, R.LOSSES["l2"])
    report("ttt_mlp: one step with eta = 1e-3 lowers the token's loss (max L1 - L0 < 0)",
           0.0 if np.all(L1 < L0) else 1.0, 0.5)
    # --model dsl reads the examples into the same rules as the registry
    here = os.path.dirname(os.path.abspath(__file__))
    ex = os.path.join(os.path.dirname(os.path.dirname(here)), "examples")
    for name in ("ttt_mlp", "titans", "moneta", "yaad", "memora"):
        path = os.path.join(ex, name + ".miras")
        if not os.path.exists(path):
            continue
        md = R.model_from_source(open(path).read(), {"D": 4})
        mr = R.MODELS[name]
        inp, r = _mlp_inputs(mr, 1, 6, 2, 4, 26)
        o1, _ = R.run_mlp(r, inp)
        o2, _ = R.run_mlp(md.rule({}), inp)
        report("--model dsl reads examples/%s.miras as the registry rule" % name,
               R.rel_err(o2, o1), tol_exact)

    print("[10] fp32 conditioning at the lit sizes (run_mlp float32 vs float64), the yaad "
          "switch margin, the gradient's share of the final state")
    B, T, H, D = MLP_LIT_SIZE
    for name in ("ttt_mlp", "titans", "moneta", "yaad", "memora"):
        m = R.MODELS[name]
        inp, r = _mlp_inputs(m, B, T, H, D, 0)
        tr = []
        o64, s64 = R.run_mlp(r, inp, trace=tr)
        o32, s32 = R.run_mlp(r, inp, np.float32)
        err = max([R.rel_err(o32, o64)] + [R.rel_err(s32[n], s64[n]) for n in s64])
        z = dict(inp)
        z[r.lr[1]] = np.zeros_like(inp[r.lr[1]])
        _, sz = R.run_mlp(r, z)
        share = min(np.linalg.norm(s64[n] - sz[n]) / np.linalg.norm(s64[n])
                    for n in s64 if not n.startswith("S"))
        report("%s (B=%d T=%d H=%d D=%d) max|o|=%.1f, gradient share >= %.2f" % (
            name, B, T, H, D, float(np.max(np.abs(o64))), share), err, tol_fp32)
        if share < 0.02:
            report("%s: the gradient moves the state" % name, 1.0, 0.5)
        if name == "yaad":
            ne = np.array([t_[0] for t_ in tr])
            dl = np.array([t_[1]["delta"][..., 0] for t_ in tr])
            margin = float(np.min(np.abs(ne - dl) / dl))
            frac = float(np.mean(ne <= dl))
            print("  %-58s %.2e %s" % ("yaad switch: min | ||e|| - delta | / delta (l2 branch "
                                       "%.0f%%)" % (100 * frac), margin,
                                       "ok" if margin > 1e-4 and 0 < frac < 1 else "FAIL"))
            if not (margin > 1e-4 and 0 < frac < 1):
                fails.append("yaad switch margin")
    # --fd-gradient: g recovered from a float32 step W(1) = W(0) - eta g vs float64 FD
    for name in ("mlp_fd_gelu", "mlp_fd_silu", "mlp_fd_relu", "mlp_fd_gelu_tanh"):
        m = R.MODELS[name]
        inp, r = _mlp_inputs(m, 1, 1, 1, FD_LIT_D, 0)
        inp["eta"] = np.ones_like(inp["eta"])
        _, s32 = R.run_mlp(r, inp, np.float32)
        names = r.state_names()
        pairs, hand = fd_gradient_check(m, r, [inp[n] for n in names],
                                        [s32[n] for n in names], inp, 1.0)
        report("%s: numpy backprop vs FD" % name, hand, tol_fd)
        report("%s: float32 step, g = W(0) - W(1) vs FD (lit tol 1e-4)" % name,
               max(R.rel_err(g_, f_) for _, g_, f_ in pairs), 1e-5)


def self_test(tol_exact=1e-9, tol_fp32=2e-6):
    fails = []

    def report(label, err, tol):
        ok = err < tol
        print("  %-58s %.2e %s" % (label, err, "ok" if ok else "FAIL (tol %.0e)" % tol))
        if not ok:
            fails.append(label)

    print("[1] SPEC section 6 closed forms vs generic psi/retention/optimizer composition")
    for name, m in sorted(R.MODELS.items()):
        # The generic composition takes one step per token; multistep models
        # are cross-checked by test/numeric/retention/check_retention.py.
        if name not in R.CLOSED or getattr(m, "steps", 1) > 1:
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
        if isinstance(m, R.MlpModel) or getattr(m, "steps", 1) > 1:
            continue
        for B, T, H, D in LIT_SIZES.get(name, LIT_DEFAULT_SIZE):
            inp = _model_inputs(m, B, T, H, D, 0)
            r = m.rule(m.params)
            o64, W64 = R.run_generic(r, inp, "closed", np.float64)
            o32, W32 = R.run_generic(r, inp, "closed", np.float32)
            err = max(R.rel_err(o32, o64), R.rel_err(W32, W64))
            report("%s (B=%d T=%d H=%d D=%d) max|o|=%.1f" % (
                name, B, T, H, D, float(np.max(np.abs(o64)))), err, tol_fp32)

    _self_test_mlp(report, fails)

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
    p.add_argument("--mirasc-arg", action="append", default=[], metavar="ARG",
                   help="extra mirasc argument, e.g. --mirasc-arg=--chunk=8 (repeatable)")
    p.add_argument("--compare-algorithms", action="store_true",
                   help="compile with --algorithm=sequential and =chunked, run both on the "
                        "same inputs and compare them with each other and the reference "
                        "(prints 'parallel form not applicable: WHY' when it is not)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cuda: build with --target=cpu,cuda and compare the GPU run with "
                        "the CPU kernel and the reference (needs a GPU)")
    p.add_argument("--input-dtype", choices=("f32", "bf16"), default="f32",
                   help="with --device cuda: the GPU's q, k, v and gates in bfloat16")
    p.add_argument("--self-test", action="store_true")
    p.add_argument("--list-models", action="store_true")
    p.add_argument("--fd-gradient", action="store_true",
                   help="MLP modules with retention none + gd(lr = gate): run one token "
                        "(B=T=H=1) and compare g = (W(0) - W(1)) / eta with float64 central "
                        "differences of the loss")
    p.add_argument("--fd-eta", type=float, default=1.0,
                   help="learning rate of the --fd-gradient step (default 1)")
    p.add_argument("--fd-tol", type=float, default=1e-4,
                   help="tolerance of --fd-gradient (float32 kernel; default 1e-4)")
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
        if a.fd_gradient:
            return main_fd_gradient(a)
        if a.compare_algorithms:
            return main_compare_algorithms(a)
        if a.device == "cuda":
            return main_compare_devices(a)
        return main_check(a)
    except CheckError as e:
        print("error: %s" % e, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
