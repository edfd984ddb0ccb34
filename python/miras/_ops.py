"""The torch.library custom ops behind miras.Module: forward, backward, their fake
kernels and the autograd formula, so that autograd and torch.compile(fullgraph=True)
see one opaque op per module call.

    miras::forward(int handle, int threads, Tensor[] inputs, bool save=False) -> Tensor[]
        inputs: q, k, v, the gates and the initial states in metadata order (float32,
        contiguous; bfloat16 q, k, v and gates on CUDA); outputs: o, the final states and,
        with save (CPU, a library with a backward), every carried state's checkpoints
        (Module.checkpoint_shapes), which the autograd formula passes to the backward.
    miras::backward(int handle, int threads, Tensor[] inputs, Tensor[] adjoints,
                    Tensor[]? checkpoints=None) -> Tensor[]
        adjoints: d o and the adjoint of every final state; checkpoints: what a saving
        forward returned (None: the backward computes them); outputs: the adjoint of
        every input, in the order of inputs.
"""

from __future__ import annotations

from typing import Optional

import torch

from ._module import module_for


@torch.library.custom_op("miras::forward", mutates_args=(), device_types="cpu")
def forward(handle: int, threads: int, inputs: list[torch.Tensor],
            save: bool = False) -> list[torch.Tensor]:
    return module_for(handle).run_forward(threads, inputs, save)


@forward.register_kernel("cuda")
def _forward_cuda(handle: int, threads: int, inputs: list[torch.Tensor],
                  save: bool = False) -> list[torch.Tensor]:
    return module_for(handle).run_forward_cuda(inputs)  # the CUDA backward saves none


def _saves(module, q, save):
    return save and q.device.type == "cpu" and module._saves_checkpoints


@forward.register_fake
def _forward_fake(handle, threads, inputs, save=False):
    q, module = inputs[0], module_for(handle)
    shapes = module.output_shapes(q)
    if _saves(module, q, save):
        shapes = shapes + module.checkpoint_shapes(q)
    return [q.new_empty(shape, dtype=torch.float32) for shape in shapes]


@torch.library.custom_op("miras::backward", mutates_args=(), device_types="cpu")
def backward(handle: int, threads: int, inputs: list[torch.Tensor],
             adjoints: list[torch.Tensor],
             checkpoints: Optional[list[torch.Tensor]] = None) -> list[torch.Tensor]:
    return module_for(handle).run_backward(threads, inputs, adjoints, checkpoints)


@backward.register_kernel("cuda")
def _backward_cuda(handle: int, threads: int, inputs: list[torch.Tensor],
                   adjoints: list[torch.Tensor],
                   checkpoints: Optional[list[torch.Tensor]] = None) -> list[torch.Tensor]:
    return module_for(handle).run_backward_cuda(inputs, adjoints)


@backward.register_fake
def _backward_fake(handle, threads, inputs, adjoints, checkpoints=None):
    return [torch.empty_like(t, dtype=torch.float32) for t in inputs]  # as the kernels give


def _setup_context(ctx, inputs, output):
    handle, threads, tensors, save = inputs
    ctx.handle, ctx.threads = handle, threads
    # The module itself, so the backward finds it even when its user let it go.
    ctx.module = module_for(handle)
    ctx.num_inputs = len(tensors)
    checkpoints = output[1 + len(ctx.module.state_names):]
    ctx.mark_non_differentiable(*checkpoints)
    ctx.save_for_backward(*tensors, *checkpoints)


def _backward_formula(ctx, grads):
    saved = list(ctx.saved_tensors)
    inputs, checkpoints = saved[:ctx.num_inputs], saved[ctx.num_inputs:]
    outputs_like = ctx.module.output_shapes(inputs[0])
    # An output that reaches no loss has no gradient: its adjoint is zero.
    adjoints = [g if g is not None else inputs[0].new_zeros(shape, dtype=torch.float32)
                for g, shape in zip(grads, outputs_like)]
    return None, None, backward(ctx.handle, ctx.threads, inputs, adjoints,
                                checkpoints or None), None


torch.library.register_autograd("miras::forward", _backward_formula, setup_context=_setup_context)
