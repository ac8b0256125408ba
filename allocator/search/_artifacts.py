"""Kept weights (Optuna artifacts) and ``npas export``: a trial's plain trained model.

With ``--keep-models pareto`` (or ``all``) the controller uploads the weights a worker
sent back to a :class:`optuna.artifacts.FileSystemArtifactStore`; Optuna records the
artifact on the trial, so the dashboard lists it. :func:`export_model` loads those
weights, or retrains the trial's config when there are none, materialises the model and
saves the plain ``state_dict``.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from allocator._errors import CheckpointError, ConfigError
from allocator.search._store import StudyStore

if TYPE_CHECKING:
    import optuna
    from optuna.artifacts import FileSystemArtifactStore
    from torch import nn

__all__ = ["check_dir", "export_model", "keep", "open_store"]

logger = logging.getLogger(__name__)


def check_dir(path: Path) -> None:
    """:class:`ConfigError` unless ``path`` is (or can be made) a writable directory."""
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise ConfigError(f"artifacts directory {str(path)!r} cannot be created or written")


def open_store(path: Path) -> FileSystemArtifactStore:
    from optuna.artifacts import FileSystemArtifactStore

    path.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(base_path=path)


def keep(store: FileSystemArtifactStore, trial: optuna.Trial, data: bytes) -> str:
    """Upload one trial's weights; returns the artifact id."""
    from optuna.artifacts import upload_artifact

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"trial-{trial.number}.pt"
        path.write_bytes(data)
        return upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial)


def export_model(
    study: str,
    trial_number: int,
    out: str | os.PathLike[str],
    *,
    storage: str | None = None,
    artifacts: str | None = None,
) -> dict[str, Any]:
    """Save trial ``trial_number``'s trained model as a plain ``state_dict`` at ``out``.

    Uses the kept weights when the search kept them (``--keep-models``), otherwise
    retrains the trial's config (same seed, so the same model on CPU). The saved
    ``state_dict`` loads into a freshly built model (``reduced_width``: one built at the
    recorded width). Returns what was done: ``source`` (``kept`` or ``retrained``),
    ``method``, ``trainable_params`` of the exported module.

    Example:
        >>> export_model("demo", 3, "model.pt")  # doctest: +SKIP
        {'source': 'kept', 'method': 'ssn', 'params': 4213, 'out': 'model.pt'}
    """
    import torch

    with StudyStore(storage, must_exist=True) as store:
        loaded = store.load_study(study)
        trials_ = [t for t in loaded.get_trials(deepcopy=False) if t.number == trial_number]
        if not trials_:
            raise ConfigError(
                f"study {study!r} has no trial {trial_number}; it has 0..{len(loaded.trials) - 1}"
            )
        frozen = trials_[0]
        config = frozen.user_attrs.get("npas_config")
        if not isinstance(config, dict):
            raise ConfigError(f"trial {trial_number} of {study!r} has no npas config")
        if frozen.state.name != "COMPLETE":
            raise ConfigError(
                f"trial {trial_number} of {study!r} is {frozen.state.name.lower()}; "
                "only complete trials can be exported"
            )
        result = frozen.user_attrs.get("npas_result", {})
        record = loaded.user_attrs.get("npas_settings", {})
        art_dir = artifacts or record.get("artifacts")
        data = _kept_weights(frozen, store, art_dir)
    if data is not None:
        module = _rebuild(config, result.get("method_info") or {}, data)
        source = "kept"
    else:
        import trials

        logger.info("no kept weights for trial %d: retraining its config", trial_number)
        retrained = trials.run(config, keep_model=True)
        if retrained.status != "complete" or retrained.model is None:
            raise ConfigError(
                f"retraining trial {trial_number} failed: {retrained.failure_reason}"
            )
        module = retrained.model
        source = "retrained"
    plain = _plain(module)
    torch.save(plain.state_dict(), out)
    import allocator

    return {
        "source": source,
        "method": config.get("method"),
        "params": allocator.count_parameters(plain),
        "out": str(out),
    }


def _kept_weights(frozen: Any, store: StudyStore, art_dir: str | None) -> bytes | None:
    from optuna.artifacts import get_all_artifact_meta

    metas = get_all_artifact_meta(frozen, storage=store.optuna_storage)
    if not metas:
        return None
    if not art_dir:
        raise ConfigError("the trial has kept weights but no artifacts directory; give --artifacts")
    artifact_store = open_store(Path(art_dir))
    try:
        with artifact_store.open_reader(metas[-1].artifact_id) as reader:
            return reader.read()
    except Exception as exc:
        raise CheckpointError(
            f"kept weights of trial {frozen.number} are missing from {art_dir}: {exc}"
        ) from None


def _rebuild(config: dict[str, Any], info: dict[str, Any], data: bytes) -> nn.Module:
    """The trained module from kept weights: the architecture rebuilt, the weights loaded."""
    import torch

    import allocator
    import trials
    from trials.baselines import hashed

    dataset = trials.load_dataset(
        config["data"], seed=config.get("seed", 0), root=config.get("data_root"),
        size=config.get("data_size"),
    )
    method = config.get("method", "ssn")
    width = float(info["width"]) if method == "reduced_width" and "width" in info else 1.0
    model = trials.build_model(
        config["model"], input_shape=tuple(dataset.input_shape),
        num_classes=dataset.num_classes, width=width,
    )
    if method == "ssn":
        return allocator.load(io.BytesIO(data), model)
    try:
        saved = torch.load(io.BytesIO(data), weights_only=True)
        state = saved["state_dict"]
    except Exception as exc:
        raise CheckpointError(f"kept weights are not an npas module checkpoint: {exc}") from None
    if method == "hashed":
        model = hashed(model, config.get("budget", 0.25), seed=config.get("seed", 0))
    model.load_state_dict(state)
    return model


def _plain(module: nn.Module) -> nn.Module:
    """The deployable module: an SSN or a HashedNet materialised, anything else as is."""
    import allocator
    from trials.baselines import HashedNet, materialize_hashed

    if isinstance(module, allocator.SSN):
        return allocator.materialize(module)
    if isinstance(module, HashedNet):
        return materialize_hashed(module)
    return module
