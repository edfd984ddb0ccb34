"""The package on a GPU (skipped where torch sees none: run by bench/gpu.sh on a GPU
machine): CUDA tensors through the library's CUDA kernels on torch's current stream,
forward and backward, against the same library's CPU kernels."""

from __future__ import annotations

import pytest
import torch

import miras
from conftest import EXAMPLES
from inputs import call, random_inputs, relative_error

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device visible to torch")


@pytest.mark.parametrize("name", ["gated_deltanet", "titans"])
def test_cuda_forward_and_gradients_match_the_cpu(name):
    m = miras.compile(EXAMPLES / f"{name}.miras", D=16, target="cpu,cuda")
    assert m.has_cuda
    x = random_inputs(m, 2, 9, 3, dtype=torch.float32)
    gpu = {n: t.detach().cuda().requires_grad_() for n, t in x.items()}
    o, states = call(m, x)
    o_gpu, states_gpu = call(m, gpu)
    assert o_gpu.is_cuda and relative_error(o_gpu.cpu(), o) < 1e-4
    loss = (o * o).sum() + sum(s.sum() for s in states.values())
    loss_gpu = (o_gpu * o_gpu).sum() + sum(s.sum() for s in states_gpu.values())
    grads = torch.autograd.grad(loss, list(x.values()))
    grads_gpu = torch.autograd.grad(loss_gpu, list(gpu.values()))
    for n, a, b in zip(x, grads_gpu, grads):
        assert a.is_cuda and relative_error(a.cpu(), b) < 1e-4, n


def test_cuda_bfloat16_forward_and_a_cpu_only_library():
    m = miras.compile(EXAMPLES / "gated_deltanet.miras", D=16, target="cpu,cuda")
    x = {n: t.detach() for n, t in random_inputs(m, 1, 6, 2, dtype=torch.float32).items()}
    half = {n: (t.to(torch.bfloat16) if n not in m.state_names else t).cuda()
            for n, t in x.items()}
    rounded = {n: t.float().cpu() for n, t in half.items()}
    o, _ = call(m, half)
    assert o.dtype == torch.bfloat16
    assert relative_error(o.float().cpu(), call(m, rounded)[0]) < 2e-2
    cpu_only = miras.compile(EXAMPLES / "gated_deltanet.miras", D=16)
    with pytest.raises(miras.MirasError, match="has no CUDA kernels"):
        call(cpu_only, {n: t.cuda() for n, t in x.items()})
