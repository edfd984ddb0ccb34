"""A sequence split into calls, each given every state the one before returned (a chunked
module's anchors and chunk position too), gives the numbers and the gradients of one call
over the whole sequence, through the Python API (miras_abi.h miras_state_role)."""

from __future__ import annotations

import pytest
import torch

import miras
from conftest import EXAMPLES
from inputs import call, random_inputs, relative_error

B, T, H, D, C = 1, 11, 2, 8, 4


def compiled(algorithm):
    return miras.compile(EXAMPLES / "gated_deltanet.miras", D=D, chunk=C, algorithm=algorithm)


def chained(m, x, cuts):
    """o and the final states of the calls over [0, cuts[0]), [cuts[0], cuts[1]), ..."""
    bounds = [0, *cuts, T]
    state = {s: x[s] for s in m.state_names if s in x}
    outputs = []
    for a, b in zip(bounds, bounds[1:]):
        piece = {n: t[:, a:b] for n, t in x.items() if n in ("q", "k", "v", *m.gate_names)}
        o, state = m(piece["q"], piece["k"], piece["v"], state=state,
                     **{g: piece[g] for g in m.gate_names})
        outputs.append(o)
    return torch.cat(outputs, dim=1), state


@pytest.mark.parametrize("algorithm", ["sequential", "chunked"])
def test_split_calls_give_the_whole_call(algorithm):
    m = compiled(algorithm)
    assert [s["role"] for s in m.metadata["states"]] == ["carried", "anchor", "chunk_position"]
    x = random_inputs(m, B, T, H, seed=4, dtype=torch.float32)
    o, state = call(m, x)
    assert torch.all(state["chunk_position"] == T % C)
    tol = 1e-6 if algorithm == "sequential" else 1e-4  # the chunked form sums in another order
    for cuts in ([3, 9], [4, 8], list(range(1, T))):
        o_split, state_split = chained(m, x, cuts)
        errors = {"o": relative_error(o_split, o)}
        errors.update({s: relative_error(state_split[s], state[s]) for s in state})
        assert all(e <= tol for e in errors.values()), (algorithm, cuts, errors)


def test_gradients_through_split_calls():
    m = compiled("sequential")
    x = random_inputs(m, B, T, H, seed=5, dtype=torch.float32)
    g = torch.Generator().manual_seed(6)
    weights = torch.randn(B, T, H, D, generator=g)

    def loss(o, state):
        return (o * weights).sum() + (state["W"] ** 2).sum()

    o, state = call(m, x)
    whole = torch.autograd.grad(loss(o, state), list(x.values()))
    o, state = chained(m, x, [2, 7])
    split = torch.autograd.grad(loss(o, state), list(x.values()))
    for name, a, b in zip(x, split, whole):
        assert relative_error(a, b) < 1e-5, name


def test_a_bad_chunk_position_is_a_clear_error():
    m = compiled("sequential")
    x = random_inputs(m, B, 3, H, seed=7, dtype=torch.float32)
    state = {"W": x["W"], "chunk_position": torch.full((B, H, 1), 2.5)}
    with pytest.raises(miras.MirasError, match=r"chunk_position.*2\.5.*integer 0 <= p < 4"):
        m(x["q"], x["k"], x["v"], state=state, **{g: x[g] for g in m.gate_names})
