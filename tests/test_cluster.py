"""A study on an existing Ray cluster (two nodes on 127.0.0.1, started with `ray start`),
a worker node stopped mid-run, and a study submitted as a Ray Job (issue 7)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml

from hpo.ray_session import SINGLE_HOST_ENV
from tests.cluster import LocalCluster, cluster_env
from tests.conftest import TINY_STUDY
from tests.test_faults import FLAKY, held_at_epoch_3, reported, wait_until

STUDY = {
    **TINY_STUDY,
    "name": "on_cluster",
    "strategies": ["random"],
    "resources": {"cpu": 1},
    "max_concurrent_trials": 2,
    "max_failures": 3,
}


@pytest.fixture
def start_cluster(tmp_path):
    """Start a loopback cluster (`multi_node`: one that can take a second node)."""
    started: list[LocalCluster] = []

    def start(multi_node: bool) -> LocalCluster:
        logs = tmp_path / "ray-logs"
        logs.mkdir()
        started.append(LocalCluster(logs, cluster_env(multi_node)))
        return started[-1]

    yield start
    for cluster in started:
        cluster.shutdown()


def hpo(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hpo.cli", *args], env=env, capture_output=True, text=True
    )


def write(tmp_path: Path, study: dict) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


@pytest.mark.slow
def test_a_study_runs_on_both_nodes_and_survives_losing_one(start_cluster, tmp_path):
    faults = tmp_path / "faults"
    faults.mkdir()
    cluster = start_cluster(multi_node=True)
    cluster.env["HPO_FAULT_DIR"] = str(faults)
    cluster.start_head(num_cpus=1)
    # The worker node holds each trial it runs after 3 epochs (tests/faults.py), so the
    # node is surely stopped with a trial mid-run on it, however loaded this machine is.
    worker = cluster.add_node(num_cpus=1, env={"HPO_FAULT_HOLD_AFTER": "3"})
    study = {
        **STUDY,
        "trainable": FLAKY,
        "fixed": {"fail": "never"},
        "space": {"lr": STUDY["space"]["lr"]},
        "budget": {"max_epochs": 20, "total_epochs": 120},
    }
    results = tmp_path / "results"
    process = subprocess.Popen(
        [sys.executable, "-m", "hpo.cli", "run", str(write(tmp_path, study))]
        + ["--results", str(results), "--address", cluster.address, "--allow-custom"],
        env=cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run_dir = results / "on_cluster" / "random" / "seed-0"
    held = wait_until(lambda: held_at_epoch_3(faults, run_dir), process, "a held trial")
    held_pid = int(held["pid"])
    epochs_before = len(reported(run_dir))
    cluster.stop_node(worker)
    stopped_at = time.monotonic()
    assert not psutil.pid_exists(held_pid)  # the held trial died with its node
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]

    trials = pd.read_csv(results / "on_cluster" / "trials.csv")
    assert trials["node_id"].nunique() == 2  # both nodes trained trials
    moved = trials.groupby("trial_id")["node_id"].nunique()
    assert (moved == 2).sum() == 1
    assert moved.idxmax() == held["trial_id"]  # the held trial went on on the other node
    held_trial = trials[trials["trial_id"] == held["trial_id"]].sort_values("epoch")
    assert (held_trial["node_id"] == held["node_id"]).sum() == 3  # epochs before the hold
    assert held_trial["epoch"].tolist() == list(range(1, 21))  # resumed, not restarted
    assert len(trials) == 120 and not trials.duplicated(["trial_id", "epoch"]).any()
    marker = json.loads((run_dir / "hpo_run.json").read_text())
    assert marker["status"] == "finished" and marker["errors"] == 0  # rescheduled, not lost
    figures = {
        "epochs_before_stop": epochs_before,
        "rows": len(trials),
        "nodes": int(trials["node_id"].nunique()),
        "trials_moved": int((moved == 2).sum()),
        "stop_to_end_s": round(time.monotonic() - stopped_at, 1),
    }
    (tmp_path / "figures.json").write_text(json.dumps(figures))


@pytest.mark.slow
def test_a_study_submitted_as_a_ray_job_is_followed_to_completion(start_cluster, tmp_path):
    cluster = start_cluster(multi_node=False)
    cluster.start_head(num_cpus=2, dashboard=True)
    dashboard = f"http://127.0.0.1:{cluster.dashboard_port}"
    study = {**STUDY, "name": "as_job", "budget": {"max_epochs": 3, "total_epochs": 12}}
    results = tmp_path / "results"
    submitted = hpo(
        "submit", str(write(tmp_path, study)), "--address", dashboard, "--results", str(results),
        env=cluster.env,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    job_id = submitted.stdout.split()[0]
    submitted_at = time.monotonic()

    deadline = time.monotonic() + 400
    while True:
        status = hpo("status", job_id, "--address", dashboard, env=cluster.env)
        assert status.returncode == 0, status.stderr[-3000:]
        if status.stdout.startswith(f"job {job_id}: SUCCEEDED"):
            break
        assert "FAILED" not in status.stdout.splitlines()[0], status.stdout
        assert time.monotonic() < deadline, status.stdout
        time.sleep(2)
    rows = status.stdout.splitlines()
    assert rows[2].split()[:3] == ["random", "0", "finished"]
    trials = pd.read_csv(results / "as_job" / "trials.csv")
    assert len(trials) == 12
    logs = hpo("logs", job_id, "--address", dashboard, env=cluster.env)
    assert logs.returncode == 0 and "random seed 0" in logs.stdout
    listed = hpo("list", str(results), env=cluster.env)
    assert "as_job" in listed.stdout and "finished" in listed.stdout
    figures = {"submit_to_succeeded_s": round(time.monotonic() - submitted_at, 1)}
    (tmp_path / "figures.json").write_text(json.dumps(figures))


LISTENING = """
import psutil, ray
import hpo.strategies.budget  # imports Ray Tune before init_ray, as hpo run may
from hpo.ray_session import init_ray
init_ray()
ours = {p.pid for p in psutil.Process().children(recursive=True)} | {psutil.Process().pid}
listening = {c.laddr.ip for c in psutil.net_connections("tcp") if c.status == "LISTEN"
             and c.pid in ours}
print(ray.get_runtime_context().gcs_address, *sorted(listening))
"""


def test_a_local_study_listens_on_loopback_only():
    env = {k: v for k, v in cluster_env(False).items() if k != SINGLE_HOST_ENV}  # init_ray's job
    done = subprocess.run(
        [sys.executable, "-c", LISTENING], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    gcs, *addresses = done.stdout.split()
    assert gcs.startswith("127.0.0.1:") and addresses
    assert set(addresses) <= {"127.0.0.1", "::ffff:127.0.0.1"}, addresses
