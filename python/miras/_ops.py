"""The torch.library custom ops behind miras.Module: forward, backward, their fake
kernels and the autograd formula, so that autograd and torch.compile(fullgraph=True)
see one opaque op per module call.

    miras::forward(int handle, int threads, Tensor[] inputs) -> Tensor[]
        inputs: q, k, v, the gates and the initial states in metadata order (float32,
        contiguous; bfloat16 q, k, v and gates on CUDA); outputs: o, the final states.
    miras::backward(int handle, int threads, Tensor[] inputs, Tensor[] adjoints) -> Tensor[]
        adjoints: d o and the adjoint of every final state; outputs: the adjoint of every
        input, in the order of inputs.
"""

from __future__ import annotations

import torch

from ._module import module_for


@torch.library.custom_op("miras::forward", mutates_args=(), device_types="cpu")
def forward(handle: int, threads: int, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    return module_for(handle).run_forward(threads, inputs)


@forward.register_kernel("cuda")
def _forward_cuda(handle: int, threads: int, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    return module_for(handle).run_forward_cuda(inputs)


@forward.register_fake
def _forward_fake(handle, threads, inputs):
    q = inputs[0]
    return [q.new_empty(shape, dtype=torch.float32) for shape in module_for(handle).output_shapes(q)]


@torch.library.custom_op("miras::backward", mutates_args=(), device_types="cpu")
def backward(handle: int, threads: int, inputs: list[torch.Tensor],
             adjoints: list[torch.Tensor]) -> list[torch.Tensor]:
    return module_for(handle).run_backward(threads, inputs, adjoints)


@backward.register_kernel("cuda")
def _backward_cuda(handle: int, threads: int, inputs: list[torch.Tensor],
                   adjoints: list[torch.Tensor]) -> list[torch.Tensor]:
    return module_for(handle).run_backward_cuda(inputs, adjoints)


@backward.register_fake
def _backward_fake(handle, threads, inputs, adjoints):
    return [torch.empty_like(t, dtype=torch.float32) for t in inputs]  # as the kernels give


def _setup_context(ctx, inputs, output):
    handle, threads, tensors = inputs
    ctx.handle, ctx.threads = handle, threads
    # The module itself, so the backward finds it even when its user let it go.
    ctx.module = module_for(handle)
    ctx.save_for_backward(*tensors)


def _backward_formula(ctx, grads):
    inputs = list(ctx.saved_tensors)
    outputs_like = ctx.module.output_shapes(inputs[0])
    # An output that reaches no loss has no gradient: its adjoint is zero.
    adjoints = [g if g is not None else inputs[0].new_zeros(shape, dtype=torch.float32)
                for g, shape in zip(grads, outputs_like)]
    return None, None, backward(ctx.handle, ctx.threads, inputs, adjoints)


torch.library.register_autograd("miras::forward", _backward_formula, setup_context=_setup_context)
