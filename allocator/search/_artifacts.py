"""Kept weights (Optuna artifacts) and ``npas export``: a trial's plain trained model.

With ``--keep-models pareto`` (or ``all``) the controller uploads the weights a worker
sent back to a :class:`optuna.artifacts.FileSystemArtifactStore`; Optuna records the
artifact on the trial, so the dashboard lists it. :func:`export_model` loads those
weights, or retrains the trial's config when there are none, materialises the model and
saves the plain ``state_dict``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from allocator._errors import CheckpointError, ConfigError
from allocator._export import check_out_path
from allocator._storage_url import store_files
from allocator.search._store import StudyStore

if TYPE_CHECKING:
    import optuna
    from optuna.artifacts import FileSystemArtifactStore
    from torch import nn

__all__ = ["attach_to_study", "check_dir", "export_model", "keep", "open_store"]

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


def keep(store: FileSystemArtifactStore, trial: optuna.Trial | optuna.trial.FrozenTrial,
         data: bytes, storage: optuna.storages.BaseStorage | None = None) -> str:
    """Upload one trial's weights; returns the artifact id. A ``FrozenTrial`` (the Tune
    engine holds no ``optuna.Trial``) needs its study's ``storage``."""
    from optuna.artifacts import upload_artifact

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"trial-{trial.number}.pt"
        path.write_bytes(data)
        return upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial,
                               storage=storage)


def attach_to_study(
    storage: str | None, study: str, art_dir: str | os.PathLike[str], files: list[Path]
) -> list[str]:
    """Keep ``files`` (e.g. the Pareto plots) as artifacts of the study itself; Optuna
    Dashboard lists them on the study page. A study artifact of the same file name is
    rewritten in place (a resumed search redraws its plots), so there is one of each.
    Returns the artifact ids.
    """
    import json

    from optuna.artifacts import upload_artifact

    artifact_store = open_store(Path(art_dir))
    with StudyStore(storage, must_exist=True) as store:
        loaded = store.load_study(study)
        existing: dict[str, str] = {}
        rdb = store.optuna_storage  # the storage's public API, not the study's private one
        attrs = rdb.get_study_system_attrs(rdb.get_study_id_from_name(study))
        for key, text in attrs.items():
            meta = json.loads(text) if key.startswith("artifacts:") and text else None
            if isinstance(meta, dict):  # the dashboard marks a deleted artifact as null
                existing[meta["filename"]] = meta["artifact_id"]
        ids: list[str] = []
        for f in files:
            if f.name in existing:
                with f.open("rb") as content:
                    artifact_store.write(existing[f.name], content)
                ids.append(existing[f.name])
            else:
                ids.append(upload_artifact(artifact_store=artifact_store, file_path=str(f),
                                           study_or_trial=loaded))
        return ids


_STATE_WORDS = {
    "COMPLETE": "complete", "FAIL": "failed", "PRUNED": "pruned", "RUNNING": "still running",
    "WAITING": "queued and not run yet (a retry or an enqueued trial)",
}


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

    with StudyStore(storage, read_only=True) as store:
        loaded = store.load_study(study)
        record = loaded.user_attrs.get("npas_settings", {})
        art_dir = artifacts or record.get("artifacts")
        check_out_path(out, "--out", forbidden=(
            *store_files(store.url), *([art_dir] if art_dir else [])))
        all_trials = loaded.get_trials(deepcopy=False)
        trials_ = [t for t in all_trials if t.number == trial_number]
        if not trials_:
            there = f"0..{len(all_trials) - 1}" if all_trials else "no trials yet"
            raise ConfigError(f"study {study!r} has no trial {trial_number}; it has {there}")
        frozen = trials_[0]
        if frozen.state.name != "COMPLETE":
            raise ConfigError(
                f"trial {trial_number} of {study!r} is {_STATE_WORDS[frozen.state.name]}; "
                "only complete trials can be exported"
            )
        config = frozen.user_attrs.get("npas_config")
        if not isinstance(config, dict):
            raise ConfigError(
                f"trial {trial_number} of {study!r} was not run by `npas search` (it has no "
                "npas_config attribute); only trials of npas studies can be exported"
            )
        result = frozen.user_attrs.get("npas_result", {})
        kept = _kept_weights(frozen, store, art_dir)
    if kept is not None:
        where, data = kept
        try:
            module = _rebuild(config, result.get("method_info") or {}, data, where)
        except CheckpointError as exc:
            raise CheckpointError(
                f"kept weights of trial {trial_number} cannot be used: {exc}; "
                "export needs the file the search kept there, unchanged"
            ) from None
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


def _kept_weights(
    frozen: Any, store: StudyStore, art_dir: str | None
) -> tuple[str, bytes] | None:
    """Where the trial's kept weights are, and their bytes (``None``: none were kept).

    Reads only: a missing artifacts directory is an error, never created.
    """
    from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta

    metas = get_all_artifact_meta(frozen, storage=store.optuna_storage)
    if not metas:
        return None
    if not art_dir:
        raise ConfigError("the trial has kept weights but no artifacts directory; give --artifacts")
    if not Path(art_dir).is_dir():
        raise ConfigError(
            f"artifacts directory {art_dir!r} does not exist; give --artifacts DIR, the "
            "directory where the search kept the weights"
        )
    artifact_id = metas[-1].artifact_id
    artifact_store = FileSystemArtifactStore(base_path=art_dir)
    try:
        with artifact_store.open_reader(artifact_id) as reader:
            return str(Path(art_dir) / artifact_id), reader.read()
    except Exception as exc:
        raise CheckpointError(
            f"kept weights of trial {frozen.number} (artifact {artifact_id}) are missing "
            f"from {art_dir}: {exc}"
        ) from None


def _rebuild(
    config: dict[str, Any], info: dict[str, Any], data: bytes, where: str = "(kept weights)"
) -> nn.Module:
    """The trained module from kept weights: the model rebuilt by its factory (zoo or the
    user's) at the trial's width, the method's structure, the weights loaded."""
    from trials import methods
    from trials.config import TrialConfig
    from trials.user import model_source
    from trials.user_data import load_data

    cfg = TrialConfig.from_dict(config)
    dataset = load_data(config)
    source = model_source(cfg.model, input_shape=tuple(dataset.input_shape),
                          num_classes=dataset.num_classes, hp=cfg.hp,
                          has_trial=cfg.trial is not None)
    return methods.rebuild(source, cfg, info, data, where)


def _plain(module: nn.Module) -> nn.Module:
    """The deployable module: an SSN or a HashedNet materialised, anything else as is."""
    from trials.methods import deploy

    return deploy(module)
