"""Checkpoints per epoch: a run stopped after any epoch and resumed from its checkpoint
ends exactly as the uninterrupted run (same history, accuracy and steps), on a real SSN
trained on MNIST-1D; the state survives bytes (``weights_only`` loading)."""

from __future__ import annotations

from typing import Any

import pytest

from allocator.search._worker import TrialWorker, execute, state_bytes, state_from
from trials import run

CONFIG = {"model": "cnn1d", "data": "mnist1d", "method": "ssn", "budget": 0.3, "epochs": 4,
          "data_size": 400, "max_steps_per_epoch": 3, "device": "cpu", "mapping": "roundrobin",
          "groups": 2}


@pytest.fixture(scope="module")
def whole() -> Any:
    return run(CONFIG)


@pytest.mark.parametrize("stop_after", [1, 3])
def test_a_run_resumed_from_its_checkpoint_ends_as_the_uninterrupted_one(whole, stop_after) -> None:
    states: dict[int, bytes] = {}
    part = run(CONFIG, checkpoint=lambda epoch, state: states.__setitem__(epoch, state_bytes(state)),
               report=lambda epoch, metrics: epoch == stop_after)
    assert part.status == "pruned" and sorted(states) == list(range(1, stop_after + 1))
    rest = run(CONFIG, resume=state_from(states[stop_after]))
    assert rest.status == "complete" and rest.epochs_run == 4
    assert rest.history == whole.history and rest.steps == whole.steps
    assert rest.val_accuracy == whole.val_accuracy


def test_the_worker_passes_a_checkpoint_on_to_the_trial_function(whole) -> None:
    states: list[bytes] = []
    execute(run, CONFIG, checkpoint=lambda epoch, state: states.append(state_bytes(state)))
    assert len(states) == 4
    out = TrialWorker("trials:run").run(CONFIG, resume=states[1])  # from epoch 2
    assert out["result"]["history"] == whole.to_dict()["history"]
    assert execute(lambda c, keep_model: {"status": "complete"}, {}, resume=states[0])[
        "result"]["status"] == "complete"  # a trial function without resume ignores it
