#!/usr/bin/env python3
"""Independent float64 references for the elastic-net retentions and the
diagonal memory (SPEC section 5), written straight from the formulas:

  ftrl      A_t = alpha A_{t-1} - eta_t g_t(W_{t-1}),  W_t = S_{c/a}(A_t)
  prox      W_t = S_gamma(lambda W_{t-1} - zeta g_t),  lambda = b / (b + eta),
            zeta = eta lambda,  gamma = eta b / (a (eta + b))
  diagonal  w_t = alpha * w_{t-1} - eta_t (w_{t-1} * k - v) * k
  bregman   A_t = alpha A_{t-1} - eta_t g_t(W_{t-1}),  W_t = sigmoid(A_t)
  fdiv      W_t = W_{t-1} * exp(-eta_t g_t) / (its row sums)   (f_div, g = exp)
  product   DeltaProduct: W_t = alpha_t W_{t-1} prod_j (I - beta_j k_j k_j^T)
            + sum_j beta_j v_j k_j^T (in order), k/v [B,T,H,n,D], beta [B,T,H,n]

with the l2 bias (g = (W k - v) k^T) and o_t = W_t q_t. Compiles the module
with mirasc, runs it with `miras run` and compares o and the final state.
Usage: check_retention.py --rule ftrl|prox|diagonal|bregman|fdiv|product --module FILE --workdir DIR
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np


def soft_threshold(z, g):
    return np.sign(z) * np.maximum(np.abs(z) - g, 0.0)


def reference_product(inp):
    """DeltaProduct written as the product of its Householder-like factors."""
    q, k, v, beta = inp["q"], inp["k"], inp["v"], inp["beta"]
    B, T, H, n, D = k.shape
    state = inp["W"].copy()
    o = np.zeros((B, T, H, D))
    I = np.eye(D)
    for b in range(B):
        for h in range(H):
            W = state[b, h]
            for t in range(T):
                W = inp["alpha"][b, t, h] * W if "alpha" in inp else W
                for j in range(n):
                    kj, vj, bj = k[b, t, h, j], v[b, t, h, j], beta[b, t, h, j]
                    W = W @ (I - bj * np.outer(kj, kj)) + bj * np.outer(vj, kj)
                o[b, t, h] = W @ q[b, t, h]
            state[b, h] = W
    return o, state


def reference(rule, inp, params):
    if rule == "product":
        return reference_product(inp)
    q, k, v, eta = inp["q"], inp["k"], inp["v"], inp["eta"]
    B, T, H, D = q.shape
    state = inp["A" if rule in ("ftrl", "bregman") else "W"].copy()

    def decay(b, t, h):
        return inp["alpha"][b, t, h] if "alpha" in inp else 1.0
    o = np.zeros((B, T, H, D))
    for b in range(B):
        for h in range(H):
            S = state[b, h]
            for t in range(T):
                kt, vt, qt, lr = k[b, t, h], v[b, t, h], q[b, t, h], eta[b, t, h]
                if rule == "fdiv":
                    g = np.outer(S @ kt - vt, kt)
                    U = S * np.exp(-lr * g)
                    S = U / U.sum(axis=1, keepdims=True)
                    W = S
                elif rule == "bregman":
                    W = 1.0 / (1.0 + np.exp(-S))
                    g = np.outer(W @ kt - vt, kt)
                    S = decay(b, t, h) * S - lr * g
                    W = 1.0 / (1.0 + np.exp(-S))
                elif rule == "ftrl":
                    W = soft_threshold(S, params["c"] / params["a"])
                    g = np.outer(W @ kt - vt, kt)
                    S = decay(b, t, h) * S - lr * g
                    W = soft_threshold(S, params["c"] / params["a"])
                elif rule == "prox":
                    a, bb = params["a"], params["b"]
                    lam = bb / (bb + lr)
                    g = np.outer(S @ kt - vt, kt)
                    S = soft_threshold(lam * S - lr * lam * g, lr * bb / (a * (lr + bb)))
                    W = S
                else:  # diagonal
                    S = inp["alpha"][b, t, h] * S - lr * (S * kt - vt) * kt
                    W = np.diag(S)
                o[b, t, h] = W @ qt
            state[b, h] = S
    return o, state


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rule", required=True, choices=["ftrl", "prox", "diagonal", "bregman", "fdiv", "product"])
    p.add_argument("--module", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--mirasc", default="mirasc")
    p.add_argument("--miras", default="miras")
    p.add_argument("--D", type=int, default=8)
    p.add_argument("--tol", type=float, default=1e-5)
    p.add_argument("--steps", type=int, default=2, help="product: steps per token")
    p.add_argument("--gated", action="store_true", help="product: with a decay alpha")
    p.add_argument("--no-decay", action="store_true",
                   help="ftrl/bregman: the module has no decay gate (alpha = 1)")
    p.add_argument("--uniform-start", action="store_true",
                   help="fdiv: pass no W.npy; the module declares `init W = uniform;`, so "
                        "the runtime starts from 1/D everywhere, and so does the reference")
    a = p.parse_args()
    B, T, H, D = 2, 32, 2, a.D
    rng = np.random.default_rng(7)
    k = rng.standard_normal((B, T, H, D))
    k /= np.linalg.norm(k, axis=-1, keepdims=True)
    inp = {"q": rng.standard_normal((B, T, H, D)), "k": k,
           "v": rng.standard_normal((B, T, H, D)),
           "eta": rng.uniform(0.1, 0.5, (B, T, H))}
    params = {"c": 0.5, "a": 8.0, "b": 4.0}  # must match the test modules
    if a.rule == "product":
        n = a.steps
        k = rng.standard_normal((B, T, H, n, D))
        inp["k"] = k / np.linalg.norm(k, axis=-1, keepdims=True)
        inp["v"] = rng.standard_normal((B, T, H, n, D))
        inp["beta"] = rng.uniform(0.1, 0.9, (B, T, H, n))
        del inp["eta"]
        if a.gated:
            inp["alpha"] = rng.uniform(0.9, 1.0, (B, T, H))
        inp["W"] = 0.3 * rng.standard_normal((B, H, D, D))
    elif a.rule in ("ftrl", "bregman"):
        if not a.no_decay:
            inp["alpha"] = rng.uniform(0.9, 1.0, (B, T, H))
        inp["A"] = 0.3 * rng.standard_normal((B, H, D, D))
    elif a.rule == "prox":
        inp["W"] = 0.3 * rng.standard_normal((B, H, D, D))
    elif a.rule == "fdiv":  # rows on the simplex
        W0 = rng.uniform(0.5, 1.5, (B, H, D, D))
        inp["W"] = W0 / W0.sum(axis=-1, keepdims=True)
    else:
        inp["alpha"] = rng.uniform(0.9, 1.0, (B, T, H, D))
        inp["W"] = 0.3 * rng.standard_normal((B, H, D))

    start = {}  # initial states the reference uses but miras run is not given
    if a.uniform_start:
        if a.rule != "fdiv":
            p.error("--uniform-start is for --rule fdiv")
        start["W"] = np.full((B, H, D, D), 1.0 / D)  # uniform's default: 1/n, n = dk
        del inp["W"]

    indir, outdir = os.path.join(a.workdir, "in"), os.path.join(a.workdir, "out")
    os.makedirs(indir, exist_ok=True)
    for name, x in inp.items():
        np.save(os.path.join(indir, name + ".npy"), x.astype(np.float32))
    lib = os.path.join(a.workdir, "lib", "libmodule.so")
    subprocess.run([a.mirasc, a.module, "-DD=%d" % D, "-o", lib], check=True)
    # The fixed draws above must lie in the ranges the test module declares.
    info = json.loads(subprocess.run([a.miras, "info", lib], check=True, text=True,
                                     stdout=subprocess.PIPE).stdout)
    for g in info["gates"]:
        r = g["range"]
        if g["name"] not in inp or r is None:
            continue
        x = inp[g["name"]].astype(np.float32)
        lo = -np.inf if r["lo"] is None else np.float32(r["lo"])
        hi = np.inf if r["hi"] is None else np.float32(r["hi"])
        inside = ((x >= lo) if r["lo_closed"] else (x > lo)) & ((x <= hi) if r["hi_closed"] else (x < hi))
        if not inside.all():
            print("gate %s: drawn values outside its declared range %s" % (g["name"], r["text"]))
            return 1
    run = subprocess.run([a.miras, "run", lib, "--inputs", indir, "--outputs", outdir],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    sys.stderr.write(run.stderr)
    run.check_returncode()
    for name in start:  # the tool says where an absent state starts
        print("%s: %s" % (name, "declared init" if "starts from its declared init" in run.stderr
                          else "NOT the declared init"))
    f32 = {n: x.astype(np.float32).astype(np.float64) for n, x in inp.items()}
    f32.update(start)
    ref_o, ref_state = reference(a.rule, f32, params)
    state_name = "A" if a.rule in ("ftrl", "bregman") else "W"
    ok = True
    for name, ref in (("o", ref_o), (state_name, ref_state)):
        got = np.load(os.path.join(outdir, name + ".npy")).astype(np.float64)
        err = np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-6)
        good = err < a.tol
        ok &= good
        print("%s: max_rel_err=%.3e %s" % (name, err, "OK" if good else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
