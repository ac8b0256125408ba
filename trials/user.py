"""A user's own code in a trial: ``module:attr`` import paths, model factories, trial functions.

``--model models:build`` names a callable (a function or an ``nn.Module`` class) that
returns an ``nn.Module``; it is called with the keyword arguments of the space's user
dimensions (``hp``). ``--trial train:fit`` names ``fit(model, config, report)``, which
trains the model however it likes and returns a dict of metrics. ``MODULE`` is imported
as Python would, from the current directory (as uvicorn and gunicorn do) or from an
installed package. Zoo specs (``cnn1d``) never contain a colon, so the two never mix.

Example:
    >>> is_import_path("models:build"), is_import_path("cnn1d")
    (True, False)
    >>> resolve("collections:OrderedDict", "--model").__name__
    'OrderedDict'
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from allocator._errors import ConfigError
from trials.pruned import TrialPruned

__all__ = [
    "Callables",
    "ModelSource",
    "accepts",
    "call_trial",
    "factory_kwargs",
    "is_import_path",
    "model_source",
    "resolve",
    "spec_of",
    "user_modules",
]


#: Callables given to the Python API that no import path reaches (defined in ``__main__``,
#: a notebook, a closure): ``spec -> object``, filled by :class:`Callables` in each process.
_GIVEN: dict[str, Any] = {}


def spec_of(obj: Any, what: str) -> tuple[str, Any]:
    """The import path of a callable and the object to ship with the trials (``None``
    when workers can import it by its path).

    Example:
        >>> spec_of(dict, "model")
        ('builtins:dict', None)
    """
    if isinstance(obj, str):
        return obj, None
    if not callable(obj):
        raise ConfigError(f"{what} must be MODULE:ATTR or a callable, got {type(obj).__name__}")
    module, name = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    spec = f"{module}:{name}"
    if module and name and module != "__main__" and "<" not in name:
        try:
            found = resolve(spec, what)
        except ConfigError:
            found = None
        if found is obj:
            return spec, None
    return spec, obj


@dataclass(frozen=True)
class Callables:
    """The trial runner of the Python API when it was given callables that no import
    path reaches: Ray serialises this object (and the callables with it) to every worker,
    which makes them resolvable by their spec there, then runs ``trials.run``.

    Example:
        >>> runner = Callables({"__main__:build_net": dict})
        >>> runner.install(); resolve("__main__:build_net", "--model") is dict
        True
    """

    objects: Mapping[str, Any]

    def install(self) -> None:
        _GIVEN.update(self.objects)

    def __call__(self, config: Mapping[str, Any], *, keep_model: bool = False) -> Any:
        from trials.runner import run

        self.install()
        return run(dict(config), keep_model=keep_model)

    def prepare(self, config: Mapping[str, Any]) -> None:
        from trials.runner import prepare

        self.install()
        prepare(dict(config))


def user_modules(config: Mapping[str, Any]) -> tuple[str, ...]:
    """The modules a config's user code comes from, which every worker must import
    (callables the Python API ships by value are not among them).

    Example:
        >>> user_modules({"model": "models:build", "data": "mnist1d", "trial": "train:fit"})
        ('models', 'train')
    """
    specs = [config.get(k) for k in ("model", "data", "trial")]
    names = [str(s).partition(":")[0] for s in specs if is_import_path(s) and s not in _GIVEN]
    return tuple(dict.fromkeys(names))


def is_import_path(text: Any) -> bool:
    """Whether ``text`` names user code (``module:attr``) rather than a zoo name."""
    return isinstance(text, str) and ":" in text


def resolve(spec: str, flag: str) -> Any:
    """The object ``module:attr`` names (``attr`` may be dotted: ``pkg.mod:Class.build``).

    The current directory comes first on ``sys.path``, as for ``python -m``. Every
    failure is one :class:`ConfigError` naming ``flag``, the spec and what was found.
    """
    if spec in _GIVEN:
        return _GIVEN[spec]
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{flag} must be MODULE:ATTR (e.g. models:build), got {spec!r}")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigError(
                f"{flag} {spec!r}: no module named {exc.name!r} in the current directory "
                f"({cwd}) or the installed packages"
            ) from None
        raise ConfigError(f"{flag} {spec!r}: importing {module_name!r} failed: {_why(exc)}") from None
    except Exception as exc:
        raise ConfigError(f"{flag} {spec!r}: importing {module_name!r} failed: {_why(exc)}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n in dir(obj) if not n.startswith("_"))[:12]
            raise ConfigError(
                f"{flag} {spec!r}: {module_name!r} has no attribute {part!r}; it has: "
                + (", ".join(public) or "nothing public")
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{flag} {spec!r} is a {type(obj).__name__}, not a function or class")
    return obj


def accepts(fn: Callable[..., Any]) -> tuple[frozenset[str], bool]:
    """The keyword arguments ``fn`` takes, and whether it takes any (``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: assume it takes all
        return frozenset(), True
    names = frozenset(
        p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    )
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def factory_kwargs(
    fn: Callable[..., Any], spec: str, hp: Mapping[str, Any], *, has_trial: bool
) -> dict[str, Any]:
    """The user dimensions ``fn`` is called with: those it accepts. Without a trial
    function every user dimension must be the factory's; with one, the rest go to it."""
    names, any_kw = accepts(fn)
    taken = {k: v for k, v in hp.items() if any_kw or k in names}
    extra = sorted(set(hp) - set(taken))
    if extra and not has_trial:
        takes = ", ".join(sorted(names)) or "no arguments"
        raise ConfigError(
            f"user dimension {extra[0]!r} is not an argument of --model {spec} (it takes: "
            f"{takes}); rename the dimension, or add a --trial function that uses it"
        )
    return taken


@dataclass(frozen=True)
class ModelSource:
    """How a trial's model is built: ``build(width)`` (``None``: the model as written).

    ``width`` is the full model's width when the model has one (a zoo multiplier of
    ``1.0``, or the default/searched value of a factory's ``width`` argument), else
    ``None``: such a model cannot be shrunk by ``reduced_width``.
    """

    name: str
    build: Callable[[Any], nn.Module]
    width: int | float | None

    def __call__(self, width: int | float | None = None) -> nn.Module:
        return self.build(width)


def model_source(
    model: str,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    hp: Mapping[str, Any] | None = None,
    has_trial: bool = False,
) -> ModelSource:
    """The :class:`ModelSource` of a zoo spec or a ``module:attr`` factory.

    Example:
        >>> source = model_source("mlp", input_shape=(40,), num_classes=10)
        >>> source.width, type(source(0.5)).__name__
        (1.0, 'MLP')
    """
    if not is_import_path(model):
        from trials.zoo import build_model

        def zoo(width: int | float | None) -> nn.Module:
            return build_model(model, input_shape=input_shape, num_classes=num_classes,
                               width=1.0 if width is None else float(width))

        return ModelSource(model, zoo, 1.0)
    fn = resolve(model, "--model")
    kwargs = factory_kwargs(fn, model, dict(hp or {}), has_trial=has_trial)
    names, any_kw = accepts(fn)
    width: int | float | None = None
    if "width" in kwargs:
        width = kwargs["width"]
    elif "width" in names:
        default = _default(fn, "width")
        width = default if _is_number(default) else None

    def user(w: int | float | None) -> nn.Module:
        args = dict(kwargs) if w is None else {**kwargs, "width": w}
        return call_factory(fn, model, args)

    return ModelSource(model, user, width)


def call_factory(fn: Callable[..., Any], spec: str, kwargs: Mapping[str, Any]) -> nn.Module:
    """``fn(**kwargs)``, which must return an ``nn.Module`` (:class:`ConfigError` if not)."""
    shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    try:
        module = fn(**kwargs)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"--model {spec}({shown}) raised {_why(exc)}") from None
    if not isinstance(module, nn.Module):
        raise ConfigError(
            f"--model {spec}({shown}) returned a {type(module).__name__}, not a torch.nn.Module"
        )
    return module


