"""The training loop every trial uses: one model, one dataset, one :class:`TrialConfig`.

It trains with the model's own loss (cross-entropy), SGD (momentum 0.9, Nesterov) or
AdamW, a per-step cosine or step schedule, and weight decay on weights only; evaluates
on the validation split after every epoch; and measures time, steps and peak memory.
A loss that turns NaN/inf or an out-of-memory error ends the run as ``failed`` with a
reason instead of raising; a ``report`` callback that returns ``True`` ends it as
``pruned``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from allocator import count_parameters
from allocator._errors import ConfigError
from trials._checkpoint import restore_state, training_state
from trials.config import TrialConfig

__all__ = [
    "Checkpoint",
    "Report",
    "TrainOutcome",
    "evaluate",
    "make_pretrain",
    "parameter_groups",
    "resolve_device",
    "train",
    "trial_environment",
]

logger = logging.getLogger(__name__)

#: ``report(epoch, metrics)``; return ``True`` to stop the run (pruned).
Report = Callable[[int, dict[str, float]], "bool | None"]
#: ``checkpoint(epoch, state)``: the run's whole state after ``epoch`` (see :func:`train`),
#: called just before ``report`` for the same epoch.
Checkpoint = Callable[[int, dict[str, Any]], None]

_EVAL_BATCH = 512


@dataclass(frozen=True)
class TrainOutcome:
    """What one call of :func:`train` produced.

    ``status`` is ``"complete"``, ``"failed"`` (``failure_reason`` says why) or
    ``"pruned"``. Accuracies and losses are those of the last epoch run (``None`` when
    none finished). ``history`` holds one dict of metrics per epoch (``epoch``,
    ``train_loss``, ``lr``, ``val_accuracy``, ``val_loss``), free of timings so that a
    seeded CPU run reproduces it exactly. ``peak_memory_bytes`` is ``torch.cuda.max_memory_allocated`` on
    CUDA; on CPU it is the growth of the process's peak resident set size during the
    run, an approximation (zero when the process had peaked higher before).
    """

    status: str
    failure_reason: str | None = None
    val_accuracy: float | None = None
    val_loss: float | None = None
    test_accuracy: float | None = None
    test_loss: float | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    train_time_s: float = 0.0
    step_time_s: float | None = None
    peak_memory_bytes: int = 0
    steps: int = 0
    epochs_run: int = 0


def resolve_device(config: TrialConfig) -> torch.device:
    """The device a config asks for: ``auto`` is CUDA when available, else CPU.

    Example:
        >>> resolve_device(TrialConfig(device="cpu"))
        device(type='cpu')
    """
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device must be auto or cpu on this machine (no CUDA), got 'cuda'")
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(config.device)


@contextlib.contextmanager
def trial_environment(config: TrialConfig) -> Iterator[torch.device]:
    """Threads, forked RNG state and (on CPU) deterministic kernels for one trial.

    Everything is restored on exit, so a trial leaves the process as it found it.

    Example:
        >>> with trial_environment(TrialConfig(device="cpu", threads=1)) as device:
        ...     torch.get_num_threads()
        1
    """
    device = resolve_device(config)
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.set_num_threads(config.threads)
        if device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield device
        finally:
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Optimiser groups: decay the weights, not biases, norms or generators.

    Decayed: parameters with ``ndim >= 2``, an SSN's group storage (``groups.*.theta``)
    and a HashedNet's shared array. Not decayed: 1-D parameters (biases, norm affines)
    and an SSN's generator parameters (per-layer coefficients, embeddings and masks
    under ``parametrizations.``; a group's ``emb`` projection).

    Example:
        >>> [len(g["params"]) for g in parameter_groups(nn.Linear(3, 2), 1e-4)]
        [1, 1]
    """
    from allocator import SSN
    from trials.baselines import HashedNet

    is_ssn = isinstance(model, SSN)
    shared = model.shared if isinstance(model, HashedNet) else None
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param is shared:
            keep = True
        elif is_ssn and name.startswith("groups."):
            keep = name.endswith(".theta")
        elif is_ssn and ".parametrizations." in name:
            keep = False
        else:
            keep = param.ndim >= 2
        (decay if keep else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def train(
    model: nn.Module,
    dataset: Any,
    config: TrialConfig,
    *,
    report: Report | None = None,
    checkpoint: Checkpoint | None = None,
    resume: dict[str, Any] | None = None,
) -> TrainOutcome:
    """Train ``model`` on ``dataset.train`` as ``config`` says; evaluate every epoch.

    ``report(epoch, metrics)`` is called after each epoch (``epoch`` counts from 1;
    metrics: ``val_accuracy``, ``val_loss``, ``train_loss``, ``lr``, ``epoch_time``, and
    the run's ``trainable_params`` and mean ``step_time_s`` so far, which early stopping
    compares trials on);
    returning ``True`` stops the run as ``pruned``. The test split is evaluated at the
    end only when ``config.eval_test``. The model is moved to the config's device.

    ``checkpoint(epoch, state)`` receives, after each epoch, everything the run needs to
    go on from there (weights, optimiser, schedule, random states, history; tensors and
    plain data, saveable with ``torch.save`` and loadable with ``weights_only=True``);
    ``resume=state`` (on a model built the same way) continues from that epoch and ends
    exactly as the uninterrupted run would.

    Example:
        >>> from trials.data import load_dataset
        >>> data = load_dataset("mnist1d", size=200)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(40, 10))
        >>> out = train(net, data, TrialConfig(method="full", epochs=1, device="cpu"))
        >>> out.status, out.epochs_run
        ('complete', 1)
    """
    with trial_environment(config) as device:
        return _fit(model, dataset, config, device, report=report, validate=True,
                    checkpoint=checkpoint, resume=resume)


def make_pretrain(dataset: Any, config: TrialConfig) -> Callable[[nn.Module], None]:
    """The ``pretrain`` callable for ``mapping="learned"``: trains a module in place for
    ``config.pretrain_epochs`` epochs with the same loop, data and optimiser (no
    validation, no reporting) and leaves it on the device it came from.

    Example:
        >>> pretrain = make_pretrain(dataset, TrialConfig(mapping="learned"))  # doctest: +SKIP
        >>> pretrain(single_group_ssn)  # doctest: +SKIP
    """
    short = config.replace(epochs=config.pretrain_epochs, eval_test=False)

    def pretrain(module: nn.Module) -> None:
        home = next(module.parameters()).device
        with trial_environment(short) as device:
            outcome = _fit(module, dataset, short, device, report=None, validate=False)
        module.to(home)
        if outcome.status != "complete":
            raise RuntimeError(f"pretraining for the learned mapping failed: {outcome.failure_reason}")

    return pretrain


# --- the loop -------------------------------------------------------------------------


def _fit(
    model: nn.Module,
    dataset: Any,
    config: TrialConfig,
    device: torch.device,
    *,
    report: Report | None,
    validate: bool,
    checkpoint: Checkpoint | None = None,
    resume: dict[str, Any] | None = None,
) -> TrainOutcome:
    start = time.perf_counter()
    cuda = device.type == "cuda"
    rss_before = _peak_rss_bytes()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(config.seed)
    shuffle = torch.Generator().manual_seed(config.seed)
    model.to(device)
    x, y = dataset.train.x.to(device), dataset.train.y.to(device)
    n = len(y)
    steps_per_epoch = _steps_per_epoch(n, config)
    optimizer = _optimizer(model, config)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _schedule(config.schedule, config.epochs * steps_per_epoch)
    )
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and config.amp else None

    trainable = count_parameters(model)
    history: list[dict[str, float]] = []
    status, reason = "complete", None
    steps, step_seconds, epoch = 0, 0.0, 0
    val: tuple[float, float] | None = None
    test: tuple[float, float] | None = None
    first = 1
    if resume is not None:
        first, val = restore_state(resume, model, optimizer, schedule, shuffle, history)
        steps, step_seconds = int(resume["steps"]), float(resume["step_seconds"])
    try:
        for epoch in range(first, config.epochs + 1):
            epoch_start = time.perf_counter()
            model.train()
            order = torch.randperm(n, generator=shuffle).to(device)
            losses: list[torch.Tensor] = []
            lr = optimizer.param_groups[0]["lr"]
            for step in range(steps_per_epoch):
                idx = order[step * config.batch_size : (step + 1) * config.batch_size]
                with amp or contextlib.nullcontext():
                    logits = model(x[idx])
                loss = F.cross_entropy(
                    logits.float(), y[idx], label_smoothing=config.label_smoothing
                )
                if not cuda and not math.isfinite(loss.item()):
                    reason = _diverged(loss.item(), epoch, step + 1)
                    break
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                lr = optimizer.param_groups[0]["lr"]
                schedule.step()
                losses.append(loss.detach())
                steps += 1
            if cuda:
                torch.cuda.synchronize(device)
            step_seconds += time.perf_counter() - epoch_start
            stacked = torch.stack(losses).float() if losses else torch.zeros(0)
            if reason is None and not bool(torch.isfinite(stacked).all()):
                bad = int((~torch.isfinite(stacked)).nonzero()[0])
                reason = _diverged(float(stacked[bad]), epoch, bad + 1)
            if reason is not None:
                status = "failed"
                break
            metrics = {"epoch": epoch, "train_loss": float(stacked.mean()), "lr": lr}
            if validate:
                latest = evaluate(model, dataset.val, device=device, amp=amp is not None)
                if not math.isfinite(latest[1]):  # keep the last finite evaluation
                    status, reason = "failed", _diverged(latest[1], epoch, None)
                    break
                val = latest
                metrics.update(val_accuracy=val[0], val_loss=val[1])
            history.append(metrics)
            if checkpoint is not None:
                checkpoint(epoch, training_state(epoch, model, optimizer, schedule, shuffle, history,
                                         steps, step_seconds))
            timed = {**metrics, "epoch_time": time.perf_counter() - epoch_start,
                     "trainable_params": trainable, "step_time_s": step_seconds / max(steps, 1)}
            if report is not None and report(epoch, timed) is True:
                status = "pruned"
                break
        if status == "complete" and config.eval_test:
            test = evaluate(model, dataset.test, device=device, amp=amp is not None)
    except (torch.cuda.OutOfMemoryError, MemoryError) as exc:
        status = "failed"
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        reason = f"out of memory at epoch {epoch}: {detail}"
        if cuda:
            torch.cuda.empty_cache()
    if cuda:
        torch.cuda.synchronize(device)
        peak = int(torch.cuda.max_memory_allocated(device))
    else:
        peak = max(0, _peak_rss_bytes() - rss_before)
    return TrainOutcome(
        status=status,
        failure_reason=reason,
        val_accuracy=val[0] if val else None,
        val_loss=val[1] if val else None,
        test_accuracy=test[0] if test else None,
        test_loss=test[1] if test else None,
        history=history,
        train_time_s=time.perf_counter() - start,
        step_time_s=step_seconds / steps if steps else None,
        peak_memory_bytes=peak,
        steps=steps,
        epochs_run=len(history),
    )


