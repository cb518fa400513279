"""Faults a study must survive without losing a finished trial (issue 7): a trial that
raises, a worker killed with SIGKILL, the driver killed with SIGKILL, an unusable
results folder. (Ctrl-C: test_end_to_end; a node stopped mid-run: test_cluster.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hpo.results import result_lines
from tests import quadratic
from tests.conftest import REPO, TINY_STUDY, run_hpo

FLAKY = "tests.faults:build_flaky"


def flaky_study(name: str, modes: list[str], max_epochs: int, max_failures: int) -> dict:
    """A grid study of tests/faults.py's trainable: one full-length trial per `fail` mode."""
    return {
        **TINY_STUDY,
        "name": name,
        "trainable": FLAKY,
        "fixed": {"lr": 0.01},
        "space": {"fail": {"choice": modes}},
        "budget": {"max_epochs": max_epochs, "total_epochs": max_epochs * len(modes)},
        "strategies": ["grid"],
        "max_failures": max_failures,
    }


def write(tmp_path: Path, study: dict) -> Path:
    path = tmp_path / f"{study['name']}.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def start_hpo(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "hpo.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def reported(run_dir: Path) -> list[dict]:
    """Every result the run's trials wrote so far."""
    return list(result_lines(run_dir))


def held_at_epoch_3(faults: Path, run_dir: Path) -> dict | None:
    """The epoch-3 report of a trial that tests/faults.py now holds, once the driver has it
    (so epoch 3 is its last checkpoint)."""
    held = {int(path.read_text()) for path in faults.glob("held-*")}
    rows = [r for r in reported(run_dir) if r.get("epoch") == 3 and r.get("pid") in held]
    return rows[0] if rows else None


def wait_until(condition, process: subprocess.Popen, what: str, timeout_s: float = 300):
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if process.poll() is not None:
            raise AssertionError(f"hpo exited before {what}: {process.stderr.read()[-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


def assert_each_epoch_once(trials: pd.DataFrame, max_epochs: int) -> None:
    assert not trials.duplicated(["strategy", "seed", "trial_id", "epoch"]).any()
    for _, epochs in trials.groupby(["strategy", "seed", "trial_id"])["epoch"]:
        assert sorted(epochs) == list(range(1, len(epochs) + 1))  # none missing
        assert len(epochs) <= max_epochs


@pytest.mark.slow
def test_a_failing_trial_is_retried_from_its_checkpoint_then_marked_errored(tmp_path):
    study = flaky_study("flaky", ["never", "once", "always"], max_epochs=3, max_failures=1)
    study_file = write(tmp_path, study)
    results = tmp_path / "results"
    refused = run_hpo("run", str(study_file), "--results", str(results))
    assert refused.returncode == 2 and "--allow-custom" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not results.exists()

    faults = tmp_path / "faults"
    faults.mkdir()
    process = start_hpo(
        "run", str(study_file), "--results", str(results), "--allow-custom",
        env={"HPO_FAULT_DIR": str(faults)},
    )  # fmt: skip
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]

    attempts = {p.stem.split("-")[0]: int(p.read_text()) for p in faults.glob("*.attempts")}
    assert attempts == {"never": 1, "once": 2, "always": 2}  # max_failures=1: one retry each
    trials = pd.read_csv(results / "flaky" / "trials.csv")
    by_mode = trials.groupby("config/fail")
    assert by_mode["epoch"].max().to_dict() == {"never": 3, "once": 3}  # 'always' never reported
    once = trials[trials["config/fail"] == "once"]
    assert once["epoch"].tolist() == [1, 2, 3]
    # Raw reports: the retry went on from the epoch-1 checkpoint (a restart from scratch
    # would have reported epoch 1 twice).
    run_dir = results / "flaky" / "grid" / "seed-0"
    progress = pd.read_csv(next(run_dir.glob("*fail=once*/progress.csv")))
    assert progress["epoch"].tolist() == [1, 2, 3]
    assert_each_epoch_once(trials, 3)
    marker = json.loads((run_dir / "hpo_run.json").read_text())
    assert marker["status"] == "finished" and marker["errors"] == 1  # the study went on

    report = run_hpo("report", str(results / "flaky"))
    assert report.returncode == 0, report.stderr[-2000:]
    page = (results / "flaky" / "report" / "index.html").read_text()
    assert "Ray reported 1 trial errors" in page
    (tmp_path / "figures.json").write_text(json.dumps({"attempts": attempts, "rows": len(trials)}))


