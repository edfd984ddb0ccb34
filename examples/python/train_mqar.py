#!/usr/bin/env python3
"""Train a small recall model (mqar.py) with any .miras module on MQAR, on the CPU.

    build/venv/bin/python examples/python/train_mqar.py --module examples/gated_deltanet.miras

Data is generated on the fly; the script prints a progress bar (loss, recall accuracy)
and at the end the recall accuracy on fresh held-out batches against chance
(1 / number of value tokens). --json writes the result as JSON too.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import miras  # noqa: E402
from mqar import RecallModel, loss_and_accuracy, miras_memory, mqar_batch  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--module", default=str(ROOT / "examples" / "gated_deltanet.miras"),
                   help="the .miras file (default: examples/gated_deltanet.miras)")
    p.add_argument("--head-dim", type=int, default=32, help="D of the module (-DD=...)")
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--vocab", type=int, default=128, help="keys: the first half, values: the rest")
    p.add_argument("--pairs", type=int, default=16, help="key-value pairs per sequence")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seconds", type=float, default=0,
                   help="stop training after this many seconds (0: run every step)")
    p.add_argument("--threads", type=int, default=0, help="torch and kernel threads (0: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-batches", type=int, default=8)
    p.add_argument("--json", help="write the result to this file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def progress(total, enabled):
    try:
        from tqdm import tqdm
    except ImportError:  # the bar is a convenience; training does not need it
        tqdm = None
    if tqdm is None or not enabled:
        return None
    return tqdm(total=total, unit="step", dynamic_ncols=True)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    module = miras.compile(args.module, D=args.head_dim)
    model = RecallModel(args.vocab, args.d_model, args.heads, args.layers, module.metadata,
                        miras_memory(module))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * s / args.steps)))
    data = torch.Generator().manual_seed(args.seed + 1)
    bar = progress(args.steps, not args.no_progress)
    start = time.perf_counter()
    steps_done, loss_value = 0, float("nan")
    for step in range(args.steps):
        tokens, targets = mqar_batch(args.batch, args.pairs, args.vocab, generator=data)
        loss, accuracy = loss_and_accuracy(model, tokens, targets)
        if not torch.isfinite(loss):
            print(f"step {step}: the loss is {loss.item()}", file=sys.stderr)
            return 1
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        steps_done, loss_value = step + 1, loss.item()
        if bar is not None:
            bar.set_postfix(loss=f"{loss_value:.3f}", recall=f"{accuracy.item():.2f}", refresh=False)
            bar.update()
        if args.seconds and time.perf_counter() - start > args.seconds:
            break
    if bar is not None:
        bar.close()
    train_seconds = time.perf_counter() - start

    held_out = torch.Generator().manual_seed(10_000 + args.seed)
    correct = []
    with torch.no_grad():
        for _ in range(args.eval_batches):
            tokens, targets = mqar_batch(args.batch, args.pairs, args.vocab, generator=held_out)
            correct.append(loss_and_accuracy(model, tokens, targets)[1].item())
    chance = 1 / (args.vocab - args.vocab // 2)
    result = {
        "module": module.name, "source": args.module, "steps": steps_done,
        "train_seconds": round(train_seconds, 1), "final_loss": loss_value,
        "recall": sum(correct) / len(correct), "chance": chance,
        "pairs": args.pairs, "vocab": args.vocab, "head_dim": args.head_dim,
        "heads": args.heads, "d_model": args.d_model, "layers": args.layers,
    }
    print(f"{module.name}: recall {result['recall']:.3f} on held-out batches (chance "
          f"{chance:.3f}) after {steps_done} steps, {train_seconds:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
