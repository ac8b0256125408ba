"""``npas demo``: a small search you can run now, on a laptop, in a few minutes.

The ``default`` space (budgets 2 % to 400 %, every mapping and generator) over the
``cnn1d`` model on MNIST-1D (generated locally, no download): 24 trials, two at a time
on a local Ray, each a short training run. It prints the Pareto front of validation
accuracy against trained parameters and the commands to look further.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any

__all__ = ["DEMO_EPOCHS", "DEMO_TRIAL", "demo_settings", "register"]

#: The training every demo trial does: MNIST-1D's 3,500 training examples, 40 epochs of
#: batch 64 (about 2-5 s a trial on one core; 24 trials take 2-3 minutes on 2 cores).
DEMO_TRIAL: dict[str, Any] = {
    "batch_size": 64,
    "lr": 0.05,
    "pretrain_epochs": 3,
}
DEMO_EPOCHS = 40


def register(subparsers: Any) -> None:
    from allocator.cli._search import add_search_flags

    p = subparsers.add_parser(
        "demo",
        help="a small search of cnn1d on MNIST-1D (a few minutes on 2 cores)",
        description=(__doc__ or "").replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--study", metavar="NAME", help="study name (default: demo-DATE-TIME)")
    add_search_flags(p)
    p.set_defaults(func=_demo)


def demo_settings(args: argparse.Namespace) -> Any:
    """The demo's :class:`SearchSettings` (flags given to ``npas demo`` override)."""
    from allocator.search import SearchSettings, resolve_url

    study = args.study or "demo-" + dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return SearchSettings(
        study=study,
        model="cnn1d",
        data="mnist1d",
        space="default",
        storage=resolve_url(args.storage),
        trials=args.trials or 24,
        concurrency=args.concurrency or 2,
        epochs=args.epochs or DEMO_EPOCHS,
        seed=args.seed or 0,
        sampler=args.sampler or "tpe",
        ray_address=args.ray_address,
        cpus_per_trial=args.cpus_per_trial or 1.0,
        gpus_per_trial=args.gpus_per_trial or 0.0,
        trial_options=DEMO_TRIAL,
        verbose=bool(getattr(args, "verbose", 0)),
    )


def _demo(args: argparse.Namespace) -> int:
    from allocator.cli._search import _run
    from allocator.search import mask_url, run_search

    settings = demo_settings(args)
    study, storage = settings.study, settings.storage
    print(
        f"npas demo: {settings.trials} trials of {settings.model} on {settings.data}, "
        f"{settings.concurrency} at a time, study {study!r} in {mask_url(storage)}",
        file=sys.stderr,
    )
    code = _run(lambda progress: run_search(settings, on_progress=progress), storage)
    shown = mask_url(storage)
    print()
    print("look further:")
    print(f"  npas trials {study} --storage {shown} --sort accuracy")
    print(f"  npas export {study} TRIAL --storage {shown} --out model.pt")
    print(f"  npas dashboard --storage {shown}")
    return code
