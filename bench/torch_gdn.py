#!/usr/bin/env python3
"""The Gated DeltaNet recurrence in PyTorch on the GPU: the side-by-side peer of bench/gpu.sh.

    W_t = alpha_t W_{t-1} - eta_t (alpha_t W_{t-1} k_t - v_t) k_t^T,   o_t = W_t q_t

(examples/gated_deltanet.miras, SPEC.md) written as PyTorch users write it: a Python loop
over time with batched [B, H, D, D] state ops, float32 state. Prints one JSON line: ms
per forward (median), tokens/s. With --fla, also times fla's chunk_gated_delta_rule (the
flash-linear-attention Triton kernels) when that package is importable.
"""
import argparse
import json
import sys
import time


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=4096)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--dtype", choices=("f32", "bf16"), default="f32",
                   help="dtype of q, k, v and the gates (the state stays float32)")
    a = p.parse_args()
    try:
        import torch
    except ImportError:
        print(json.dumps({"peer": "pytorch", "error": "torch is not installed"}))
        return 0
    if not torch.cuda.is_available():
        print(json.dumps({"peer": "pytorch", "error": "torch sees no CUDA device"}))
        return 0
    dev = torch.device("cuda")
    B, T, H, D = a.batch, a.length, a.heads, a.dim
    g = torch.Generator(device=dev).manual_seed(0)
    dt = torch.float32 if a.dtype == "f32" else torch.bfloat16
    q = torch.nn.functional.normalize(torch.randn(B, T, H, D, device=dev, generator=g), dim=-1).to(dt)
    k = torch.nn.functional.normalize(torch.randn(B, T, H, D, device=dev, generator=g), dim=-1).to(dt)
    v = torch.randn(B, T, H, D, device=dev, generator=g).to(dt)
    eta = torch.rand(B, T, H, device=dev, generator=g).mul(0.5).to(dt)
    alpha = torch.rand(B, T, H, device=dev, generator=g).mul(0.1).add(0.9).to(dt)

    @torch.no_grad()
    def recurrent():
        W = torch.zeros(B, H, D, D, device=dev, dtype=torch.float32)
        o = torch.empty(B, T, H, D, device=dev, dtype=torch.float32)
        for t in range(T):
            qt, kt, vt = q[:, t].float(), k[:, t].float(), v[:, t].float()
            W = alpha[:, t].float()[..., None, None] * W
            u = eta[:, t].float()[..., None] * (torch.einsum("bhij,bhj->bhi", W, kt) - vt)
            W = W - u[..., :, None] * kt[..., None, :]
            o[:, t] = torch.einsum("bhij,bhj->bhi", W, qt)
        return o

    def timed(fn):
        fn()  # warm-up (and compilation for Triton)
        times = []
        for _ in range(a.repeat):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            times.append((time.perf_counter() - t0) * 1e3)
        times.sort()
        return times[len(times) // 2]

    ms = timed(recurrent)
    out = {"peer": "pytorch recurrent loop", "torch": torch.__version__,
           "device_name": torch.cuda.get_device_name(), "dtype": a.dtype,
           "batch": B, "length": T, "heads": H, "dim": D, "ms": ms,
           "tokens_per_s": B * T / (ms / 1e3)}
    print(json.dumps(out))
    try:
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule
    except ImportError:
        print(json.dumps({"peer": "fla chunk_gated_delta_rule", "error": "fla is not installed"}))
        return 0
    # fla takes log-decays and bf16/f32 inputs laid out [B, T, H, D]: the same problem.
    gl = alpha.float().log()

    @torch.no_grad()
    def fla():
        return chunk_gated_delta_rule(q, k, v, gl, eta, output_final_state=True)

    ms = timed(fla)
    print(json.dumps({"peer": "fla chunk_gated_delta_rule", "dtype": a.dtype, "batch": B,
                      "length": T, "heads": H, "dim": D, "ms": ms,
                      "tokens_per_s": B * T / (ms / 1e3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
