"""Training-step time of an SSN against the plain model, side by side in one run.

For each model and budget: one training step (forward, backward, SGD step) on the same
batch, the plain model and the SSN interleaved step by step so that both see the same
machine state; the median of the steps is reported, and the ratio SSN / plain. The
materialised SSN (``allocator.materialize``) is timed the same way, for training and for
inference.

    python benchmarks/bench_step.py                  # all models, JSON to benchmarks/results/
    python benchmarks/bench_step.py --models transformer-4x256 --steps 10
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import allocator
from trials.zoo import build_model

RESULTS = Path(__file__).resolve().parent / "results"

# (spec, input shape, batch): WRN-16-4 on CIFAR shape, batch 64; a 4-layer Transformer
# encoder classifier (d_model 256) over sequences of 128 positions.
MODELS = {
    "wrn-16-4": ((3, 32, 32), 64),
    "transformer-4x256": ((64, 128), 32),
}


def _step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    t0 = time.perf_counter()
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - t0


def _infer(model: nn.Module, x: torch.Tensor) -> float:
    t0 = time.perf_counter()
    with torch.no_grad():
        model(x)
    return time.perf_counter() - t0


def _interleaved(fns: dict[str, Callable[[], float]], steps: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(steps):
        for k, fn in fns.items():
            times[k].append(fn())
    return {k: statistics.median(v) for k, v in times.items()}


def bench_model(spec: str, budgets: list[float], steps: int, warmup: int) -> list[dict]:
    shape, batch = MODELS[spec]
    torch.manual_seed(0)
    x = torch.randn(batch, *shape)
    y = torch.randint(0, 10, (batch,))
    rows = []
    for budget in budgets:
        plain = build_model(spec, input_shape=shape, num_classes=10)
        ssn = allocator.shapeshift(plain, budget, mapping="roundrobin", groups=4,
                                   downsample="emb", upsample="inter")
        mat = allocator.materialize(ssn)
        models = {"plain": plain, "ssn": ssn, "materialized": mat}
        for m in models.values():
            m.train()
        opts = {k: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for k, m in models.items()}
        train = _interleaved(
            {k: (lambda m=m, o=opts[k]: _step(m, o, x, y)) for k, m in models.items()}, steps, warmup
        )
        for m in models.values():
            m.eval()
        infer = _interleaved({k: (lambda m=m: _infer(m, x)) for k, m in models.items()}, steps, warmup)
        row = {
            "model": spec,
            "budget": budget,
            "batch": batch,
            "params_plain": allocator.count_parameters(plain),
            "params_ssn": allocator.count_parameters(ssn),
            "step_s": train,
            "infer_s": infer,
            "step_ratio_ssn": train["ssn"] / train["plain"],
            "step_ratio_materialized": train["materialized"] / train["plain"],
            "infer_ratio_ssn": infer["ssn"] / infer["plain"],
            "infer_ratio_materialized": infer["materialized"] / infer["plain"],
        }
        print(
            f"{spec:18s} budget {budget:<4} params {row['params_ssn']:>10,} / {row['params_plain']:,}"
            f"  step plain {train['plain']*1e3:7.1f} ms  ssn {row['step_ratio_ssn']:.3f}x"
            f"  materialized {row['step_ratio_materialized']:.3f}x"
            f"  inference ssn {row['infer_ratio_ssn']:.3f}x materialized "
            f"{row['infer_ratio_materialized']:.3f}x",
            flush=True,
        )
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--budgets", nargs="+", type=float, default=[0.1, 0.5, 4.0])
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "step.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for spec in args.models:
        rows += bench_model(spec, args.budgets, args.steps, args.warmup)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": "python benchmarks/bench_step.py " + " ".join(
            f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items() if k != "out"
        ),
        "torch": torch.__version__,
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
        "mapping": "roundrobin, 4 groups, emb / inter",
    }
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
