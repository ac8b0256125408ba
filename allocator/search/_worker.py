"""Where a trial runs: a plain function call, wrapped so that it never raises.

:func:`execute` calls the trial function (``trials.run`` unless told otherwise) on a
config dict and returns plain data: the result dict, timings, where it ran, and the
trained weights when asked. :class:`TrialWorker` is the same thing held in a Ray actor,
so one process serves many trials (no process start, no re-import per trial); as it
starts it calls the runner module's ``prepare(config)``, if it has one, so that its
first trial costs what the others do. The worker never touches the study database; the
controller writes everything.
"""

from __future__ import annotations

import importlib
import inspect
import io
import logging
import os
import socket
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from allocator._errors import ConfigError, NPASError

__all__ = [
    "DEFAULT_RUNNER", "TrialWorker", "accepts", "execute", "model_bytes", "resolve_runner",
    "state_bytes", "state_from",
]

logger = logging.getLogger(__name__)

#: The trial function, as ``module:function``: ``f(config: dict, *, keep_model: bool)``
#: returning an object with ``to_dict()`` (a ``trials.TrialResult``) or a dict.
DEFAULT_RUNNER = "trials:run"


def resolve_runner(spec: str | Callable[..., Any]) -> Callable[..., Any]:
    """The function named by ``module:function`` (:class:`ConfigError` if there is none);
    a callable (sent by Ray's own serialisation) is the function itself.

    Example:
        >>> resolve_runner("json:dumps")([1])
        '[1]'
    """
    if callable(spec):
        return spec
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise ConfigError(f"runner must be 'module:function', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
        fn = getattr(module, name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"runner {spec!r} cannot be imported: {exc}") from None
    if not callable(fn):
        raise ConfigError(f"runner {spec!r} is not a function")
    return fn


def prepare_worker(spec: str | Callable[..., Any], config: Mapping[str, Any]) -> bool:
    """Call ``prepare(config)`` of the runner's module (``trials.prepare`` for ``trials:run``)
    if it has one; whether it did. Never raises: a config it cannot prepare fails in its
    trial, with the reason.

    Example:
        >>> prepare_worker("json:dumps", {})
        False
    """
    owner = spec if callable(spec) else importlib.import_module(spec.partition(":")[0])
    hook = getattr(owner, "prepare", None)
    if not callable(hook):
        return False
    try:
        hook(dict(config))
    except Exception as exc:
        logger.debug("preparing the trial worker failed: %s: %s", type(exc).__name__, exc)
        return False
    return True


def _node_id() -> str:
    try:
        import ray

        if ray.is_initialized():
            return str(ray.get_runtime_context().get_node_id())
    except Exception:  # not in Ray, or Ray cannot say: the host name still tells
        pass
    return ""


def accepts(fn: Callable[..., Any], name: str) -> bool:
    """Whether the trial function takes the keyword ``name`` (``trials.run`` takes
    ``report``, ``checkpoint`` and ``resume``).

    Example:
        >>> accepts(lambda config, *, keep_model=False, report=None: None, "report")
        True
    """
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def state_bytes(state: Mapping[str, Any]) -> bytes:
    """A training state (``trials.train``'s checkpoint) as bytes."""
    import torch

    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    return buffer.getvalue()


def state_from(data: bytes) -> dict[str, Any]:
    """The training state :func:`state_bytes` wrote (tensors and plain data only)."""
    import torch

    buffer = io.BytesIO(data)
    return dict(torch.load(buffer, weights_only=True))


def execute(
    fn: Callable[..., Any], config: Mapping[str, Any], *, keep_model: bool = False,
    report: Callable[[int, dict[str, float]], bool] | None = None,
    checkpoint: Callable[[int, dict[str, Any]], None] | None = None,
    resume: bytes | None = None,
) -> dict[str, Any]:
    """Run one trial; return its outcome as plain data. Never raises.

    The outcome holds ``result`` (the trial result as a dict; ``status`` ``failed`` with
    ``failure_reason`` when the trial raised), ``started_at``/``finished_at`` (Unix
    seconds), ``host``, ``node_id``, ``pid`` and ``model`` (the weights as bytes, or
    ``None``). ``report(epoch, metrics)`` (live learning curves, early stopping),
    ``checkpoint(epoch, state)`` and ``resume`` (a state from :func:`state_bytes`, to go on
    from its epoch) are passed on to a trial function that takes them (see :func:`accepts`).

    Example:
        >>> out = execute(lambda c, keep_model: {"status": "complete", "x": c["x"]}, {"x": 1})
        >>> out["result"]["x"], out["model"] is None
        (1, True)
    """
    started = time.time()
    model: bytes | None = None
    try:
        given = {"report": report, "checkpoint": checkpoint,
                 "resume": state_from(resume) if resume is not None else None}
        extra = {k: v for k, v in given.items() if v is not None and accepts(fn, k)}
        raw = fn(dict(config), keep_model=keep_model, **extra)
        result = raw.to_dict() if hasattr(raw, "to_dict") else dict(raw)
        trained = getattr(raw, "model", None)
        if keep_model and trained is not None and result.get("status") == "complete":
            model = model_bytes(trained)
    except NPASError as exc:  # a config this trial cannot run: it fails, the search goes on
        result = {"status": "failed", "failure_reason": f"{type(exc).__name__}: {exc}"}
    except Exception as exc:
        last = traceback.extract_tb(exc.__traceback__)[-1:]
        where = f" (at {last[0].filename}:{last[0].lineno})" if last else ""
        result = {"status": "failed", "failure_reason": f"{type(exc).__name__}: {exc}{where}"}
    result.setdefault("config", dict(config))
    return {
        "result": result,
        "started_at": started,
        "finished_at": time.time(),
        "host": socket.gethostname(),
        "node_id": _node_id(),
        "pid": os.getpid(),
        "model": model,
    }


def model_bytes(model: Any) -> bytes:
    """The trained module's weights as bytes: an SSN checkpoint for an SSN, else its
    ``state_dict`` (loadable with ``torch.load(weights_only=True)``)."""
    import torch

    import allocator

    buffer = io.BytesIO()
    if isinstance(model, allocator.SSN):
        allocator.save(model, buffer)
    else:
        torch.save({"format": "npas-module", "version": 1, "state_dict": model.state_dict()}, buffer)
    return buffer.getvalue()


class TrialWorker:
    """A trial runner that lives in a Ray actor (or in-process, for tests).

    With ``prepare`` (a trial config) it calls the runner module's ``prepare(config)``
    once as it starts (see :func:`prepare_worker`).

    Example:
        >>> worker = TrialWorker("allocator.search._worker:echo_trial")
        >>> worker.run({"x": 2})["result"]["x"]
        2
    """

    def __init__(self, runner: str | Callable[..., Any] = DEFAULT_RUNNER, prepare: Mapping[str, Any] | None = None) -> None:
        self._fn = resolve_runner(runner)
        if prepare is not None:
            prepare_worker(runner, prepare)

    def where(self) -> dict[str, Any]:
        """Host, node id and process id of this worker (also a readiness probe)."""
        return {"host": socket.gethostname(), "node_id": _node_id(), "pid": os.getpid()}

    def run(self, config: Mapping[str, Any], keep_model: bool = False, board: Any = None,
            number: int | None = None, resume: bytes | None = None,
            stops: bool = True) -> dict[str, Any]:
        """Run one trial; with ``board`` (an ``EpochBoard`` actor) its epochs and
        checkpoints go there as trial ``number`` (live curves, early stopping, resuming
        on another worker); ``resume``: a checkpoint to go on from. ``stops``: whether
        the board applies an early-stopping rule (else each epoch is sent without waiting
        for its answer). The epochs reported come back with the outcome as well
        (``epochs``: ``[epoch, metrics]`` pairs), so the whole curve is recorded however
        late the board's copy is read."""
        report = checkpoint = None
        reported: list[tuple[int, dict[str, float]]] = []
        if board is not None and number is not None:
            from allocator.search._epochs import checkpoint_hook, report_hook

            hook = report_hook(board, number, wait=stops)

            def report(epoch: int, metrics: dict[str, float]) -> bool:
                reported.append((int(epoch), dict(metrics)))
                return hook(epoch, metrics)

            checkpoint = checkpoint_hook(board, number)
        out = execute(self._fn, config, keep_model=keep_model, report=report,
                      checkpoint=checkpoint, resume=resume)
        if reported:
            out["epochs"] = reported
        return out


def echo_trial(config: Mapping[str, Any], *, keep_model: bool = False) -> dict[str, Any]:
    """A trial that returns its config (for doctests and wiring checks)."""
    return {"status": "complete", **config}
