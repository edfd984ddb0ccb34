"""examples/python: the recall model trained for a few steps through miras (compiled
forward and backward) and through the same model with the memory written as an eager
PyTorch recurrence (eager.py, autograd): the same losses, step by step."""

from __future__ import annotations

import sys

import torch

import eager
import miras
from conftest import EXAMPLES, ROOT

sys.path.insert(0, str(ROOT / "examples" / "python"))
from mqar import RecallModel, loss_and_accuracy, miras_memory, mqar_batch  # noqa: E402

STEPS = 6
TOLERANCE = 1e-4


def eager_memory(name, metadata):
    """The Mixer memory as eager.run in float64, the state starting at zeros or the
    network's initial weights."""
    def memory(q, k, v, state, **gates):
        B, H = q.shape[0], q.shape[2]
        x = {"q": q.double(), "k": k.double(), "v": v.double()}
        x.update({g: t.double() for g, t in gates.items()})
        for s in metadata["states"]:
            given = (state or {}).get(s["name"])
            x[s["name"]] = (given.double() if given is not None else
                            torch.zeros(B, H, *s["shape"], dtype=torch.float64))
        o, _ = eager.run(name, metadata, x)
        return o.float()
    return memory


def train(model, steps, seed):
    """The losses of `steps` Adam steps, and the mixer's parameter gradients of the first
    (the projections to q, k, v and the gates, the initial states: what only the
    module's backward reaches)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    data = torch.Generator().manual_seed(seed)
    losses, first_grads = [], None
    for _ in range(steps):
        tokens, targets = mqar_batch(4, 4, 16, generator=data)
        loss, _ = loss_and_accuracy(model, tokens, targets)
        optimizer.zero_grad()
        loss.backward()
        if first_grads is None:
            first_grads = {n: p.grad.clone() for n, p in model.named_parameters()
                           if ".mixer." in n and ".out." not in n}
        optimizer.step()
        losses.append(loss.item())
    return losses, first_grads


def run_both(name, **params):
    m = miras.compile(EXAMPLES / f"{name}.miras", **params)
    torch.manual_seed(0)
    compiled = RecallModel(16, 16, 2, 1, m.metadata, miras_memory(m))
    reference = RecallModel(16, 16, 2, 1, m.metadata, eager_memory(name, m.metadata))
    reference.load_state_dict(compiled.state_dict())
    return train(compiled, STEPS, 1), train(reference, STEPS, 1)


def check(name, **params):
    (got, got_grads), (want, want_grads) = run_both(name, **params)
    errors = [abs(a - b) / abs(b) for a, b in zip(got, want)]
    assert max(errors) < TOLERANCE, f"{name}: losses {got} against {want}"
    assert want[-1] < want[0], f"{name}: the loss did not go down: {want}"
    for n, want_grad in want_grads.items():
        scale = want_grad.abs().max().item()
        assert scale > 0, f"{name}: {n} got no gradient"
        error = (got_grads[n] - want_grad).abs().max().item() / scale
        assert error < 1e-3, f"{name}: gradient of {n} off by {error:.2e} (relative)"


def test_gated_deltanet_trains_like_the_eager_model():
    check("gated_deltanet", D=8)


def test_titans_trains_like_the_eager_model():
    # An MLP memory with momentum, its initial weights learned through the state adjoints.
    check("titans", D=8)
