"""A transformers model built from a config (BertConfig, small; no weights downloaded),
searched with its own trial function that reads ``outputs.logits`` and a user objective."""

from __future__ import annotations

from pathlib import Path

import pytest

from allocator.search import StudyStore
from tests.test_user_search import HERE, copy_project, run_npas

pytest.importorskip("transformers")


@pytest.mark.slow
def test_a_bert_model_is_searched_with_its_own_objective(tmp_path) -> None:
    project = copy_project(tmp_path / "bert", HERE / "user_bert")
    url = f"sqlite:///{project / 'npas.db'}"
    run = run_npas(["search", "--study", "bert", "--model", "bert:build", "--data", "bert:load",
                    "--trial", "bert:fit", "--space", "space.toml", "--objective", "val_f1:max",
                    "--trials", "4", "--concurrency", "2", "--epochs", "1", "--seed", "3",
                    "--storage", url], project)
    assert run.returncode == 0, run.stderr[-3000:]
    with StudyStore(url, must_exist=True) as store:
        rows = store.results("bert")
        study = store.load_study("bert")
    assert study.metric_names == ["val_f1", "trainable_params"]
    assert [r["state"] for r in rows] == ["complete"] * 4
    for t, r in zip(study.trials, rows, strict=True):
        assert t.values == [r["metrics"]["val_f1"], r["trainable_params"]]
        assert 0.0 <= r["metrics"]["val_f1"] <= 1.0
        if r["method"] != "full":  # the parameter method held the budget
            assert r["trainable_params"] < _full_count(project, r["hp"]["hidden"])
    pareto = run_npas(["pareto", "bert", "--storage", url], project)
    assert pareto.returncode == 0 and "val_f1" in pareto.stdout


def _full_count(project: Path, hidden: int) -> int:
    import sys

    sys.path.insert(0, str(project))
    try:
        import bert

        return sum(p.numel() for p in bert.build(hidden=hidden).parameters())
    finally:
        sys.path.remove(str(project))
