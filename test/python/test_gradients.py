"""Every example through miras.compile: o, the final states and the gradients of a loss
with respect to q, k, v, every gate and every initial state, against the eager float64
recurrence of eager.py differentiated by torch.autograd (no code shared with the
compiler). The compiled kernels compute in float32: relative error (max |a - b| / max |b|)
below 1e-3 per tensor."""

from __future__ import annotations

import pytest
import torch

import eager
import miras
from conftest import EXAMPLES, example_names
from inputs import call, random_inputs, relative_error

TOLERANCE = 1e-3
B, T, H, D = 2, 7, 2, 8
# A threshold below the errors' norms (about sqrt(D) here) so both branches of the
# Huber bias are taken.
PARAMS = {"robust_titans": {"delta": 1.5}}


def loss_of(o, states, weights):
    """A loss reaching o and every final state, with fixed random weights."""
    total = (o * weights["o"]).sum()
    for name, s in states.items():
        total = total + (s * weights[name]).sum()
    return total


@pytest.mark.parametrize("name", example_names())
def test_gradients_match_eager_float64(name):
    m = miras.compile(EXAMPLES / f"{name}.miras", D=D, **PARAMS.get(name, {}))
    x = random_inputs(m, B, T, H, seed=1)
    g = torch.Generator().manual_seed(2)
    weights = {"o": torch.randn(B, T, H, m.metadata["dv"], dtype=torch.float64, generator=g)}
    for s in m.metadata["states"]:
        weights[s["name"]] = torch.randn(B, H, *s["shape"], dtype=torch.float64, generator=g)

    o, states = call(m, x)
    assert o.dtype == torch.float64  # returned in q's dtype
    grads = torch.autograd.grad(loss_of(o, states, weights), list(x.values()))

    ref_x = {n: t.detach().clone().requires_grad_() for n, t in x.items()}
    ref_o, ref_states = eager.run(name, m.metadata, ref_x)
    ref_grads = torch.autograd.grad(loss_of(ref_o, ref_states, weights), list(ref_x.values()))

    errors = {"o": relative_error(o, ref_o)}
    errors.update({f"{s} (final)": relative_error(states[s], ref_states[s]) for s in states})
    errors.update({f"d{n}": relative_error(a, b) for n, a, b in zip(x, grads, ref_grads)})
    bad = {k: v for k, v in errors.items() if not v < TOLERANCE}
    assert not bad, f"{name}: relative errors above {TOLERANCE}: {bad} (all: {errors})"


@pytest.mark.parametrize("name", ["gated_deltanet", "gla", "titans"])
def test_sequential_and_chunked_libraries_give_the_same_gradients(name):
    # The same chunk C, the two algorithms of SPEC section 7: the chunked forward (the
    # dual form; Titans the scan form) and the sequential one give the same numbers, and
    # so must their libraries' backward passes (today both run the sequential reverse
    # sweep with anchors: the chunked backward forms are still to come).
    seq = miras.compile(EXAMPLES / f"{name}.miras", D=D, chunk=4, algorithm="sequential")
    par = miras.compile(EXAMPLES / f"{name}.miras", D=D, chunk=4, algorithm="chunked")
    assert seq.metadata["algorithm"] == "sequential"
    assert par.metadata["algorithm"].startswith("chunked")
    x = random_inputs(seq, B, 11, H, seed=3, dtype=torch.float32)  # 11: a partial chunk
    results = []
    for m in (seq, par):
        o, states = call(m, x)
        loss = (o * o).sum() + sum((s * s).sum() for s in states.values())
        results.append([o, *states.values(), *torch.autograd.grad(loss, list(x.values()))])
    for i, (a, b) in enumerate(zip(*results)):
        assert relative_error(a, b) < 1e-5, (name, i, relative_error(a, b))


@pytest.mark.parametrize("name", ["gated_deltanet", "titans"])
def test_autograd_backward_reads_the_checkpoints_its_forward_saved(name):
    # A CPU forward autograd will differentiate saves the checkpoints (miras::forward with
    # save=True, Module.checkpoint_shapes); its backward reads them and gives the
    # recomputing backward's adjoints (the same sequential states: bit for bit).
    m = miras.compile(EXAMPLES / f"{name}.miras", D=D, chunk=1, backward_segment=3)
    x = {n: t.float().detach() for n, t in random_inputs(m, B, T, H, seed=3).items()}
    inputs = list(x.values())
    plain = torch.ops.miras.forward(m.handle, 1, inputs)
    saving = torch.ops.miras.forward(m.handle, 1, inputs, True)
    shapes = m.checkpoint_shapes(inputs[0])
    assert [tuple(c.shape) for c in saving[len(plain):]] == shapes
    assert shapes[0][2] == -(-T // 3)  # ceil(T / S) checkpoints per pair
    for a, b in zip(saving, plain):
        assert torch.equal(a, b)
    first = len(inputs) - len(m.state_names)
    assert torch.equal(saving[len(plain)][:, :, 0], inputs[first])  # the initial state
    adjoints = [torch.randn(t.shape, generator=torch.Generator().manual_seed(4)) for t in plain]
    recomputed = torch.ops.miras.backward(m.handle, 1, inputs, adjoints)
    from_saved = torch.ops.miras.backward(m.handle, 1, inputs, adjoints, saving[len(plain):])
    for a, b in zip(from_saved, recomputed):
        assert torch.equal(a, b)
    moved = [c.clone() for c in saving[len(plain):]]
    moved[0][:, :, 1] += 0.25  # read, not recomputed: a moved checkpoint moves the adjoints
    assert not torch.equal(torch.ops.miras.backward(m.handle, 1, inputs, adjoints, moved)[0],
                           recomputed[0])
    # Through autograd (the checkpoints travel from the forward to the backward).
    leaves = [t.clone().requires_grad_() for t in inputs]
    outputs = torch.ops.miras.forward(m.handle, 1, leaves, True)
    loss = sum((o * a).sum() for o, a in zip(outputs, adjoints))
    grads = torch.autograd.grad(loss, leaves)
    for a, b in zip(grads, recomputed):
        assert torch.equal(a, b)


def test_module_call_under_autograd_passes_the_saved_checkpoints(monkeypatch):
    # Module.__call__ on CPU tensors that require grad saves the checkpoints and hands
    # them to the backward (not None: the backward then skips its first pass).
    m = miras.compile(EXAMPLES / "gated_deltanet.miras", D=D, backward_segment=3)
    seen = []
    run_backward = m.run_backward

    def recording(threads, inputs, adjoints, checkpoints=None):
        seen.append(checkpoints)
        return run_backward(threads, inputs, adjoints, checkpoints)

    monkeypatch.setattr(m, "run_backward", recording)
    x = {n: t.float().detach().requires_grad_() for n, t in
         random_inputs(m, B, T, H, seed=5).items()}
    o, states = call(m, x)
    (o.sum() + sum(s.sum() for s in states.values())).backward()
    assert len(seen) == 1 and seen[0] is not None
    assert [tuple(c.shape) for c in seen[0]] == m.checkpoint_shapes(x["q"])
