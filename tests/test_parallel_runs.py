"""`hpo run --parallel-runs N`: strategy × seed runs side by side, each its own Ray Tune
experiment (issue 18). Same trials as one after another, Ctrl-C resumable, and on a
two-node cluster both nodes train at once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pandas as pd
import pytest
import yaml

import hpo
from hpo.records import read_study_record
from tests import quadratic
from tests.cluster import LocalCluster, cluster_env
from tests.conftest import run_hpo
from tests.test_faults import assert_each_epoch_once, reported, start_hpo, wait_until

STUDY = {
    **quadratic.STUDY,
    "name": "side_by_side",
    "fixed": {"sleep_s": 0.05},
    "budget": {"max_epochs": 3, "min_epochs": 1, "reduction_factor": 3, "total_epochs": 9},
    "strategies": ["grid", "random"],
    "seeds": [0, 1],
}
SAME = ["strategy", "seed", "epoch", "config/x", "config/k", "config/y", "config/kind", "loss"]


def trial_rows(results: hpo.Results) -> pd.DataFrame:
    """A study's trials as what they tried and measured, in a stable order (trial ids and
    clocks differ between two runs of the same study)."""
    trials = results.trials[SAME].round(9)
    return trials.sort_values(SAME, kind="stable").reset_index(drop=True)


@pytest.mark.slow
def test_parallel_runs_give_the_same_trials_as_sequential_ones(ray_session, tmp_path):
    study = hpo.Study.from_dict(STUDY, trainable=quadratic.train)
    one = hpo.run(study, results_dir=tmp_path / "one", echo=lambda _: None)
    two = hpo.run(study, results_dir=tmp_path / "two", echo=lambda _: None, parallel_runs=2)

    pd.testing.assert_frame_equal(trial_rows(one), trial_rows(two))
    runs = read_study_record(two.directory).runs.values()
    assert {run.parallel_runs for run in runs} == {2}
    assert all(run.status == "finished" and run.busy_s > 0 for run in runs)
    # Two runs at a time: some pair of runs was training at the same moment.
    spans = sorted((run.fit_started, run.fit_started + run.wall_s) for run in runs)
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))
    assert {run.parallel_runs for run in read_study_record(one.directory).runs.values()} == {1}


@pytest.mark.slow
def test_ctrl_c_stops_parallel_runs_resumable(tmp_path):
    study = {**STUDY, "name": "interrupted_side_by_side", "fixed": {"sleep_s": 0.3}}
    study["strategies"], study["seeds"] = ["random"], [0, 1]
    study["budget"] = {**STUDY["budget"], "total_epochs": 12}
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump(study))
    results = tmp_path / "results"
    args = ["run", str(study_file), "--results", str(results), "--allow-custom"]
    process = start_hpo(*args, "--parallel-runs", "2")
    folder = results / study["name"] / "random"
    both = lambda: all(len(reported(folder / f"seed-{k}")) >= 2 for k in (0, 1))  # noqa: E731
    wait_until(both, process, "two epochs in each run")
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == 130, stderr[-3000:]
    assert "run the same command again to resume" in stderr
    states = [json.loads((folder / f"seed-{k}" / "hpo_run.json").read_text()) for k in (0, 1)]
    assert [s["status"] for s in states] == ["interrupted", "interrupted"]

    done = run_hpo(*args, "--parallel-runs", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("resuming") == 2
    trials = pd.read_csv(results / study["name"] / "trials.csv")
    assert_each_epoch_once(trials, 3)
    assert trials.groupby("seed")["cum_epochs"].max().tolist() == [12, 12]  # all, once


@pytest.mark.slow
def test_parallel_runs_train_on_both_nodes_of_a_cluster_at_once(tmp_path):
    study = {**STUDY, "name": "two_nodes", "fixed": {"sleep_s": 0.2}}
    study.update(strategies=["random"], seeds=[0, 1], max_concurrent_trials=1)
    study["resources"] = {"cpu": 1}
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump(study))
    logs = tmp_path / "ray-logs"
    logs.mkdir()
    cluster = LocalCluster(logs, cluster_env(multi_node=True))
    try:
        cluster.start_head(num_cpus=1)
        cluster.add_node(num_cpus=1)
        results = tmp_path / "results"
        done = subprocess.run(
            [sys.executable, "-m", "hpo.cli", "run", str(study_file), "--allow-custom"]
            + ["--results", str(results), "--address", cluster.address, "--parallel-runs", "2"],
            env=cluster.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        cluster.shutdown()
    assert done.returncode == 0, done.stderr[-3000:]
    trials = pd.read_csv(results / "two_nodes" / "trials.csv")
    assert trials["node_id"].nunique() == 2
    # One run's trial on each node (1 CPU each), reporting while the other did.
    spans = trials.groupby("node_id")["report_time"].agg(["min", "max"])
    assert spans["min"].max() < spans["max"].min()
