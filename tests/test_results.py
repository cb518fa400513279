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


def test_selected_state_is_the_best_result_s_own_checkpoint_when_tune_lags(tmp_path, monkeypatch):
    """Tune's registry may not have registered the last result's checkpoint (it offered
    epoch 4 for a trial whose best, last, result was epoch 5): the trial's own result rows
    name the folder each result wrote, and those decide."""
    import types

    import pandas as pd
    import torch
    from ray.tune import Checkpoint

    from hpo import results as res
    from hpo.runner import selected_state
    from trainables.tune_trial import STATE_FILE

    for epoch in (4, 5):
        folder = tmp_path / f"checkpoint_00000{epoch - 1}"
        folder.mkdir()
        torch.save({"epoch": epoch}, folder / STATE_FILE)
    trial = types.SimpleNamespace(trial_id="t1", config={"lr": 0.1}, path=str(tmp_path))
    lagging = types.SimpleNamespace(
        trials=[trial],
        get_best_checkpoint=lambda *a, **k: Checkpoint(str(tmp_path / "checkpoint_000003")),
    )
    rows = pd.DataFrame(
        {"val_loss": [0.9, 0.8], "checkpoint_dir_name": ["checkpoint_000003", "checkpoint_000004"]}
    )
    monkeypatch.setattr(res, "load_analysis", lambda path: lagging)
    monkeypatch.setattr(res, "reported_rows", lambda trial, analysis: rows)
    config, state = selected_state(tmp_path, "t1", "val_loss", "min")
    assert config == {"lr": 0.1} and state["epoch"] == 5
