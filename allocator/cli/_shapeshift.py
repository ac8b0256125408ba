"""``npas shapeshift``: show how a model of the zoo would be shared at a budget.

Builds the model, applies :func:`allocator.shapeshift` and prints the allocation table
(no data, no training). Useful to choose groups, templates and generators by eye.
"""

from __future__ import annotations

import argparse
from typing import Any

from allocator._errors import ConfigError
from allocator._vocab import DEFAULTS
from allocator.cli._train import parse_budget

__all__ = ["register"]


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise ConfigError(f"input shape must be positive ints separated by commas, got {text!r}")
    return shape


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "shapeshift",
        help="print the allocation of a zoo model at a budget",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL_SPEC", help="zoo spec, e.g. wrn-16-4, resnet1d, cnn1d")
    p.add_argument("--budget", required=True, help="int count or float fraction (0.1, 4.0)")
    p.add_argument("--input-shape", default="1,40", help="one sample's shape (3,32,32 for CIFAR)")
    p.add_argument("--classes", type=int, default=10, help="number of classes")
    p.add_argument("--groups", type=int, default=None, help="parameter groups")
    p.add_argument("--templates", type=int, default=DEFAULTS["templates"],
                   help="most templates per layer")
    p.add_argument("--downsample", default=DEFAULTS["downsample"],
                   help="wavg, emb, avg or slice (default: slice below the model's size, wavg "
                        "from it up)")
    p.add_argument("--upsample", default=DEFAULTS["upsample"], help="hash, inter, repeat or mask")
    p.add_argument("--mapping", default=DEFAULTS["mapping"],
                   help="single, type, roundrobin or random")
    p.add_argument("--seed", type=int, default=0, help="seed of the random mapping and init")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import allocator
    from trials.zoo import build_model

    if args.mapping in ("manual", "learned"):
        raise ConfigError(
            f"mapping {args.mapping!r} needs data or a layer map; use `npas train` for it"
        )
    from allocator.search._checks import check_model_memory

    shape = _shape(args.input_shape)
    check_model_memory(args.model, shape, args.classes)  # before anything is allocated
    model = build_model(args.model, input_shape=shape, num_classes=args.classes)
    ssn = allocator.shapeshift(
        model, parse_budget(args.budget), groups=args.groups, templates=args.templates,
        downsample=args.downsample, upsample=args.upsample, mapping=args.mapping, seed=args.seed,
    )
    print(ssn.allocation())
    return 0
