"""Trials end to end: every zoo model under every method, failures, determinism, CLI."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

import allocator
from allocator import count_parameters
from allocator.cli import main
from trials import TrialConfig, TrialResult, build_model, load_dataset, run
from trials.baselines import hashed
from trials.config import METHODS
from trials.train import parameter_groups, train

torch.set_num_threads(1)

# Image models take the 8x8 digits; every other model takes MNIST-1D.
IMAGE_MODELS = ("resnet-20", "wrn-16-4")
ONE_D_MODELS = (
    "mlp", "mlp-3x256", "cnn1d", "resnet1d", "resnet1d-8x32", "transformer-4x128", "lstm-2x128",
)

TINY: dict[str, Any] = {
    "epochs": 1, "max_steps_per_epoch": 1, "batch_size": 16, "data_size": 200,
    "device": "cpu", "threads": 1,
}


def _config(model: str, method: str, **changes: Any) -> TrialConfig:
    data = "digits" if model in IMAGE_MODELS else "mnist1d"
    return TrialConfig(model=model, data=data, method=method, **{"budget": 0.25, **TINY, **changes})


def _cases() -> list[Any]:
    cases = []
    for model in ONE_D_MODELS + IMAGE_MODELS:
        for method in METHODS:
            cases.append(pytest.param(model, method, id=f"{model}-{method}"))
    return cases


@pytest.mark.parametrize(("model", "method"), _cases())
def test_every_zoo_model_trains_a_step_under_every_method(model: str, method: str) -> None:
    result = run(_config(model, method))
    assert result.status == "complete", result.failure_reason
    assert result.steps == 1 and result.epochs_run == 1
    assert result.val_accuracy is not None and 0.0 <= result.val_accuracy <= 1.0
    assert math.isfinite(result.val_loss or math.nan)
    assert result.flops is not None and result.flops > 0
    assert result.trainable_params is not None
    assert sum(result.params_by_kind.values()) == result.trainable_params
    data = load_dataset(result.config["data"], size=TINY["data_size"])
    full = count_parameters(
        build_model(model, input_shape=data.input_shape, num_classes=data.num_classes)
    )
    expected = {"full": full, "hashed": int(0.25 * full)}
    if method in expected:
        assert result.trainable_params == expected[method]
    else:
        assert result.trainable_params <= int(0.25 * full)
    assert (result.allocation is not None) == (method == "ssn")
    if method == "ssn":  # the default's choice at 0.25, recorded with the result
        assert result.config["downsample"] is None and result.method_info["downsample"] == "slice"


def test_result_round_trips_through_json_exactly() -> None:
    result = run(_config("mlp", "ssn", eval_test=True, max_steps_per_epoch=2, epochs=2))
    assert result.test_accuracy is not None and result.test_loss is not None
    assert len(result.history) == 2
    again = TrialResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again == result
    assert again.config == _config("mlp", "ssn", eval_test=True, max_steps_per_epoch=2,
                                   epochs=2).to_dict()
    assert set(again.versions) == {"python", "torch", "npas", "numpy"}


def test_test_split_is_evaluated_only_when_asked() -> None:
    result = run(_config("mlp", "full"))
    assert result.test_accuracy is None and result.test_loss is None


def test_divergence_fails_the_trial_cleanly() -> None:
    result = run(_config("mlp", "full", lr=1e6, weight_decay=0.0, grad_clip=0.0,
                         max_steps_per_epoch=20, epochs=3))
    assert result.status == "failed"
    assert result.failure_reason is not None and "diverged" in result.failure_reason
    assert "epoch" in result.failure_reason and "step" in result.failure_reason


def test_same_config_twice_gives_identical_results_on_cpu() -> None:
    cfg = _config("cnn1d", "ssn", epochs=2, max_steps_per_epoch=3)
    first, second = run(cfg), run(cfg)
    assert first.val_accuracy == second.val_accuracy
    assert first.history == second.history


def test_a_fresh_process_gives_the_same_result_with_or_without_prepare() -> None:
    code = (
        "import json, sys, trials\n"
        "cfg = {'model': 'cnn1d', 'method': 'ssn', 'budget': 0.25, 'epochs': 1,\n"
        "       'max_steps_per_epoch': 2, 'data_size': 200, 'device': 'cpu'}\n"
        "if sys.argv[1] == 'prepare':\n"
        "    trials.prepare({**cfg, 'budget': 0.5})\n"
        "print(json.dumps(trials.run(cfg).to_dict()['history']))\n"
    )
    out = [
        subprocess.run([sys.executable, "-c", code, arg], capture_output=True, text=True,
                       check=True).stdout
        for arg in ("plain", "prepare")
    ]
    assert out[0] == out[1] and json.loads(out[0])


def test_prepare_leaves_the_rng_threads_and_determinism_as_it_found_them() -> None:
    from trials import prepare

    state = torch.random.get_rng_state()
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    prepare({"model": "mlp", "data_size": 200, "threads": 2})
    assert torch.equal(torch.random.get_rng_state(), state)
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before


def test_report_returning_true_prunes_the_trial() -> None:
    seen: list[tuple[int, dict[str, float]]] = []

    def report(epoch: int, metrics: dict[str, float]) -> bool:
        seen.append((epoch, metrics))
        return epoch >= 2

    result = run(_config("mlp", "full", epochs=5), report=report)
    assert result.status == "pruned" and result.epochs_run == 2
    assert [e for e, _ in seen] == [1, 2]
    assert {"val_accuracy", "val_loss", "train_loss", "lr", "epoch_time"} <= set(seen[0][1])


def test_config_errors_propagate() -> None:
    with pytest.raises(allocator.BudgetError, match="budget must be >="):
        run(_config("mlp", "hashed", budget=3))
    with pytest.raises(allocator.ConfigError, match="epochs"):
        run({"model": "mlp", "epochs": 0})
    with pytest.raises(allocator.ConfigError, match="model spec"):
        run(_config("alexnet", "full"))


def test_other_errors_fail_the_trial_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("shapes do not match")

    monkeypatch.setattr("trials.runner.train", broken)
    result = run(_config("mlp", "ssn"))
    assert result.status == "failed"
    assert result.failure_reason == "RuntimeError: shapes do not match"
    assert result.trainable_params is not None and result.epochs_run == 0
    assert TrialResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


def test_keep_model_returns_the_trained_module() -> None:
    result = run(_config("mlp", "ssn"), keep_model=True)
    assert isinstance(result.model, allocator.SSN)
    assert "model" not in result.to_dict()
    assert run(_config("mlp", "ssn")).model is None


def test_reduced_width_reports_its_width() -> None:
    result = run(_config("mlp", "reduced_width"))
    assert 0 < result.method_info["width"] < 1


# --- the command line -----------------------------------------------------------------

CLI_TINY = ["--data-size", "200", "--epochs", "1", "--max-steps-per-epoch", "2",
            "--batch-size", "16", "--device", "cpu"]


def test_npas_train_prints_metrics_and_allocation(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "--model", "mlp", "--data", "mnist1d", "--method", "ssn",
                 "--budget", "0.25", "--groups", "2", "--mapping", "roundrobin", "--test",
                 *CLI_TINY])
    out = capsys.readouterr().out
    assert code == 0
    assert "val accuracy" in out and "test accuracy" in out and "trainable params" in out
    assert "generator" in out  # the allocation table
    assert re.search(r"^downsample +slice$", out, re.M), out  # what the default chose


@pytest.mark.parametrize("budget", ["abc", "nan", "0", "-1"])
def test_npas_train_bad_budget_is_one_line_and_exit_2(
    budget: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["train", "--model", "mlp", "--budget", budget, *CLI_TINY])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "budget must be a positive number" in err
    assert repr(budget) in err


def test_npas_train_save_needs_an_ssn(capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    code = main(["train", "--model", "mlp", "--method", "full", "--save",
                 str(tmp_path / "x.pt"), *CLI_TINY])
    assert code == 2 and "--save" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["ssn", "hashed", "reduced_width"])
def test_npas_train_exports_a_plain_state_dict(method: str, tmp_path: Any) -> None:
    path = tmp_path / "model.pt"
    args = ["train", "--model", "mlp", "--method", method, "--export", str(path), *CLI_TINY]
    if method == "ssn":
        args += ["--save", str(tmp_path / "ssn.pt")]
    assert main(args) == 0
    state = torch.load(path, weights_only=True)
    if method != "reduced_width":  # the others deploy the full architecture
        build_model("mlp", input_shape=(1, 40), num_classes=10).load_state_dict(state)
    if method == "ssn":
        assert (tmp_path / "ssn.pt").exists()


# --- the training loop's pieces -------------------------------------------------------


def _toy_data(n: int = 64) -> SimpleNamespace:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] > 0).long()
    split = SimpleNamespace(x=x, y=y)
    return SimpleNamespace(train=split, val=split, test=split, input_shape=(6,), num_classes=2)


def test_weight_decay_applies_to_weights_not_biases_or_generators() -> None:
    model = nn.Sequential(nn.Linear(6, 32), nn.LayerNorm(32), nn.Linear(32, 2))
    ssn = allocator.shapeshift(model, 0.5, downsample="wavg", upsample="mask")
    names = {id(p): n for n, p in ssn.named_parameters()}
    decay, no_decay = ([names[id(p)] for p in g["params"]] for g in parameter_groups(ssn, 0.1))
    assert decay == ["groups.0.theta"]
    assert any("parametrizations" in n for n in no_decay)
    assert all(not n.startswith("groups.") for n in no_decay)
    net = hashed(nn.Sequential(nn.Linear(6, 32), nn.Linear(32, 2)), 100)
    decay_net = parameter_groups(net, 0.1)[0]["params"]
    assert len(decay_net) == 1 and decay_net[0] is net.shared


def test_step_schedule_divides_by_ten_at_half_and_three_quarters() -> None:
    cfg = TrialConfig(method="full", device="cpu", epochs=4, batch_size=16, schedule="step",
                      lr=1.0)
    out = train(nn.Linear(6, 2), _toy_data(64), cfg)
    assert [h["lr"] for h in out.history] == pytest.approx([1.0, 1.0, 0.1, 0.01])


def test_cosine_schedule_decays_to_zero() -> None:
    cfg = TrialConfig(method="full", device="cpu", epochs=4, batch_size=16, lr=1.0)
    out = train(nn.Linear(6, 2), _toy_data(64), cfg)
    lrs = [h["lr"] for h in out.history]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 0.05


class _Hungry(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise MemoryError("cannot allocate 1 TiB")


def test_out_of_memory_fails_the_trial_with_the_reason() -> None:
    out = train(_Hungry(), _toy_data(), TrialConfig(method="full", device="cpu", epochs=1))
    assert out.status == "failed"
    assert out.failure_reason == "out of memory at epoch 1: cannot allocate 1 TiB"


def test_train_measures_steps_time_and_memory() -> None:
    cfg = TrialConfig(method="full", device="cpu", epochs=2, batch_size=16)
    out = train(nn.Linear(6, 2), _toy_data(64), cfg)
    assert out.status == "complete" and out.steps == 8 and out.epochs_run == 2
    assert out.step_time_s is not None and 0 < out.step_time_s < out.train_time_s
    assert out.peak_memory_bytes >= 0


def test_training_leaves_threads_and_determinism_as_it_found_them() -> None:
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    train(nn.Linear(6, 2), _toy_data(), TrialConfig(method="full", device="cpu", epochs=1,
                                                     threads=2))
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before


@pytest.mark.slow  # k-means (scikit-learn) import and fit
def test_learned_mapping_pretrains_with_the_same_loop() -> None:
    result = run(_config("cnn1d", "ssn", mapping="learned", groups=2, pretrain_epochs=1,
                         max_steps_per_epoch=3, lr=0.01))
    assert result.status == "complete", result.failure_reason
    assert result.allocation is not None and len(result.allocation["groups"]) == 2


def test_importing_trials_loads_no_search_or_cluster_library() -> None:
    code = (
        "import sys, trials; trials.run; trials.TrialConfig; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'optuna', 'sqlalchemy')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
