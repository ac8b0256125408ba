"""``npas train``: train one model under one parameter method and print what it measured.

Every :class:`trials.TrialConfig` field is a flag (``--batch-size``, ``--data-root``,
...; ``--test`` for ``eval_test``). A progress bar over epochs goes to stderr, the
metrics table (and, for an SSN, the allocation table) to stdout. ``--save`` writes the
SSN with :func:`allocator.save`; ``--export`` writes the deployed network's
``state_dict``. Exit status: 0 complete or pruned, 1 failed (diverged, out of memory),
2 a configuration error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from typing import Any

from allocator._errors import BudgetError, ConfigError
from allocator._export import check_out_path
from allocator._storage_url import store_files

__all__ = ["parse_budget", "register"]

# Flags whose name is not the field's name with dashes.
_FLAG = {"eval_test": "--test"}


def parse_budget(text: str) -> int | float:
    """A budget typed on the command line: with a ``.`` a float fraction of the model's
    parameters, else an int count (``1e5`` is a count of 100,000; ``1e-1`` a fraction).

    Example:
        >>> parse_budget("0.25"), parse_budget("250000"), parse_budget("1e5"), parse_budget("4.0")
        (0.25, 250000, 100000, 4.0)
    """
    value: int | float
    try:
        if "." in text:
            value = float(text)
        elif "e" in text.lower():
            value = float(text)
            value = int(value) if value.is_integer() else value
        else:
            value = int(text)
    except (ValueError, OverflowError):
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise BudgetError(
            f"budget must be a positive number (an int count or a float fraction), got {text!r}"
        )
    return value


_EXAMPLES = {"manual_map": ('layer name -> group', '{"0": 0}'),
             "hp": ("name -> value", '{"width": 32}')}


def _json_table(name: str, text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        what, example = _EXAMPLES[name]
        raise ConfigError(
            f"{name} must be a JSON object of {what}, e.g. '{example}', got {text!r}"
        )
    return value


def register(subparsers: Any) -> None:
    """Add ``npas train`` to the ``npas`` sub-command parsers.

    Example:
        >>> from allocator.cli import main
        >>> main(["train", "--model", "mlp", "--epochs", "1", "--data-size", "100"])  # doctest: +SKIP
        0
    """
    from trials.config import TrialConfig

    parser = subparsers.add_parser(
        "train",
        help="train one model under one parameter method",
        description="Train one model under one parameter method (full, ssn, reduced_width, "
        "hashed) and print what it measured: accuracy, trained parameters, FLOPs, time, "
        "memory, and an SSN's allocation.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for f in dataclasses.fields(TrialConfig):
        flag = _FLAG.get(f.name, "--" + f.name.replace("_", "-"))
        help_text = f.metadata.get("help", "")
        kwargs: dict[str, Any] = {"dest": f.name, "default": f.default, "help": help_text}
        if isinstance(f.default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif f.type in ("int", "int | None"):
            kwargs["type"] = int
        elif f.type == "float":
            kwargs["type"] = float
        # else a string: names, paths, and budget / manual_map, parsed in _handle
        parser.add_argument(flag, **kwargs)
    parser.add_argument("--save", metavar="PATH", default=None,
                        help="write the trained SSN with allocator.save (method ssn only)")
    parser.add_argument("--export", metavar="PATH", default=None,
                        help="write the deployed (materialised) network's state_dict")
    parser.set_defaults(func=_handle)


def _handle(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    import allocator
    from trials.checks import check_config
    from trials.config import TrialConfig
    from trials.methods import deploy
    from trials.runner import run

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrialConfig)}
    if isinstance(values["budget"], str):
        values["budget"] = parse_budget(values["budget"])
    for name in ("manual_map", "hp"):
        if isinstance(values[name], str):
            values[name] = _json_table(name, values[name])
    config = TrialConfig.from_dict(values)
    check_config(config.to_dict())  # the user's code imports, builds and takes a batch
    if args.save and config.method != "ssn":
        raise ConfigError(f"--save needs method ssn (it writes an SSN), got method {config.method!r}")
    for flag in ("save", "export"):  # before training, not after
        if getattr(args, flag):
            check_out_path(getattr(args, flag), f"--{flag}", forbidden=store_files(None))

    bar = tqdm(total=config.epochs, desc="train", unit="epoch", file=sys.stderr,
               disable=not sys.stderr.isatty(), leave=False)

    def report(epoch: int, metrics: dict[str, float]) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{metrics.get('train_loss', math.nan):.3f}",
                        val_acc=f"{metrics.get('val_accuracy', math.nan):.3f}")

    try:
        result = run(config, report=report, keep_model=True)
    finally:
        bar.close()
    print(_table(result.to_dict()))
    model = result.model
    if isinstance(model, allocator.SSN):
        print()
        print(model.allocation())
    if result.status == "failed":
        return 1
    if args.save and isinstance(model, allocator.SSN):
        allocator.save(model, args.save)
        print(f"\nsaved SSN to {args.save}")
    if args.export and model is not None:
        plain = deploy(model)
        torch.save({k: v.detach().cpu() for k, v in plain.state_dict().items()}, args.export)
        print(f"exported state_dict to {args.export}")
    return 0


def _table(result: dict[str, Any]) -> str:
    cfg = result["config"]
    rows: list[tuple[str, str]] = [
        ("model", f"{cfg['model']} on {cfg['data']}"),
        ("method", cfg["method"] + ("" if cfg["method"] == "full" else f" (budget {cfg['budget']})")),
        ("status", result["status"]),
    ]
    if result["failure_reason"]:
        rows.append(("failure", result["failure_reason"]))
    rows += [
        ("val accuracy", _num(result["val_accuracy"], ".4f")),
        ("val loss", _num(result["val_loss"], ".4f")),
    ]
    if result["test_accuracy"] is not None:
        rows += [("test accuracy", _num(result["test_accuracy"], ".4f")),
                 ("test loss", _num(result["test_loss"], ".4f"))]
    for key, value in (result.get("metrics") or {}).items():
        rows.append((key.replace("_", " "), _num(value, ".4g")))
    for key, value in result["method_info"].items():
        rows.append((key.replace("_", " "), _num(value, ".4g")))
    rows += [
        ("trainable params", _num(result["trainable_params"], ",")),
        ("params by kind", ", ".join(f"{k} {v:,}" for k, v in result["params_by_kind"].items())),
        ("inference FLOPs", _num(result["flops"], ",")),
        ("epochs", str(result["epochs_run"])),
        ("steps", str(result["steps"])),
        ("train time", f"{result['train_time_s']:.2f} s"),
        ("step time", _num(None if result["step_time_s"] is None
                           else 1000 * result["step_time_s"], ".2f", " ms")),
        ("peak memory", _num(None if result["peak_memory_bytes"] is None
                             else result["peak_memory_bytes"] / 2**20, ".1f", " MiB")),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def _num(value: Any, spec: str, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, (str, bool)):  # a generator's name, a flag
        return str(value)
    if isinstance(value, int) and spec == ".4g":
        return f"{value:,}"
    return f"{value:{spec}}{unit}"
