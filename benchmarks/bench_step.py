"""Training-step time of an SSN against the plain model, side by side in one run.

For each model and budget: one training step (forward, backward, SGD step) on the same
batch, the plain model and the SSN (in several settings) interleaved step by step so that
all see the same
machine state; the median of the steps is reported, and the ratio SSN / plain. The
materialised SSN (``allocator.materialize``) is timed the same way, for training and for
inference.

    python benchmarks/bench_step.py                  # all models, JSON to benchmarks/results/
    python benchmarks/bench_step.py --models transformer-4x256 --steps 10
    python benchmarks/bench_step.py --models bert-2x64 gpt2-2x64 --budgets 0.1 4.0 \
        --threads 1 --clock cpu                      # on a busy machine
    python benchmarks/bench_step.py --table benchmarks/results/step.json \
        benchmarks/results/step_small.json           # README's table, nothing run
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import allocator
from trials.zoo import build_model

RESULTS = Path(__file__).resolve().parent / "results"

# (input shape, batch) of the zoo's models: WRN-16-4 on CIFAR shape, batch 64; a 4-layer
# Transformer encoder classifier (d_model 256) over sequences of 128 positions.
ZOO = {
    "wrn-16-4": ((3, 32, 32), 64),
    "transformer-4x256": ((64, 128), 32),
}
# transformers' models built from their configs (default vocabularies), LAYERSxHIDDEN, at
# both ends of the range (hidden 64-128, 2-4 layers): batch 16 x 128 tokens.
HF = ("bert-2x64", "gpt2-2x64", "bert-4x128", "gpt2-4x128")
MODELS = (*ZOO, *HF)
TOKENS = (16, 128)

# SSN settings timed against the plain model: shapeshift's defaults; one group of 4
# templates with `emb` (the paper's code's high-budget setting); round robin over 4 groups.
SETTINGS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "1 group x 4 templates, emb": {"groups": 1, "templates": 4, "downsample": "emb"},
    "roundrobin 4 groups, emb": {"mapping": "roundrobin", "groups": 4, "downsample": "emb"},
}


def _build(spec: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The plain model and one batch (inputs, labels)."""
    torch.manual_seed(0)
    if spec in ZOO:
        shape, batch = ZOO[spec]
        x = torch.randn(batch, *shape)
        return build_model(spec, input_shape=shape, num_classes=10), x, torch.randint(0, 10, (batch,))
    import transformers

    kind, _, size = spec.partition("-")
    layers, hidden = (int(v) for v in size.split("x"))
    heads = hidden // 32
    if kind == "bert":
        model: nn.Module = transformers.BertForSequenceClassification(transformers.BertConfig(
            hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=4 * hidden, num_labels=10))
    else:
        model = transformers.GPT2ForSequenceClassification(transformers.GPT2Config(
            n_embd=hidden, n_layer=layers, n_head=heads, num_labels=10, pad_token_id=0))
    x = torch.randint(1, 1000, TOKENS)
    return model, x, torch.randint(0, 10, (TOKENS[0],))


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out if isinstance(out, torch.Tensor) else out.logits


# The clock: wall time (default), or this process's CPU time (`--clock cpu`), which a
# machine busy with other work disturbs much less (with `--threads 1` it is the step's
# compute; with more threads it adds up the threads' time).
CLOCK = time.perf_counter


