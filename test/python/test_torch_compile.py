"""torch.compile(fullgraph=True) over a model that calls a miras module: traced without a
graph break (fullgraph raises on one), one miras::forward in the graph, and the same
outputs and gradients as eager mode."""

from __future__ import annotations

import sys

import torch

import miras
from conftest import EXAMPLES, ROOT

sys.path.insert(0, str(ROOT / "examples" / "python"))
from mqar import RecallModel, loss_and_accuracy, miras_memory, mqar_batch  # noqa: E402

# inductor, torch.compile's default, generates and builds C++ for the rest of the model.
BACKEND = "inductor"


def test_fullgraph_compile_matches_eager():
    m = miras.compile(EXAMPLES / "gated_deltanet.miras", D=8)
    torch.manual_seed(0)
    model = RecallModel(16, 16, 2, 1, m.metadata, miras_memory(m))
    tokens, targets = mqar_batch(3, 4, 16, generator=torch.Generator().manual_seed(0))

    eager_loss, _ = loss_and_accuracy(model, tokens, targets)
    eager_loss.backward()
    eager_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(tokens)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    graph_ops = [node.target for g in explanation.graphs for node in g.graph.nodes
                 if node.op == "call_function"]
    assert graph_ops.count(torch.ops.miras.forward.default) == 1, graph_ops

    compiled = torch.compile(model, fullgraph=True, backend=BACKEND)
    loss, _ = loss_and_accuracy(compiled, tokens, targets)
    loss.backward()
    assert torch.allclose(loss, eager_loss, rtol=1e-6, atol=0)
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, eager_grads[n], rtol=1e-5, atol=1e-7), n


def test_fake_kernels_give_the_output_shapes():
    m = miras.compile(EXAMPLES / "titans.miras", D=8)
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        B, T, H = 2, 5, 3
        inputs = [torch.empty(m._lib.tensor_shape(n, B, T, H)) for n in ("q", "k", "v")]
        inputs += [torch.empty(m._lib.tensor_shape(g, B, T, H)) for g in m.gate_names]
        inputs += [torch.empty(B, H, *m.state_shapes[s]) for s in m.state_names]
        outputs = torch.ops.miras.forward(m.handle, 0, inputs)
        assert [tuple(o.shape) for o in outputs] == m.output_shapes(inputs[0])
        grads = torch.ops.miras.backward(m.handle, 0, inputs, outputs)
        assert [g.shape for g in grads] == [t.shape for t in inputs]
    real = [(torch.randn(t.shape) * 0.1).requires_grad_() for t in inputs]
    torch.library.opcheck(torch.ops.miras.forward.default, (m.handle, 1, real))
    adjoints = [torch.randn(shape) for shape in m.output_shapes(real[0])]
    torch.library.opcheck(torch.ops.miras.backward.default,
                          (m.handle, 1, [t.detach() for t in real], adjoints))


def test_dynamic_shapes_compile_once_and_match_eager():
    m = miras.compile(EXAMPLES / "gated_deltanet.miras", D=8)
    torch.manual_seed(0)
    model = RecallModel(16, 16, 2, 1, m.metadata, miras_memory(m))
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend="aot_eager")
    for pairs in (3, 5):  # sequences of 9 and 15 tokens through one graph
        tokens, targets = mqar_batch(2, pairs, 16, generator=torch.Generator().manual_seed(pairs))
        want, _ = loss_and_accuracy(model, tokens, targets)
        got, _ = loss_and_accuracy(compiled, tokens, targets)
        assert torch.allclose(got, want, rtol=1e-6, atol=0), (pairs, got, want)
