"""A real tiny study through `hpo run` and Ray Tune: every registered strategy, one seed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from hpo.records import read_run_record, read_study_record
from hpo.strategies import STRATEGIES
from tests.conftest import REPO
from tests.conftest import run_hpo as hpo

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def finished(tiny_study_run):
    """`hpo run` of TINY_STUDY: the session's one real run, shared with test_report_e2e."""
    return tiny_study_run


def test_layout_is_one_ray_tune_experiment_per_run(finished):
    _, study_dir, done = finished
    from ray import tune

    from hpo.results import load_analysis

    for strategy in STRATEGIES:
        run = study_dir / strategy / "seed-0"
        assert tune.Tuner.can_restore(str(run)), run
        assert list(run.glob("experiment_state-*.json"))
        record = read_run_record(run)
        assert record.status == "finished" and record.best.trial_id
        assert 0.5 < record.best.test["test_accuracy"] <= 1.0
        # A Ray user opening the folder sees the trials that started, and only those
        # (Hyperband creates whole brackets that the budget never starts): each reported
        # an epoch, or was starting when the budget ran out (its folder has Ray's files).
        trials = load_analysis(run).trials
        starting = [t for t in trials if not t.last_result.get("training_iteration")]
        assert all(any(Path(t.path).iterdir()) for t in starting), strategy
        assert len(trials) - len(starting) == record.trials, strategy
        assert len(starting) <= 2, strategy  # max_concurrent_trials
    study = read_study_record(study_dir)
    assert sorted(study.runs) == sorted(f"{s}/seed-0" for s in STRATEGIES)
    assert all(0 < run.decision_s < run.wall_s for run in study.runs.values())
    assert study.versions["ray"] and study.ended_at
    for strategy in STRATEGIES:
        assert f"\n{strategy} " in done.stdout  # one leaderboard row per strategy


def test_every_file_it_writes_has_the_normal_umask(finished):
    """Readable by a web server or a colleague on a shared results folder: 0644 with the
    default umask (Ray Tune's own files are Ray's business)."""
    _, study_dir, _ = finished
    mask = os.umask(0)
    os.umask(mask)
    ours = [
        study_dir / "study.json",
        study_dir / "trials.csv",
        *study_dir.glob("*/seed-0/hpo_run.json"),
        *(study_dir / "report").iterdir(),
    ]
    assert len(ours) > 2 + len(STRATEGIES)
    modes = {str(p.relative_to(study_dir)): oct(p.stat().st_mode & 0o777) for p in ours}
    assert set(modes.values()) == {oct(0o666 & ~mask)}, modes


def test_trials_csv_columns_and_budget(finished):
    _, study_dir, _ = finished
    trials = pd.read_csv(study_dir / "trials.csv")
    expected = {
        "strategy",
        "seed",
        "trial_id",
        "status",
        "epoch",
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
        "lr",
        "epoch_time_s",
        "diverged",
        "cum_epochs",
        "wall_s",
        "config/lr",
        "config/optimizer",
        "config/channels",
    }
    assert expected <= set(trials.columns)
    assert set(trials["strategy"]) == set(STRATEGIES)
    assert set(trials["status"]) <= {"finished", "early_stopped", "diverged", "errored"}
    budget, max_epochs = 16, 4
    for strategy, run in trials.groupby("strategy"):
        assert run["cum_epochs"].max() <= budget + max_epochs, strategy
        assert run["cum_epochs"].tolist() == list(range(1, len(run) + 1))
        assert run["wall_s"].is_monotonic_increasing
        assert run.groupby("trial_id")["epoch"].max().max() <= max_epochs
    sha = trials[trials["strategy"] == "sha"].groupby("trial_id")["epoch"].max()
    assert sorted(sha.value_counts().to_dict().items()) == [(1, 4), (2, 2), (4, 2)]


def test_second_run_changes_nothing(finished):
    study_file, study_dir, _ = finished
    before = {p: p.read_bytes() for p in (study_dir / "study.json", study_dir / "trials.csv")}
    done = hpo("run", str(study_file), "--results", str(study_dir.parent))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "nothing to do" in done.stdout
    assert {p: p.read_bytes() for p in before} == before


def test_same_seed_samples_the_same_configs(finished, ray_session, tmp_path):
    """Another run of the random strategy, in another process (this one) and another Ray
    instance than `hpo run`'s, samples the same configurations in the same order."""
    from hpo.runner import StudyRunner

    study_file, study_dir, _ = finished
    StudyRunner(study_file, tmp_path, strategies=["random"], echo=lambda _: None).run()

    def configs(folder: Path) -> list:
        trials = pd.read_csv(folder / "trials.csv")
        first = trials[trials["strategy"] == "random"].sort_values("trial_id")
        return first.groupby("trial_id")[["config/lr", "config/optimizer"]].first().values.tolist()

    assert configs(tmp_path / "tiny") == configs(study_dir)


def test_ctrl_c_saves_state_and_the_next_run_resumes(tmp_path):
    import signal
    import time

    import yaml

    from tests.conftest import TINY_STUDY

    study = {**TINY_STUDY, "strategies": ["random"], "name": "interrupted"}
    # 8 trials: the run is still going when the first epoch is in (Ctrl-C then), and most
    # of the budget is left for the resumed run.
    budget = 40
    study["budget"] = {"max_epochs": 5, "total_epochs": budget}
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump(study))
    results = tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "hpo.cli", "run", str(study_file), "--results", str(results)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    run = results / "interrupted" / "random" / "seed-0"
    deadline = time.monotonic() + 240
    while not any(p.stat().st_size for p in run.glob("*/result.json")):  # first epoch reported
        assert process.poll() is None and time.monotonic() < deadline, "run never reported"
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == 130, stderr.decode()[-2000:]
    assert "run the same command again to resume" in stderr.decode()
    assert json.loads((run / "hpo_run.json").read_text())["status"] == "interrupted"

    done = hpo("run", str(study_file), "--results", str(results))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming" in done.stdout
    trials = pd.read_csv(results / "interrupted" / "trials.csv")
    assert len(trials) == budget and trials["cum_epochs"].max() == budget  # all of it, once
    assert not trials.duplicated(["trial_id", "epoch"]).any()
    assert json.loads((run / "hpo_run.json").read_text())["status"] == "finished"


def test_every_trial_says_how_it_was_proposed(finished):
    _, study_dir, _ = finished
    trials = pd.read_csv(study_dir / "trials.csv")
    proposed = trials.groupby("strategy")["proposed_by"].agg(set).to_dict()
    assert proposed["grid"] == {"grid"}
    assert proposed["random"] == proposed["asha"] == {"random"}
    assert proposed["optuna"] == {"startup", "model"}  # 4 trials, 2 of them start-up
    assert "startup" in proposed["bohb"]
    assert proposed["pbt"] <= {"random", "perturbation"}
