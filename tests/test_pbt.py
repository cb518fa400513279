"""PBT's exploit step: a trial that copies another's checkpoint continues that trial's
weights and optimizer state, with its own (perturbed) hyperparameters."""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from pathlib import Path
from unittest import mock

import pytest
import torch
import yaml
from ray import tune
from ray.train._internal.session import _FutureTrainingResult, _TrainingResult
from ray.tune import Checkpoint
from ray.tune.execution.tune_controller import TuneController
from ray.tune.experiment import Trial

from hpo.runner import StudyRunner
from hpo.strategies.budget import EpochBudget
from hpo.strategies.capped_pbt import CappedPBT
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
    trials = {p.name.split("_")[3]: p for p in run.glob("run_trial-*")}  # by trial index
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


# ---------------------------------------------------------------- synchronous PBT's barrier
# Tune's own result, save, pause and stop code (Ray 2.60's TuneController) drives CappedPBT
# over stub trials; the test plays the actors: it starts trials, delivers their results
# (each with a checkpoint, as trainables.loop reports) and completes their saves.


class _Save(_FutureTrainingResult):
    """A save in flight; PBT resolves it when it clones the saving trial."""

    def __init__(self, trial: Trial):
        super().__init__(future=None)
        self.result = _TrainingResult(Checkpoint("/nonexistent"), dict(trial.last_result))

    def resolve(self, block: bool = True) -> _TrainingResult:
        return self.result


class _Controller(TuneController):
    def __init__(self, scheduler: CappedPBT, trials: list[Trial], stopper=None):  # no Ray
        self._scheduler_alg, self._search_alg = scheduler, mock.Mock(metric=None)
        self._callbacks, self._checkpoint_manager = mock.Mock(), mock.Mock()
        self._stopper = stopper or (lambda trial_id, result: False)
        self._metric, self._total_time, self._iteration = "val_accuracy", 0.0, 0
        self._trials, self._live_trials = trials, set(trials)
        self._pending_trials, self._pending_trials_list = set(trials), list(trials)
        self._running_trials, self._paused_trials = set(), set()
        self._stopped_trials, self._failed_trials = set(), set()
        self._resources_to_pending_trials = defaultdict(set)
        self._cached_trial_decisions, self._queued_trial_decisions = {}, {}
        self._trial_to_actor, self._trials_to_cache = {}, set()
        self._actor_manager = self._resource_updater = mock.Mock()
        for trial in trials:
            scheduler.on_trial_add(self, trial)

    def _schedule_trial_save(self, trial: Trial, result: dict | None = None) -> _Save:
        trial.temporary_state.saving_to = _Save(trial)
        return trial.temporary_state.saving_to

    def _schedule_trial_train(self, trial: Trial) -> None:
        pass  # the test delivers the next result

    def _maybe_cache_trial_actor(self, trial: Trial) -> bool:
        return True  # reuse_actors: the stopped trial's actor waits for the next one

    # the actors' side
    def start(self, trial: Trial) -> None:
        self._set_trial_status(trial, Trial.RUNNING)
        self._trial_to_actor[trial] = trial.temporary_state.ray_actor = mock.Mock()

    def result(self, trial: Trial, epoch: int, score: float, **extra) -> None:
        metrics = {"training_iteration": epoch, "val_accuracy": score, **extra}
        # a checkpoint with every result, but none from a diverged epoch (trainables.loop)
        self._on_training_result(trial, {**metrics, "should_checkpoint": "diverged" not in extra})

    def saved(self, trial: Trial) -> None:
        self._on_saving_result(trial, trial.temporary_state.saving_to.result)

    def choose(self) -> Trial | None:
        return self._scheduler_alg.choose_trial_to_run(self._wrapped())


def _epochs(controller: _Controller, trial: Trial, epochs: range, score: float) -> None:
    """Trial runs `epochs`, each result's checkpoint saved at once."""
    for epoch in epochs:
        controller.result(trial, epoch, score)
        controller.saved(trial)


def _population(n: int, stopper=None) -> tuple[CappedPBT, _Controller, list[Trial]]:
    scheduler = CappedPBT(
        time_attr="training_iteration",
        metric="val_accuracy",
        mode="max",
        perturbation_interval=3,
        hyperparam_mutations={"lr": tune.uniform(0.0, 1.0)},
        quantile_fraction=0.25,
        synch=True,
        log_config=False,  # no policy files: the stub trials have no storage
    )
    trials = [Trial("stub", config={"lr": 0.5}, stub=True, trial_id=f"t{i}") for i in range(n)]
    for trial in trials:
        trial.storage = mock.Mock()
    return scheduler, _Controller(scheduler, trials, stopper), trials


def test_member_exploited_while_its_pause_saves_keeps_running():
    """The worst member reached the step first and is still saving (its pause pending)
    when the last member's result completes the step: PBT exploits it mid-pause. Tune
    leaves a STOP cached for that dropped save, which ended the member at its next epoch
    while the others waited at the next step for it: no trial ran again (make demo hung)."""
    scheduler, controller, (best, worst) = _population(2)
    controller.start(best)
    controller.start(worst)
    _epochs(controller, best, range(1, 3), 0.9)
    _epochs(controller, worst, range(1, 3), 0.1)
    controller.result(worst, 3, 0.1)  # PAUSE: its save is in flight ...
    assert worst.status == Trial.RUNNING and worst.is_saving
    controller.result(best, 3, 0.9)  # ... when the step completes
    controller.saved(best)
    assert worst.status == Trial.PAUSED and worst.config["lr"] != 0.5  # exploited
    assert scheduler._next_perturbation_sync == 6
    for trial in (best, worst):
        assert controller.choose() is trial
        controller.start(trial)
        _epochs(controller, trial, range(4, 6), 0.9)
        assert trial.status == Trial.RUNNING  # not stopped at its first epoch back
        controller.result(trial, 6, 0.9)
        controller.saved(trial)
    assert {best.status, worst.status} == {Trial.PAUSED}
    assert scheduler._next_perturbation_sync == 9
    assert controller.choose() in (best, worst)


def test_member_ending_below_the_step_does_not_strand_the_others():
    """A member that ends without PBT seeing its result (Tune's stopper ends a diverged
    trial) leaves the others paused at the step: PBT perturbs without it and goes on."""
    budget = EpochBudget(max_epochs=9, total_epochs=1000)
    scheduler, controller, trials = _population(4, stopper=budget)
    *members, diverging = trials
    for trial in trials:
        controller.start(trial)
        _epochs(controller, trial, range(1, 4), float(trial.trial_id[1]) / 10)
    assert scheduler._next_perturbation_sync == 6
    for trial in members:
        assert controller.choose() is trial
        controller.start(trial)
        _epochs(controller, trial, range(4, 7), 0.5)
        assert trial.status == Trial.PAUSED
    assert controller.choose() is diverging
    controller.start(diverging)
    controller.result(diverging, 4, math.nan, diverged=True)
    assert diverging.status == Trial.TERMINATED
    chosen = controller.choose()  # was None: all paused at 6, none below the next step
    assert chosen in members and scheduler._next_perturbation_sync == 9
