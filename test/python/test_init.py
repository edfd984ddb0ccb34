"""Declared initial states (`init` in the DSL): Module.initial_state, and calls that
are not given a state start from it, on the CPU path without the op, through the op
(autograd) and in the backward. The expected values are computed here from the
generator runtime.h documents, not by the runtime."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import miras
from conftest import ROOT

FDIV = ROOT / "test" / "numeric" / "retention" / "fdiv.miras"

MASK = (1 << 64) - 1


def splitmix64(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def documented_normal(seed: int, scale: float, heads: int, shape) -> torch.Tensor:
    """runtime.h's MIRAS_INIT_NORMAL for one batch index: [heads, *shape]."""
    n = math.prod(shape)
    out = torch.empty(heads, n, dtype=torch.float64)
    for h in range(heads):
        key = splitmix64((splitmix64(seed) + h) & MASK)
        for e in range(n):
            r1 = splitmix64((key + 2 * e) & MASK)
            r2 = splitmix64((key + 2 * e + 1) & MASK)
            u1 = ((r1 >> 11) + 1) * 2.0 ** -53
            u2 = (r2 >> 11) * 2.0 ** -53
            out[h, e] = scale * math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
    return out.to(torch.float32).reshape(heads, *shape)


def inputs(B, T, H, D, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(B, T, H, D, generator=g)
    return (torch.randn(B, T, H, D, generator=g), k / k.norm(dim=-1, keepdim=True),
            torch.randn(B, T, H, D, generator=g), 0.1 + 0.4 * torch.rand(B, T, H, generator=g))


@pytest.fixture(scope="module")
def fdiv():
    return miras.compile(FDIV, D=8)


def test_uniform_start_is_one_over_n_and_is_what_a_call_without_state_uses(fdiv):
    start = fdiv.initial_state(2, 3)
    assert list(start) == ["W"] and start["W"].shape == (2, 3, 8, 8)
    assert torch.equal(start["W"], torch.full((2, 3, 8, 8), 1.0 / 8))
    q, k, v, eta = inputs(2, 6, 3, 8)
    o, state = fdiv(q, k, v, eta=eta)
    assert torch.isfinite(o).all() and torch.isfinite(state["W"]).all()
    o_given, state_given = fdiv(q, k, v, state={"W": start["W"]}, eta=eta)
    assert torch.equal(o, o_given) and torch.equal(state["W"], state_given["W"])
    # Every row of the final W stays on the simplex.
    torch.testing.assert_close(state["W"].sum(-1), torch.ones(2, 3, 8))


def test_autograd_path_and_backward_start_from_the_init(fdiv):
    q, k, v, eta = inputs(1, 5, 2, 8, seed=1)
    q.requires_grad_(True)
    o, _ = fdiv(q, k, v, eta=eta)
    (grad,) = torch.autograd.grad(o.square().sum(), q)
    q2 = q.detach().clone().requires_grad_(True)
    o2, _ = fdiv(q2, k, v, state=fdiv.initial_state(1, 2), eta=eta)
    (grad2,) = torch.autograd.grad(o2.square().sum(), q2)
    assert torch.isfinite(grad).all()
    assert torch.equal(o, o2) and torch.equal(grad, grad2)


def test_normal_start_reproduces_the_documented_generator(tmp_path):
    source = tmp_path / "normal.miras"
    source.write_text("""
module normal_start {
  param D = 4;
  gate eta : scalar in [0.1, 0.5];
  memory    mlp(dim = D, expansion = 2);
  bias      l2;
  retention none;
  optimizer gd(lr = eta);
  init W1 = normal(0.02, seed = 7);
  init W2 = identity(0.5);
}
""")
    m = miras.compile(source)
    start = m.initial_state(2, 3)
    w1 = documented_normal(7, 0.02, 3, (8, 4))
    torch.testing.assert_close(start["W1"][0], w1, rtol=2e-7, atol=0)
    assert torch.equal(start["W1"][1], start["W1"][0])  # not per batch index
    assert torch.equal(start["W2"], torch.eye(4, 8).mul(0.5).expand(2, 3, 4, 8))
    meta = {s["name"]: s for s in m.metadata["states"]}
    assert meta["W1"]["init"] == "normal" and meta["W1"]["init_seed"] == 7
    with pytest.raises(ValueError, match="batch must be a positive integer"):
        m.initial_state(0, 3)
