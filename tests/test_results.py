from __future__ import annotations

import json
from types import SimpleNamespace

import pandas as pd

from hpo.results import best_row, reported_rows, trial_status


def test_rows_come_from_progress_csv_when_result_json_lost_epochs(tmp_path):
    # Ray Tune rewrites result.json when a paused trial resumes: epochs 1-2 are gone there.
    (tmp_path / "result.json").write_text(
        "\n".join(json.dumps({"epoch": e, "training_iteration": e}) for e in (3, 4))
    )
    pd.DataFrame({"epoch": [1, 2, 3, 4], "training_iteration": [1, 2, 3, 4]}).to_csv(
        tmp_path / "progress.csv", index=False
    )
    trial = SimpleNamespace(path=str(tmp_path), relative_logdir="t", trial_id="t1")
    rows = reported_rows(trial, analysis=None)
    assert rows["epoch"].tolist() == [1, 2, 3, 4]


def test_trial_status_mapping():
    rows = pd.DataFrame({"epoch": [1, 2], "diverged": [False, False]})
    assert trial_status("ERROR", rows, 4, True) == "errored"
    assert trial_status("TERMINATED", rows.assign(diverged=[False, True]), 4, True) == "diverged"
    assert trial_status("TERMINATED", rows, 2, True) == "finished"
    assert trial_status("TERMINATED", rows, 4, True) == "early_stopped"
    assert trial_status("PAUSED", rows, 4, False) == "running"
    assert trial_status("PAUSED", rows, 4, True) == "early_stopped"  # run over: stopped


def test_best_row_skips_nan_and_failed_trials_and_breaks_ties_early():
    frame = pd.DataFrame(
        {
            "trial_id": ["a", "a", "b", "c"],
            "status": ["finished", "finished", "diverged", "finished"],
            "val_accuracy": [0.9, 0.95, 0.99, 0.95],
            "cum_epochs": [1, 2, 3, 4],
        }
    )
    best = best_row(frame, "val_accuracy", "max")
    assert (best["trial_id"], best["cum_epochs"]) == ("a", 2)
    assert best_row(frame.assign(val_accuracy=float("nan")), "val_accuracy", "max") is None
