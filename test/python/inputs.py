"""Random inputs of a compiled module, shaped by its runtime (miras_library_tensor_shape)
and drawn as `miras info` says (gates from their `sample` interval)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import eager


def random_inputs(m, B, T, H, seed=0, dtype=torch.float64, normalise_keys=True):
    """q, k, v, every gate and every carried initial state, as leaf tensors of `dtype`
    (a chunked module's anchors and chunk position are left out: a call that starts a
    sequence)."""
    g = torch.Generator().manual_seed(seed)
    x = {}
    for name in ("q", "k", "v"):
        shape = m._lib.tensor_shape(name, B, T, H)
        x[name] = torch.randn(shape, dtype=torch.float64, generator=g)
    if normalise_keys:  # unit keys keep the delta rules contractive, as models do
        x["k"] = F.normalize(x["k"], dim=-1)
        x["q"] = F.normalize(x["q"], dim=-1)
    for gate in m.metadata["gates"]:
        lo, hi = gate["sample"]
        shape = m._lib.tensor_shape(gate["name"], B, T, H)
        x[gate["name"]] = lo + (hi - lo) * torch.rand(shape, dtype=torch.float64, generator=g)
    for state in m.metadata["states"]:
        if state["role"] != "carried":
            continue
        shape = (B, H, *state["shape"])
        x[state["name"]] = eager.initial_state(m.name, shape, g)
    return {name: t.to(dtype).requires_grad_() for name, t in x.items()}


def call(m, x, **kwargs):
    """m(q, k, v, state=..., **gates) over an inputs dict."""
    gates = {g: x[g] for g in m.gate_names}
    state = {s: x[s] for s in m.state_names if s in x}
    return m(x["q"], x["k"], x["v"], state=state, **gates, **kwargs)


def relative_error(a, b):
    """max |a - b| / max |b| (0 when both are 0)."""
    a, b = a.detach().double(), b.detach().double()
    scale = b.abs().max().item()
    diff = (a - b).abs().max().item()
    return diff / scale if scale > 0 else diff
