"""PBT's exploit step: a trial that copies another's checkpoint continues that trial's
weights and optimizer state, with its own (perturbed) hyperparameters."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from hpo.runner import StudyRunner
from tests.conftest import TINY_STUDY, ListReporter
from trainables.data import load_dataset
from trainables.loop import build_model, full_config, load_optimizer_state, make_optimizer, train
from trainables.tune_trial import load_checkpoint_state


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", 0.2, 0.2, seed=0)


def test_copied_state_keeps_momentum_and_takes_the_new_learning_rate(digits):
    source = ListReporter()
    config = {"optimizer": "adam", "lr": 3e-3, "seed": 0}
    train("cnn", config, digits, source, max_epochs=2, threads=1)
    saved = source.states[-1]
    perturbed = {**config, "lr": 1e-3}
    full = full_config("cnn", perturbed)
    optimizer = make_optimizer(build_model("cnn", full, digits), full)
    load_optimizer_state(optimizer, saved["optimizer"])
    assert optimizer.param_groups[0]["lr"] == 1e-3  # the config's, not the checkpoint's 3e-3
    restored = optimizer.state_dict()["state"]
    for key, state in saved["optimizer"]["state"].items():
        assert torch.equal(restored[key]["exp_avg"], state["exp_avg"])  # Adam's moments
        assert torch.equal(restored[key]["step"], state["step"])
    copy = ListReporter(state=saved)
    train("cnn", perturbed, digits, copy, max_epochs=3, threads=1)
    assert [r["epoch"] for r in copy.rows] == [3] and copy.rows[0]["lr"] == 1e-3
    assert copy.rows[0]["train_loss"] < source.rows[0]["train_loss"]  # not from scratch


def _states_by_epoch(trial_dir: Path) -> dict[int, dict]:
    states = (load_checkpoint_state(c) for c in sorted(trial_dir.glob("checkpoint_*")))
    return {int(state["epoch"]): state for state in states}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_exploiting_trial_continues_from_the_copied_checkpoint(ray_session, tmp_path):
    """Replays every exploit of a real PBT run: one epoch from the source's checkpoint
    with the perturbed config must give exactly the exploiting trial's next checkpoint
    (model weights and optimizer state both shape that epoch)."""
    study = {
        **TINY_STUDY,
        "space": {**TINY_STUDY["space"], "dropout": {"uniform": {"low": 0.0, "high": 0.5}}},
        "budget": {"max_epochs": 4, "min_epochs": 1, "reduction_factor": 2, "total_epochs": 24},
        "strategies": ["pbt"],
        "strategy_options": {"pbt": {"perturbation_interval": 2, "quantile_fraction": 0.5}},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    runner = StudyRunner(path, tmp_path / "results", echo=lambda _: None)
    runner.run()
    run = runner.directory / "pbt" / "seed-0"
    trials = {p.name.split("_")[3]: p for p in run.glob("run_trial_*")}  # by trial index
    policies = sorted(run.glob("pbt_policy_*.txt"))
    assert policies, "no trial exploited another (quantile 0.5 of 6 trials every 2 epochs)"
    frame = runner.trials()
    exploits = 0
    for policy in policies:
        target = trials[policy.stem.rsplit("_", 1)[1]]
        for line in policy.read_text().splitlines():
            # Ray's line: [tag, source tag, step, source step, source config, new config];
            # synchronous PBT copies the source's checkpoint of the same step (its own
            # "source step" field is not always that epoch).
            _, source_tag, step, _, _, new_config = json.loads(line)
            index = int(re.match(r"(\d+)_", source_tag).group(1))  # the tag starts with it
            source = trials[f"{index:05d}"]
            copied = _states_by_epoch(source)[step]
            replay = ListReporter(state=copied)
            config = {k: v for k, v in new_config.items() if k != "proposed_by"}
            train("cnn", config, runner._data(0), replay, max_epochs=step + 1, threads=1)
            saved = _states_by_epoch(target)[step + 1]
            for name, tensor in saved["model"].items():
                assert torch.allclose(replay.states[0]["model"][name], tensor, atol=1e-6), name
            # The copied optimizer state shaped that epoch: without it the weights differ.
            fresh = {**copied, "optimizer": {**copied["optimizer"], "state": {}}}
            scratch = ListReporter(state=fresh)
            train("cnn", config, runner._data(0), scratch, max_epochs=step + 1, threads=1)
            assert not all(
                torch.allclose(scratch.states[0]["model"][name], tensor, atol=1e-6)
                for name, tensor in saved["model"].items()
            )
            # Labelled per epoch: the trial's own random config, then the perturbed copy.
            rows = frame[frame["trial_id"] == policy.stem.removeprefix("pbt_policy_")]
            assert set(rows.loc[rows["epoch"] <= step, "proposed_by"]) == {"random"}
            assert set(rows.loc[rows["epoch"] > step, "proposed_by"]) == {"perturbation"}
            exploits += 1
    assert exploits >= 1
    perturbed = frame[frame["proposed_by"] == "perturbation"]
    assert not perturbed.empty and (perturbed["strategy"] == "pbt").all()
