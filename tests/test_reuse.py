"""Actor reuse changes speed, never results: same metrics with and without it, paused
trials resume from their checkpoints exactly, and a failed trial does not poison the
next trial that its actor runs."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from ray import tune

from hpo.runner import StudyRunner
from tests.conftest import TINY_STUDY, ListReporter
from trainables.data import load_dataset
from trainables.loop import train
from trainables.tune_trial import run_trial

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CURVE = ["train_loss", "val_loss", "val_accuracy", "train_accuracy"]


def uninterrupted(config: dict, epochs: int) -> pd.DataFrame:
    """The same trial trained in this process in one go, as the reference curve."""
    reporter = ListReporter()
    data = load_dataset("digits", 0.2, 0.2, config["seed"])
    train("cnn", config, data, reporter, max_epochs=epochs, threads=1)
    return pd.DataFrame(reporter.rows)


def run_study(tmp_path, name: str, strategy: str, reuse: bool) -> pd.DataFrame:
    study = {**TINY_STUDY, "name": name, "strategies": [strategy]}
    study_file = tmp_path / f"{name}.yaml"
    study_file.write_text(yaml.safe_dump(study))
    runner = StudyRunner(study_file, tmp_path / "results", echo=lambda _: None, reuse_actors=reuse)
    runner.run()
    return runner.trials()


def curves(trials: pd.DataFrame) -> pd.DataFrame:
    keys = ["config/lr", "config/optimizer", "epoch"]
    return trials[keys + CURVE].sort_values(keys).reset_index(drop=True)


def test_same_results_with_and_without_actor_reuse(ray_session, tmp_path):
    reused = run_study(tmp_path, "reused", "random", reuse=True)
    fresh = run_study(tmp_path, "fresh", "random", reuse=False)
    assert reused["trial_id"].nunique() == 4 and len(reused) == 16
    # with reuse, one actor per slot ran several trials; without, one process per trial
    assert reused["pid"].nunique() <= 2 < reused["trial_id"].nunique()
    assert fresh.groupby("trial_id")["pid"].first().nunique() == fresh["trial_id"].nunique()
    pd.testing.assert_frame_equal(curves(reused), curves(fresh), rtol=1e-6, atol=1e-7)


def test_paused_trials_resume_exactly_from_their_checkpoints(ray_session, tmp_path):
    trials = run_study(tmp_path, "halving", "sha", reuse=True)
    longest = trials.groupby("trial_id")["epoch"].max()
    promoted = longest[longest == 4].index
    assert len(promoted) == 2  # paused at epochs 1 and 2, resumed twice
    for trial_id in promoted:
        rows = trials[trials["trial_id"] == trial_id].sort_values("epoch")
        assert rows["epoch"].tolist() == [1, 2, 3, 4]
        config = {
            "lr": float(rows["config/lr"].iloc[0]),
            "optimizer": rows["config/optimizer"].iloc[0],
            **TINY_STUDY["fixed"],
            "seed": 0,
        }
        reference = uninterrupted(config, 4)
        np.testing.assert_allclose(
            rows[CURVE].to_numpy(float), reference[CURVE].to_numpy(float), rtol=1e-5
        )


def poisoning_trainable(config, data):
    """The first trial leaves the worker in a bad state, then fails; the next ones are
    the real trial function and must not notice."""
    tune.report({"pid": os.getpid(), "epoch": 0, "val_accuracy": 0.0})  # which actor runs it
    if config["poison"]:
        torch.set_num_threads(2)
        torch.manual_seed(12345)
        torch.set_default_dtype(torch.float64)
        raise RuntimeError("this trial fails on purpose")
    run_trial(config, data, "cnn", max_epochs=3, threads=1)


def test_failed_trial_does_not_poison_the_next_one_in_its_actor(ray_session, tmp_path):
    data = load_dataset("digits", 0.2, 0.2, 0)
    config = {"lr": 0.01, "optimizer": "adam", **TINY_STUDY["fixed"], "seed": 0}
    tuner = tune.Tuner(
        tune.with_parameters(poisoning_trainable, data=data),
        param_space={**config, "poison": tune.grid_search([True, False, False])},
        tune_config=tune.TuneConfig(
            metric="val_accuracy", mode="max", reuse_actors=True, max_concurrent_trials=1
        ),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="poison", verbose=0),
    )
    grid = tuner.fit()
    failed, *healthy = sorted(grid, key=lambda r: not r.config["poison"])
    assert failed.error is not None and all(r.error is None for r in healthy)
    pids = {int(r.metrics_dataframe["pid"].iloc[0]) for r in healthy}
    assert len(pids) == 1  # the healthy trials ran one after the other in one reused actor
    reference = uninterrupted(config, 3)[CURVE].to_numpy(float)
    for result in healthy:
        rows = result.metrics_dataframe
        np.testing.assert_allclose(rows[rows["epoch"] > 0][CURVE].to_numpy(float), reference)