@pytest.mark.slow
def test_a_worker_killed_with_sigkill_resumes_its_trial_from_the_last_checkpoint(tmp_path):
    study = flaky_study("killed_worker", ["hold", "never"], max_epochs=30, max_failures=2)
    faults = tmp_path / "faults"
    faults.mkdir()
    results = tmp_path / "results"
    process = start_hpo(
        "run", str(write(tmp_path, study)), "--results", str(results), "--allow-custom",
        env={"HPO_FAULT_DIR": str(faults)},
    )  # fmt: skip
    run_dir = results / "killed_worker" / "grid" / "seed-0"
    victim = wait_until(lambda: held_at_epoch_3(faults, run_dir), process, "a held trial")
    os.kill(int(victim["pid"]), signal.SIGKILL)
    killed_at = time.monotonic()
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]

    trials = pd.read_csv(results / "killed_worker" / "trials.csv")
    assert_each_epoch_once(trials, 30)
    assert len(trials) == 60  # the full budget: no epoch lost, none counted twice
    hit = trials[trials["trial_id"] == victim["trial_id"]]
    assert set(hit["config/fail"]) == {"hold"}
    assert hit["epoch"].max() == 30 and hit["pid"].nunique() == 2  # resumed in a new worker
    assert int(victim["pid"]) in set(hit["pid"])
    # Raw reports too: the retried trial went on from its last checkpoint (every epoch
    # checkpoints), so no reported epoch was trained twice.
    progress = pd.read_csv(next(run_dir.glob(f"*{victim['trial_id']}*/progress.csv")))
    assert sorted(progress["epoch"]) == list(range(1, 31))
    marker = json.loads((run_dir / "hpo_run.json").read_text())
    assert marker["status"] == "finished" and marker["errors"] == 0
    figures = {
        "killed_after_epoch": 3,
        "rows": len(trials),
        "duplicates": int(progress["epoch"].duplicated().sum()),
        "kill_to_end_s": round(time.monotonic() - killed_at, 1),
    }
    (tmp_path / "figures.json").write_text(json.dumps(figures))


@pytest.mark.slow
def test_a_driver_killed_with_sigkill_resumes_and_keeps_finished_trials(tmp_path):
    # A user's function trainable (tests/quadratic.py), which checkpoints every epoch.
    study = {
        **quadratic.STUDY,
        "name": "killed_driver",
        "fixed": {"sleep_s": 0.25},  # an epoch's work: the kill lands mid-run
        "budget": {"max_epochs": 4, "min_epochs": 1, "reduction_factor": 2, "total_epochs": 24},
        "strategies": ["random", "asha"],
    }
    study_file = write(tmp_path, study)
    results = tmp_path / "results"
    process = start_hpo("run", str(study_file), "--results", str(results), "--allow-custom")
    study_dir = results / "killed_driver"
    asha = study_dir / "asha" / "seed-0"
    wait_until(lambda: len(reported(asha)) >= 6, process, "ASHA's sixth epoch")
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    reported_at_kill = len(reported(asha))
    before = pd.read_csv(study_dir / "trials.csv")  # written when the random run finished
    assert set(before["strategy"]) == {"random"}

    status = run_hpo("status", str(study_dir))
    assert status.returncode == 0, status.stderr
    states = {line.split()[0]: line.split()[2] for line in status.stdout.splitlines()[1:]}
    assert states == {"random": "finished", "asha": "interrupted"}

    began = time.monotonic()
    again = run_hpo("run", str(study_file), "--results", str(results), "--allow-custom")
    resume_s = time.monotonic() - began
    assert again.returncode == 0, again.stderr[-3000:]
    assert "asha seed 0: resuming" in again.stdout
    assert "random seed 0: r" not in again.stdout  # neither running nor resuming: skipped
    after = pd.read_csv(study_dir / "trials.csv")
    kept = after[after["strategy"] == "random"].reset_index(drop=True)
    metrics = ["trial_id", "epoch", "loss", "score", "config/x", "cum_epochs"]
    pd.testing.assert_frame_equal(kept[metrics], before[metrics])  # identical, not re-run
    asha_rows = after[after["strategy"] == "asha"]
    assert len(asha_rows) == 24 and asha_rows["cum_epochs"].max() == 24  # the full budget
    assert_each_epoch_once(after, 4)
    figures = {
        "random_rows_before": len(before),
        "asha_epochs_reported_before_kill": reported_at_kill,
        "rows_after": len(after),
        "resume_s": round(resume_s, 1),
    }
    (tmp_path / "figures.json").write_text(json.dumps(figures))


def test_an_unwritable_results_folder_fails_before_any_trial(tmp_path):
    study_file = write(tmp_path, {**TINY_STUDY, "strategies": ["random"]})
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    done = run_hpo("run", str(study_file), "--results", str(blocker / "results"))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "not writable" in done.stderr
    assert blocker.read_text() == "not a folder"


def test_a_full_disk_fails_before_any_trial(tmp_path):
    study_file = write(tmp_path, {**TINY_STUDY, "strategies": ["random"]})
    results = tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HPO_MIN_FREE_MB": str(10**12)}
    done = subprocess.run(
        [sys.executable, "-m", "hpo.cli", "run", str(study_file), "--results", str(results)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "MiB free" in done.stderr
    assert not results.exists()  # nothing half-written