Report = Callable[[int, dict[str, float]], "bool | None"]


def call_trial(
    spec: str,
    model: nn.Module,
    config: Mapping[str, Any],
    *,
    data: Any = None,
    report: Report | None = None,
    checkpoint: Any = None,
    resume: Any = None,
) -> tuple[str, dict[str, float], list[dict[str, float]], str | None]:
    """Run the user's trial function ``fn(model, config, report)`` (and ``data=`` if it
    takes it). Returns the status (``complete`` or ``pruned``), the metrics it returned,
    one dict per ``report`` call, and why it failed (``None`` if it did not).

    ``report(epoch, **metrics)`` records intermediate values and forwards them to the
    search's hook; when the hook prunes, it raises :class:`TrialPruned`. A function that
    takes ``checkpoint`` gets the search's ``checkpoint(epoch, state)`` hook, and one that
    takes ``resume`` gets the state of its last checkpoint (``None`` on a first run), so
    that a trial whose worker was lost can go on from its last epoch.
    """
    fn = resolve(spec, "--trial")
    history: list[dict[str, float]] = []

    def user_report(epoch: int, **metrics: Any) -> None:
        values = {k: float(v) for k, v in metrics.items() if _is_number(v)}
        history.append({"epoch": int(epoch), **values})
        if report is not None and report(int(epoch), values) is True:
            raise TrialPruned(int(epoch))

    names, any_kw = accepts(fn)
    offered = {"data": data, "checkpoint": checkpoint, "resume": resume}
    extra = {k: v for k, v in offered.items() if k in names or (any_kw and k == "data")}
    try:
        returned = fn(model, dict(config), user_report, **extra)
    except TrialPruned:
        return "pruned", dict(history[-1]) if history else {}, history, None
    if not isinstance(returned, Mapping):
        return "failed", {}, history, (
            f"--trial {spec} returned a {type(returned).__name__}, not a dict of metrics"
        )
    metrics: dict[str, float] = {}
    for key, value in returned.items():
        if not _is_number(value):
            return "failed", {}, history, (
                f"--trial {spec} returned metric {key!r} = {value!r}, not a number"
            )
        metrics[str(key)] = float(value)
    return "complete", metrics, history, None


def _default(fn: Callable[..., Any], name: str) -> Any:
    try:
        param = inspect.signature(fn).parameters[name]
    except (TypeError, ValueError, KeyError):
        return None
    return None if param.default is inspect.Parameter.empty else param.default


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    return isinstance(value, (int, float))  # NaN included: the search fails that trial


def _why(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
