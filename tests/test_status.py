"""`hpo status` / `hpo list` read a results folder alone; custom trainables need an opt-in."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hpo.cli import main
from hpo.records import (
    BestTrial,
    RunRecord,
    StudyRecord,
    run_dir,
    write_run_record,
    write_study_record,
)
from hpo.spec import StudyError, load_study, parse_study
from hpo.status import list_studies, run_state, study_status
from tests.conftest import TINY_STUDY

STUDY = {**TINY_STUDY, "name": "watched", "strategies": ["random", "asha"], "seeds": [0, 1]}


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def fake_results(root: Path) -> Path:
    """random/seed-0 finished, random/seed-1 running (this process), asha/seed-0 whose
    driver died, asha/seed-1 not started."""
    study_dir = root / "watched"
    study = parse_study(STUDY)
    write_study_record(study_dir, StudyRecord(study=study, study_file="w.yaml", study_hash="h"))
    host = socket.gethostname()
    best = BestTrial(
        trial_id="t1", epoch=2, cum_epochs=3, metric="val_accuracy", value=0.9, config={}
    )
    markers = {
        ("random", 0): {"status": "finished", "wall_s": 12.5, "best": best},
        ("random", 1): {"status": "running", "driver_pid": os.getpid(), "driver_host": host},
        ("asha", 0): {"status": "running", "driver_pid": dead_pid(), "driver_host": host},
    }
    for (strategy, seed), marker in markers.items():
        run = run_dir(study_dir, strategy, seed)
        write_run_record(run, RunRecord(strategy=strategy, seed=seed, started=0.0, **marker))
        for trial, accuracies in (("t1", [0.5, 0.7]), ("t2", [0.6])):
            lines = [
                {"trial_id": trial, "training_iteration": i + 1, "val_accuracy": a}
                for i, a in enumerate(accuracies)
            ]
            (run / trial).mkdir(parents=True)
            (run / trial / "result.json").write_text(
                "\n".join(json.dumps(x) for x in lines) + "\n{partial"
            )
    return study_dir


def test_status_reports_state_trials_epochs_and_best_per_run(tmp_path):
    table = study_status(fake_results(tmp_path)).set_index(["strategy", "seed"])
    assert table.loc[("random", 0), "state"] == "finished"
    assert table.loc[("random", 1), "state"] == "running"
    assert table.loc[("asha", 0), "state"] == "interrupted"  # its driver is gone
    assert table.loc[("asha", 1), "state"] == "pending"
    assert table.loc[("random", 1), "trials"] == 2 and table.loc[("random", 1), "epochs"] == 3
    assert table.loc[("random", 1), "best_val_accuracy"] == pytest.approx(0.7)
    assert table.loc[("random", 0), "best_val_accuracy"] == pytest.approx(0.9)  # the marker's
    assert table.loc[("random", 0), "elapsed_s"] == pytest.approx(12.5)
    assert (table["budget_epochs"] == 16).all() and table.loc[("asha", 1), "trials"] == 0


def test_run_state_of_a_marker():
    assert run_state(None) == "pending"
    assert run_state(RunRecord(strategy="a", seed=0, started=0.0, status="failed")) == "failed"
    elsewhere = RunRecord(
        strategy="a", seed=0, started=0.0, driver_pid=dead_pid(), driver_host="another-host"
    )
    assert run_state(elsewhere) == "running"  # cannot check another host's processes


def test_list_and_status_commands(tmp_path, capsys):
    fake_results(tmp_path)
    table = list_studies(tmp_path)
    assert table.to_dict("records")[0] | {"last_update": None} == {
        "study": "watched",
        "state": "running",
        "runs_finished": 1,
        "runs": 4,
        "last_update": None,
    }
    assert main(["list", str(tmp_path)]) == 0
    assert "watched" in capsys.readouterr().out
    assert main(["status", str(tmp_path / "watched")]) == 0
    assert "interrupted" in capsys.readouterr().out
    assert main(["status", str(tmp_path / "missing" / "x")]) == 2
    assert "no such results folder" in capsys.readouterr().err


CUSTOM = {**TINY_STUDY, "trainable": "tests.faults:build_flaky", "fixed": {"hidden": 16}}


def test_a_custom_trainable_needs_the_explicit_opt_in(tmp_path, monkeypatch):
    path = tmp_path / "custom.yaml"
    path.write_text(json.dumps(CUSTOM))
    monkeypatch.setenv("HPO_ALLOW_CUSTOM", "0")  # restored after the test
    with pytest.raises(StudyError, match="--allow-custom"):
        load_study(path)
    assert load_study(path, trusted=True).fixed == {"hidden": 16}  # reading results only
    monkeypatch.setenv("HPO_ALLOW_CUSTOM", "1")
    assert load_study(path).trainable == "tests.faults:build_flaky"
    with pytest.raises(StudyError, match="unknown trainable 'os.system'"):
        parse_study({**CUSTOM, "trainable": "os.system"})  # not a module:function reference


def test_validate_accepts_a_custom_trainable_with_allow_custom(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HPO_ALLOW_CUSTOM", "0")  # restored after the test
    path = tmp_path / "custom.yaml"
    path.write_text(json.dumps(CUSTOM))
    assert main(["validate", str(path)]) == 2
    assert "--allow-custom" in capsys.readouterr().err
    assert main(["validate", str(path), "--allow-custom"]) == 0
    assert "tests.faults:build_flaky" in capsys.readouterr().out
