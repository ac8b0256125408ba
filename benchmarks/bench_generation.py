"""Cost of generating an SSN's weights: forward and backward of every generated weight
of WRN-16-4, with each group read once per call (as ``SSN.forward`` does) against each
layer reading its own windows (as calling ``ssn.model`` directly does), interleaved in
one process; median of the repetitions after the first.

    python benchmarks/bench_generation.py --repeats 6
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from typing import Any

import torch
from torch.nn.utils import parametrize

import allocator
from trials.zoo import build_model

SETTINGS: list[tuple[float, dict[str, Any]]] = [
    (4.0, {"groups": 1, "templates": 4, "downsample": "emb"}),
    (4.0, {}),
    (0.1, {}),
]


def _generate(ssn: allocator.SSN, grouped: bool) -> float:
    gens = [g for _, g in ssn.generators()]
    t0 = time.perf_counter()
    with parametrize.cached(), contextlib.ExitStack() as stack:
        if grouped:
            for group in ssn.groups:
                stack.enter_context(group.reading())  # type: ignore[operator]
        loss = sum((g(torch.empty(0)) ** 2).sum() for g in gens)
    loss.backward()  # type: ignore[union-attr]
    ssn.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    plain = build_model("wrn-16-4", input_shape=(3, 32, 32), num_classes=10)
    for budget, options in SETTINGS:
        ssn = allocator.shapeshift(plain, budget, **options)
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.repeats):
            for grouped, seen in times.items():
                seen.append(_generate(ssn, grouped))
        med = {k: statistics.median(v[1:]) for k, v in times.items()}
        print(f"budget {budget} {options or 'defaults'}: per-layer reads {med[False] * 1e3:.0f} ms, "
              f"one read per group {med[True] * 1e3:.0f} ms, ratio {med[True] / med[False]:.2f}",
              flush=True)


if __name__ == "__main__":
    main()