def _step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
          y: torch.Tensor) -> tuple[float, float]:
    """(whole step, of which the optimizer's update)."""
    t0 = CLOCK()
    loss = F.cross_entropy(_logits(model, x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    t1 = CLOCK()
    opt.step()
    t2 = CLOCK()
    return t2 - t0, t2 - t1


def _infer(model: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    t0 = CLOCK()
    with torch.no_grad():
        _logits(model, x)
    return CLOCK() - t0, 0.0


def _interleaved(fns: dict[str, Callable[[], tuple[float, float]]], steps: int,
                 warmup: int) -> tuple[dict[str, float], dict[str, float]]:
    """Medians of each function's (time, part of it) over ``steps`` interleaved runs."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in fns}
    for _ in range(steps):
        for k, fn in fns.items():
            times[k].append(fn())
    return ({k: statistics.median(t for t, _ in v) for k, v in times.items()},
            {k: statistics.median(p for _, p in v) for k, v in times.items()})


def bench_model(spec: str, budgets: list[float], steps: int, warmup: int, *,
                fused: bool = False) -> Iterator[dict]:
    """Per budget: the plain model, the SSN in every setting and the materialised
    default SSN, trained step by step in turn; then inference of plain, SSN, materialised."""
    for budget in budgets:
        plain, x, y = _build(spec)
        models: dict[str, nn.Module] = {"plain": plain}
        for name, options in SETTINGS.items():
            try:
                models[name] = allocator.shapeshift(plain, budget, **options)
            except allocator.NPASError as exc:  # e.g. fewer shareable layers than groups
                print(f"{spec} budget {budget} {name}: {exc}", flush=True)
        models["materialized"] = allocator.materialize(models["defaults"])
        for m in models.values():
            m.train()
        opts = {k: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, fused=fused or None)
                for k, m in models.items()}
        train, update = _interleaved(
            {k: (lambda m=m, o=opts[k], x=x, y=y: _step(m, o, x, y)) for k, m in models.items()},
            steps, warmup,
        )
        timed = {k: models[k] for k in ("plain", "defaults", "materialized")}
        for m in timed.values():
            m.eval()
        infer, _ = _interleaved({k: (lambda m=m, x=x: _infer(m, x)) for k, m in timed.items()},
                                steps, warmup)
        row = {
            "model": spec,
            "budget": budget,
            "params_plain": allocator.count_parameters(plain),
            "params_ssn": {k: allocator.count_parameters(models[k]) for k in SETTINGS
                           if k in models},
            "step_s": train,
            "infer_s": infer,
            "step_ratio": {k: train[k] / train["plain"] for k in train if k != "plain"},
            # The optimizer's update (SGD with momentum) alone, and the step without it:
            # an update's cost is proportional to the values trained, whatever generates
            # the weights, so at budget 4.0 it is four times the plain model's.
            "update_s": update,
            "step_ratio_without_update": {
                k: (train[k] - update[k]) / (train["plain"] - update["plain"])
                for k in train if k != "plain"},
            # What the update alone forces: the plain step plus the extra time the SSN's
            # update takes (a budget of 4.0 updates four times the values, whatever
            # generates the weights); a ratio can get no lower than this.
            "step_ratio_update_floor": {
                k: (train["plain"] + update[k] - update["plain"]) / train["plain"]
                for k in train if k != "plain"},
            "infer_ratio": {k: infer[k] / infer["plain"] for k in infer if k != "plain"},
        }
        ratios = "  ".join(f"{k} {v:.3f}x" for k, v in row["step_ratio"].items())
        print(f"{spec:18s} budget {budget:<4} plain step {train['plain'] * 1e3:7.1f} ms  {ratios}"
              f"  | update plain {update['plain'] * 1e3:.1f} ms defaults "
              f"{update['defaults'] * 1e3:.1f} ms, without it defaults "
              f"{row['step_ratio_without_update']['defaults']:.3f}x, the update's floor "
              f"{row['step_ratio_update_floor']['defaults']:.3f}x"
              f"  | inference defaults {row['infer_ratio']['defaults']:.3f}x "
              f"materialized {row['infer_ratio']['materialized']:.3f}x", flush=True)
        yield row


COLUMNS = ("model", "budget", "trained params (defaults)", "plain step", "defaults",
           *(k for k in SETTINGS if k != "defaults"), "materialised",
           "SGD update, plain / defaults", "defaults, step without the update",
           "the update's floor (defaults)", "inference, defaults / materialised")


def markdown(rows: list[dict[str, Any]]) -> str:
    """README's table: one line per model and budget of one or more result files."""
    def x(v: float | None) -> str:
        return "" if v is None else f"{v:.3f}x"

    lines = ["| " + " | ".join(COLUMNS) + " |", "|---" * len(COLUMNS) + "|"]
    for r in rows:
        ratio, upd = r["step_ratio"], r["update_s"]
        cells = [r["model"], f"{r['budget']:g}", f"{r['params_ssn']['defaults']:,}",
                 f"{r['step_s']['plain'] * 1e3:.0f} ms", x(ratio["defaults"]),
                 *(x(ratio.get(k)) for k in SETTINGS if k != "defaults"),
                 x(ratio["materialized"]),
                 f"{upd['plain'] * 1e3:.1f} / {upd['defaults'] * 1e3:.1f} ms",
                 x(r["step_ratio_without_update"]["defaults"]),
                 x(r["step_ratio_update_floor"]["defaults"]),
                 f"{x(r['infer_ratio']['defaults'])} / {x(r['infer_ratio']['materialized'])}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--budgets", nargs="+", type=float, default=[0.1, 0.5, 4.0])
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall time, or the process's CPU time (less disturbed by load)")
    parser.add_argument("--out", type=Path, default=RESULTS / "step.json")
    parser.add_argument("--fused", action="store_true",
                        help="torch's fused SGD (one pass per tensor) for every model, "
                             "instead of its default, tensor by tensor on the CPU")
    parser.add_argument("--table", type=Path, nargs="+", metavar="JSON",
                        help="print README's table from these result files, run nothing")
    args = parser.parse_args()
    if args.table:
        print(markdown([row for path in args.table for row in json.loads(path.read_text())["rows"]]))
        return
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": "python benchmarks/bench_step.py " + " ".join(
            f"--{k}" if v is True else f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items() if k not in ("out", "table") and v is not False
        ),
        "torch": torch.__version__,
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
        "settings": SETTINGS,
        "note": "GPT-2's Conv1D weights (attention, MLP) are generated like every other "
                "shared weight; inside SSN.forward, untied embeddings generate only the "
                "rows a batch looks up",
    }
    rows: list[dict] = []
    for spec in args.models:
        for row in bench_model(spec, args.budgets, args.steps, args.warmup, fused=args.fused):
            rows.append(row)  # written after every row: a cut-short run keeps its figures
            args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {args.out}")

if __name__ == "__main__":
    main()