def evaluate(
    model: nn.Module, split: Any, *, device: torch.device, amp: bool = False
) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of ``model`` on ``split`` (eval mode, no grad).

    Generated weights are computed once for the whole pass (``parametrize.cached``).

    Example:
        >>> from types import SimpleNamespace
        >>> split = SimpleNamespace(x=torch.zeros(4, 3), y=torch.zeros(4, dtype=torch.long))
        >>> acc, loss = evaluate(nn.Linear(3, 2), split, device=torch.device("cpu"))
        >>> 0.0 <= acc <= 1.0
        True
    """
    was_training = model.training
    model.eval()
    correct, total_loss = 0, 0.0
    n = len(split.y)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    try:
        with torch.no_grad(), parametrize.cached(), autocast:
            for lo in range(0, n, _EVAL_BATCH):
                xb = split.x[lo : lo + _EVAL_BATCH].to(device)
                yb = split.y[lo : lo + _EVAL_BATCH].to(device)
                logits = model(xb).float()
                total_loss += float(F.cross_entropy(logits, yb, reduction="sum"))
                correct += int((logits.argmax(dim=1) == yb).sum())
    finally:
        model.train(was_training)
    return correct / max(n, 1), total_loss / max(n, 1)


# --- pieces ---------------------------------------------------------------------------


def _steps_per_epoch(n: int, config: TrialConfig) -> int:
    full, rest = divmod(n, config.batch_size)
    # A last batch of one example breaks batch norm in training mode: drop it.
    steps = full + (1 if rest > 1 else 0)
    if config.max_steps_per_epoch is not None:
        steps = min(steps, config.max_steps_per_epoch)
    return max(steps, 1)


def _optimizer(model: nn.Module, config: TrialConfig) -> torch.optim.Optimizer:
    groups = parameter_groups(model, config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    return torch.optim.SGD(groups, lr=config.lr, momentum=0.9, nesterov=True)


def _schedule(kind: str, total_steps: int) -> Callable[[int], float]:
    """Per-step learning-rate factor: cosine to zero, or x0.1 at 50 % and 75 %."""
    if kind == "cosine":
        return lambda t: 0.5 * (1.0 + math.cos(math.pi * min(t, total_steps) / total_steps))
    if kind == "step":
        first, second = max(1, round(0.5 * total_steps)), max(1, round(0.75 * total_steps))
        return lambda t: 0.1 ** ((t >= first) + (t >= second))
    return lambda t: 1.0


def _diverged(value: float, epoch: int, step: int | None) -> str:
    where = f"step {step}" if step is not None else "validation"
    return f"loss diverged ({value}) at epoch {epoch} {where}"


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB
