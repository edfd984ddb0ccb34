"""Eager PyTorch recurrences of the example modules, for the Python tests.

Written from SPEC.md and the header comment of each examples/*.miras, independently of
the compiler: nothing here reads its IR or shares its code. The linear memories are
typed in as their papers' closed forms (DeltaNet as W (I - eta k k^T) + eta v k^T, never
through an error signal); the MLP memories get their inner gradient from torch.autograd
over the inner loss written below (create_graph=True, so the outer autograd differentiates
through it, Hessian-vector products included). Every function takes float64 tensors in
the SPEC layout and returns (o [B, T, H, Dv], {state name: final state}); autograd
through it is the reference for miras' compiled backward.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# -- helpers over [B, H, ...] -------------------------------------------------------


def outer(a, b):
    return a[..., :, None] * b[..., None, :]


def mv(W, x):
    return torch.einsum("bhij,bhj->bhi", W, x)


def scalar(g, t):
    """A scalar gate [B, T, H] at token t, broadcastable over [B, H, Dv, Dk]."""
    return g[:, t, :, None, None]


def eye_like(W):
    return torch.eye(W.shape[-1], dtype=W.dtype).expand_as(W)


# -- linear memories: closed forms --------------------------------------------------


def _delta_projector(k, c):
    """I - c k k^T for a per-(batch, head) c [B, H, 1, 1]."""
    return torch.eye(k.shape[-1], dtype=k.dtype) - c * outer(k, k)


def linear_step(name, params):
    """step(W, x, t) -> W' for the linear examples; x: the inputs dict."""
    def step(W, x, t):
        k, v = x["k"][:, t], x["v"][:, t]
        if name == "linear_attention":
            return W + outer(v, k)
        if name == "mamba2":
            return scalar(x["alpha"], t) * W + outer(v, k)
        if name == "retnet":
            return params["gamma"] * W + outer(v, k)
        if name in ("gla", "hgrn2"):
            return W * x["alpha"][:, t, :, None, :] + outer(v, k)
        if name == "deltanet":
            eta = scalar(x["eta"], t)
            return W @ _delta_projector(k, eta) + eta * outer(v, k)
        if name == "gated_deltanet":
            eta = scalar(x["eta"], t)
            return scalar(x["alpha"], t) * W @ _delta_projector(k, eta) + eta * outer(v, k)
        if name == "rwkv7":
            eta = scalar(x["eta"], t)
            decayed = W * x["alpha"][:, t, :, None, :]
            return decayed @ _delta_projector(k, eta) + eta * outer(v, k)
        if name == "longhorn":
            eta = scalar(x["eta"], t)
            c = eta / (1 + eta * (k * k).sum(-1)[..., None, None])
            return W @ _delta_projector(k, c) + c * outer(v, k)
        if name == "ttt_linear":
            lr = params["inner_lr"]
            return W - lr * outer(mv(W, k) - v, k)
        if name == "logcosh_gated_delta":
            decayed = scalar(x["alpha"], t) * W
            return decayed - scalar(x["eta"], t) * outer(torch.tanh(mv(decayed, k) - v), k)
        if name == "deltaproduct":
            for j in range(x["k"].shape[3]):
                kj, vj = x["k"][:, t, :, j], x["v"][:, t, :, j]
                beta = x["beta"][:, t, :, j, None, None]
                W = W @ _delta_projector(kj, beta) + beta * outer(vj, kj)
            return W
        raise KeyError(name)
    return step


LINEAR = ("linear_attention", "mamba2", "retnet", "gla", "hgrn2", "deltanet",
          "gated_deltanet", "rwkv7", "longhorn", "ttt_linear", "logcosh_gated_delta",
          "deltaproduct")


def run_linear(name, params, x, read_after_write=True):
    step = linear_step(name, params)
    W = x["W"]
    outputs = []
    for t in range(x["q"].shape[1]):
        new = step(W, x, t)
        outputs.append(mv(new if read_after_write else W, x["q"][:, t]))
        W = new
    return torch.stack(outputs, 1), {"W": W}


# -- MLP memories: inner gradient by autograd ---------------------------------------

MLP = {
    # name: (activation, residual + layernorm, inner loss, update)
    "ttt_mlp": ("gelu_tanh", True, "l2", "gd"),
    "titans": ("silu", False, "l2", "momentum"),
    "robust_titans": ("silu", False, "huber_norm", "momentum"),
    "moneta": ("gelu", True, "l3", "lq4"),
    "memora": ("gelu", True, "l2", "kl"),
    "yaad": ("gelu", True, "yaad", "gd_decay"),
}


def _act(name, h):
    if name == "gelu":
        return F.gelu(h)
    if name == "gelu_tanh":
        return F.gelu(h, approximate="tanh")
    if name == "silu":
        return F.silu(h)
    raise KeyError(name)


def mlp_memory(weights, z, act, residual_ln):
    """f(W; z) = W2 act(W1 z), or z + LN(W2 act(W1 z)) (LN without affine, eps 1e-5)."""
    h = z
    for i, W in enumerate(weights):
        h = mv(W, h)
        if i + 1 < len(weights):
            h = _act(act, h)
    if residual_ln:
        h = z + F.layer_norm(h, h.shape[-1:], eps=1e-5)
    return h


def inner_loss(kind, y, v, x, t, params):
    """Summed over (batch, head): each pair's gradient is its own term's."""
    e = y - v
    if kind == "l2":
        return 0.5 * (e * e).sum()
    if kind == "l3":  # lp, p = 3: sum |e|^3
        return e.abs().pow(3).sum()
    if kind == "huber_norm":
        delta = params["delta"]
        norm = e.norm(dim=-1)
        return torch.where(norm <= delta, 0.5 * norm ** 2, delta * (norm - delta / 2)).sum()
    if kind == "yaad":  # l2 below delta_t, else delta_t * smoothed l1 (psi = delta tanh(10 e))
        delta = x["delta"][:, t, :, None]
        kappa = 10.0
        small = (e.norm(dim=-1, keepdim=True) <= delta)
        l1 = delta / kappa * (kappa * e).cosh().log()
        return torch.where(small, 0.5 * e * e, l1).sum()
    raise KeyError(kind)


def _lq_map(A):
    """A / ||A||_4^2 per tensor and head (0 at A = 0)."""
    norm2 = (A ** 4).sum(dim=(-2, -1), keepdim=True).sqrt()
    return torch.where(norm2 > 0, A / torch.where(norm2 > 0, norm2, 1.0), 0.0)


def run_mlp(name, params, x, state_names, read_after_write=True):
    act, residual_ln, loss_kind, update = MLP[name]
    n = sum(1 for s in state_names if s[0] in "WA")
    weights_of = {
        "lq4": lambda st: [_lq_map(st[f"A{i + 1}"]) for i in range(n)],
        "kl": lambda st: [torch.softmax(st[f"A{i + 1}"], dim=-1) for i in range(n)],
    }.get(update, lambda st: [st[f"W{i + 1}"] for i in range(n)])
    state = {s: x[s] for s in state_names}
    outputs = []
    for t in range(x["q"].shape[1]):
        k, v, q = x["k"][:, t], x["v"][:, t], x["q"][:, t]
        weights = weights_of(state)
        loss = inner_loss(loss_kind, mlp_memory(weights, k, act, residual_ln), v, x, t, params)
        grads = torch.autograd.grad(loss, weights, create_graph=True)
        new = {}
        for i, g in enumerate(grads):
            w, a, s = f"W{i + 1}", f"A{i + 1}", f"S{i + 1}"
            if update == "gd":
                new[w] = state[w] - scalar(x["eta"], t) * g
            elif update == "gd_decay":
                new[w] = scalar(x["alpha"], t) * state[w] - scalar(x["eta"], t) * g
            elif update == "momentum":
                new[s] = scalar(x["mu"], t) * state[s] - scalar(x["theta"], t) * g
                new[w] = scalar(x["alpha"], t) * state[w] + new[s]
            else:  # mirror maps: the dual steps, W = map(A)
                new[a] = scalar(x["alpha"], t) * state[a] - scalar(x["eta"], t) * g
        read = weights_of(new) if read_after_write else weights
        outputs.append(mlp_memory(read, q, act, residual_ln))
        state = new
    return torch.stack(outputs, 1), state


def run(name, metadata, x):
    """The eager recurrence of example `name` over the inputs dict x (float64)."""
    params = {p["name"]: p["value"] for p in metadata["params"]}
    after = metadata["read"] == "after_write"
    if name in LINEAR:
        return run_linear(name, params, x, after)
    return run_mlp(name, params, x, [s["name"] for s in metadata["states"]], after)


def initial_state(name, shape, generator):
    """A random initial state of a moderate scale (1/sqrt(fan-in) for MLP weights)."""
    scale = 0.5 / math.sqrt(shape[-1])
    return torch.randn(shape, dtype=torch.float64, generator=generator) * scale
