"""bench/python.sh's measurements: forward + backward through the PyTorch API against, in
the same run, the eager PyTorch recurrence (autograd), fla's naive references (fla-core,
on the CPU) where they exist, and the per-call cost of the binding against the C API.

Prints one JSON object (see bench/python.sh for the table written from it). Every
comparison also checks that the peers compute the same function: the largest relative
difference of o and of the gradients against miras is reported next to each time."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "test" / "python"))
import eager  # noqa: E402  (the tests' eager recurrences: the autograd baseline)
import miras  # noqa: E402


def median_ms(fn, repeat, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def gdn_eager(x):
    """Gated DeltaNet as a careful engineer writes it eagerly: rank-1 updates (O(D^2) per
    token), batched over (batch, head); autograd differentiates the loop."""
    W = x["W"]
    outputs = []
    for t in range(x["q"].shape[1]):
        k, v, q = x["k"][:, t], x["v"][:, t], x["q"][:, t]
        W = x["alpha"][:, t, :, None, None] * W
        error = torch.einsum("bhij,bhj->bhi", W, k) - v
        W = W - (x["eta"][:, t, :, None] * error)[..., :, None] * k[..., None, :]
        outputs.append(torch.einsum("bhij,bhj->bhi", W, q))
    return torch.stack(outputs, 1), {"W": W}


# The eager baseline of each module: the rank-1 loop for Gated DeltaNet; for the MLP
# memories the tests' recurrence (batched over (batch, head), the inner gradient by
# torch.autograd.grad with create_graph per token, as titans-pytorch differentiates its
# memory).
EAGER = {"gated_deltanet": gdn_eager}


def relative(a, b):
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).abs().max() / b.abs().max()).item()


def inputs(m, B, T, H, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = {}
    for name in ("q", "k", "v"):
        x[name] = torch.randn(m._lib.tensor_shape(name, B, T, H), generator=g)
    x["q"], x["k"] = F.normalize(x["q"], dim=-1), F.normalize(x["k"], dim=-1)
    for gate in m.metadata["gates"]:
        lo, hi = gate["sample"]
        x[gate["name"]] = lo + (hi - lo) * torch.rand(m._lib.tensor_shape(gate["name"], B, T, H), generator=g)
    for s in m.metadata["states"]:
        x[s["name"]] = torch.randn(B, H, *s["shape"], generator=g) * (0.5 / s["shape"][-1] ** 0.5)
    return x


def leaves(x, dtype=torch.float32):
    return {n: t.detach().to(dtype).requires_grad_() for n, t in x.items()}


def forward_backward(run, x, weight):
    """run(x) -> (o, final states); the loss <o, weight> + sum of the final states."""
    def step():
        for t in x.values():
            t.grad = None
        o, states = run(x)
        loss = (o * weight).sum() + sum(s.sum() for s in states.values())
        loss.backward()
        return o
    return step


def compare(name, m, B, T, H, repeat, threads):
    x = inputs(m, B, T, H)
    weight = torch.randn(B, T, H, m.metadata["dv"], generator=torch.Generator().manual_seed(1))
    report = {"module": name, "B": B, "T": T, "H": H, "D": m.metadata["dk"], "threads": threads}

    def miras_run(x):
        return m(x["q"], x["k"], x["v"], state={s: x[s] for s in m.state_names},
                 **{g: x[g] for g in m.gate_names})

    mx = leaves(x)
    step = forward_backward(miras_run, mx, weight)
    report["miras_ms"] = median_ms(step, repeat)
    o_ref = step()
    grads_ref = {n: t.grad.clone() for n, t in mx.items()}

    def peer(label, run, dtype=torch.float32, peer_repeat=repeat):
        px = leaves(x, dtype)
        pstep = forward_backward(run, px, weight.to(dtype))
        report[f"{label}_ms"] = median_ms(pstep, peer_repeat, warmup=0 if peer_repeat == 1 else 1)
        o = pstep()
        report[f"{label}_max_rel_diff"] = max(
            [relative(o, o_ref)] + [relative(px[n].grad, grads_ref[n]) for n in px])
        report[f"miras_speedup_vs_{label}"] = report[f"{label}_ms"] / report["miras_ms"]

    eager_repeat = max(1, repeat // 3)
    eager_run = EAGER.get(name, lambda x: eager.run(name, m.metadata, x))
    peer("eager", eager_run, peer_repeat=eager_repeat)
    # How far float32 itself drifts over T: the eager float32 run against the eager
    # float64 run (o). A long sequence of an MLP memory is chaotic, and then no float32
    # implementation, miras' or the peer's, can match another closely.
    o32 = eager_run(leaves(x))[0]
    o64 = eager_run(leaves(x, torch.float64))[0]
    report["eager_f32_vs_f64"] = relative(o32, o64)
    if name == "gated_deltanet":
        try:
            from fla.ops.gated_delta_rule.naive import (naive_chunk_gated_delta_rule,
                                                        naive_recurrent_gated_delta_rule)
        except ImportError as err:
            report["fla"] = f"fla-core not importable: {err}"
        else:
            # fla's state is [K, V] (ours [V, K]); its decay is g = log(alpha), its
            # learning rate beta = eta; scale 1 (miras reads W q unscaled).
            def fla_run(fn, **kw):
                def run(x):
                    o, h = fn(x["q"], x["k"], x["v"], beta=x["eta"], g=x["alpha"].log(),
                              scale=1.0, initial_state=x["W"].transpose(-1, -2),
                              output_final_state=True, **kw)
                    return o, {"W": h.transpose(-1, -2)}
                return run
            peer("fla_recurrent", fla_run(naive_recurrent_gated_delta_rule),
                 peer_repeat=eager_repeat)
            peer("fla_chunk", fla_run(naive_chunk_gated_delta_rule, chunk_size=64))
            report["fla"] = "fla-core " + __import__("importlib.metadata").metadata.version("fla-core")
    return report


def call_overhead(build, repeat=20000):
    """Per-call cost at T = 1 (B = H = 1, D = 16, no gradient): the C API (miras bench
    --json: ms, through miras_library_forward), the binding alone (_core.Library.forward over prepared
    triples) and the whole Module call."""
    m = miras.compile(ROOT / "examples" / "gated_deltanet.miras", D=16, backward=False)
    x = {n: t.detach() for n, t in inputs(m, 1, 1, 1).items()}
    state = {"W": x["W"]}

    def module_call():
        m(x["q"], x["k"], x["v"], state=state, eta=x["eta"], alpha=x["alpha"], threads=1)

    from miras._module import specs
    outs = m.output_shapes(x["q"])
    o, w = torch.empty(outs[0]), torch.empty(outs[1])
    ins = specs(m.input_names(), [x[n] for n in m.input_names()])
    outs = specs(["o", "W"], [o, w])

    def binding_call():
        m._lib.forward(ins, outs, 1)

    def per_call_us(fn):
        for _ in range(1000):
            fn()
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(repeat):
                fn()
            best = min(best, (time.perf_counter() - start) / repeat * 1e6)
        return best

    c_api = json.loads(subprocess.run(
        [str(build / "bin" / "miras"), "bench", m.path, "--batch", "1", "--length", "1",
         "--heads", "1", "--threads", "1", "--repeat", "2001", "--warmup", "100", "--json",
         "--no-reference"], check=True, capture_output=True, text=True).stdout)
    c_us = c_api["ms"] * 1e3
    binding_us, module_us = per_call_us(binding_call), per_call_us(module_call)
    return {"c_api_us": c_us, "binding_us": binding_us, "module_call_us": module_us,
            "binding_overhead_us": binding_us - c_us, "module_overhead_us": module_us - c_us}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--build", default=str(ROOT / "build"))
    p.add_argument("--length", type=int, default=1024)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--modules", default="gated_deltanet titans ttt_mlp")
    args = p.parse_args()
    build = Path(args.build)
    threads = torch.get_num_threads()
    reports = []
    for name in args.modules.split():
        m = miras.compile(ROOT / "examples" / f"{name}.miras", D=64)
        reports.append(compare(name, m, 1, args.length, 4, args.repeat, threads))
        print(json.dumps(reports[-1]), file=sys.stderr)
    result = {"torch": torch.__version__, "threads": threads, "modules": reports,
              "overhead": call_overhead(build)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
