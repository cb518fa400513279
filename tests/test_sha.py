"""Synchronous successive halving: rung sizes and exactly which trials are promoted."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pytest
from ray import tune

from hpo.strategies.brackets import bracket_cost, rung_plan, trials_for_budget
from hpo.strategies.successive_halving import SynchronousSuccessiveHalving


def test_rung_plan_shrinks_by_eta_and_ends_at_max_t():
    assert rung_plan(27, 1, 27, 3) == [(27, 1), (9, 3), (3, 9), (1, 27)]
    assert rung_plan(10, 2, 27, 3) == [(10, 2), (3, 6), (1, 18), (1, 27)]
    assert rung_plan(1, 1, 4, 2) == [(1, 1), (1, 2), (1, 4)]


def test_bracket_cost_counts_resumed_epochs_once():
    # 27x1 + 9x(3-1) + 3x(9-3) + 1x(27-9)
    assert bracket_cost(rung_plan(27, 1, 27, 3)) == 27 + 18 + 18 + 18
    assert trials_for_budget(81, 1, 27, 3) == 27
    assert trials_for_budget(80, 1, 27, 3) < 27
    assert bracket_cost(rung_plan(trials_for_budget(270, 1, 27, 3), 1, 27, 3)) <= 270


# Validation curve of each fake trial (index = config["curve"]), per epoch 1..9.
# At epoch 1 trials 6, 7, 8 lead; by epoch 3 trial 6 has overtaken 7 and 8.
def curve(index: int, epoch: int) -> float:
    if index == 6:
        return 0.6 + 0.1 * epoch
    if index == 2:
        return math.nan if epoch >= 1 else 0.0  # diverges at once: ranks last
    return index / 10 + 0.01 * epoch


def fake_trainable(config):
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            start = json.loads((Path(directory) / "state.json").read_text())["epoch"]
    for epoch in range(start + 1, 10):
        if config["curve"] == 4 and config.get("fail"):
            raise RuntimeError("boom")
        with tempfile.TemporaryDirectory() as directory:
            (Path(directory) / "state.json").write_text(json.dumps({"epoch": epoch}))
            tune.report(
                {"score": curve(config["curve"], epoch), "epoch": epoch},
                checkpoint=tune.Checkpoint.from_directory(directory),
            )


def run_bracket(tmp_path, fail: bool = False):
    scheduler = SynchronousSuccessiveHalving(
        num_trials=9, min_t=1, max_t=9, reduction_factor=3, max_running=2
    )
    tuner = tune.Tuner(
        fake_trainable,
        param_space={"curve": tune.grid_search(list(range(9))), "fail": fail},
        tune_config=tune.TuneConfig(
            metric="score", mode="max", scheduler=scheduler, reuse_actors=True
        ),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="sha", verbose=0),
    )
    grid = tuner.fit()
    epochs = {r.config["curve"]: int(r.metrics.get("training_iteration", 0)) for r in grid}
    return scheduler, grid, epochs


@pytest.mark.timeout(300)
def test_promotes_exactly_the_best_of_each_rung(ray_session, tmp_path):
    scheduler, grid, epochs = run_bracket(tmp_path)
    assert scheduler.rungs == [(9, 1), (3, 3), (1, 9)]
    # rung 1: 9 trials at 1 epoch; the best three (8, 7, 6) continue to 3 epochs,
    # and of those only trial 6 (fastest riser) goes on to 9 epochs.
    assert epochs == {0: 1, 1: 1, 2: 1, 3: 1, 4: 1, 5: 1, 6: 9, 7: 3, 8: 3}
    by_curve = {r.config["curve"]: r.metrics["trial_id"] for r in grid}
    assert [sorted(ids) for ids in scheduler.history] == [
        sorted(by_curve[i] for i in (6, 7, 8)),
        [by_curve[6]],
    ]
    assert sum(epochs.values()) == bracket_cost(scheduler.rungs)
    # trial 6 resumed from checkpoints: its reported epochs are 1..9 with no repeats
    sixth = next(r for r in grid if r.config["curve"] == 6)
    assert list(sixth.metrics_dataframe["epoch"]) == list(range(1, 10))
    # the state on disk agrees: stopped trials stay stopped when Tuner.restore reads it
    from hpo.results import load_analysis

    saved = {t.trial_id: t.status for t in load_analysis(tmp_path / "sha").trials}
    assert set(saved.values()) == {"TERMINATED"}


@pytest.mark.timeout(300)
def test_errored_trial_leaves_its_rung(ray_session, tmp_path):
    scheduler, grid, epochs = run_bracket(tmp_path, fail=True)
    errored = [r.config["curve"] for r in grid if r.error is not None]
    assert errored == [4]
    assert epochs[6] == 9 and epochs[7] == 3 and epochs[8] == 3
    assert len(scheduler.history) == 2
