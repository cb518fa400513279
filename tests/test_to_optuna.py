"""`hpo to-optuna` on a hand-made results folder (no Ray): one Optuna study per run, each
Ray Tune trial one Optuna trial with its params, per-epoch values, value and state."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from hpo import to_optuna as module
from hpo.records import RunRecord, StudyRecord, write_study_record
from hpo.results import best_row
from hpo.spec import StudyError, parse_study
from hpo.to_optuna import JOURNAL_FILE, add_arguments, cmd_to_optuna, to_optuna
from tests.conftest import TINY_STUDY

NAN = math.nan
SPACE = {
    "lr": {"loguniform": {"low": 1.0e-3, "high": 3.0e-2}},
    "optimizer": {"choice": ["sgd", "momentum", "adam"]},
    "momentum": {"uniform": {"low": 0.5, "high": 0.99}, "when": {"optimizer": "momentum"}},
    # an int choice with empty cells: CSV reads it back as 3.0 and 5.0
    "kernel_size": {"choice": [3, 5], "when": {"optimizer": ["sgd", "adam"]}},
    "batch_size": {"choice": [32, 64]},
    "conv_layers": {"randint": {"low": 1, "high": 4}},
    "dropout": {"quniform": {"low": 0.0, "high": 0.5, "q": 0.1}},
    "batch_norm": {"choice": [True, False]},
}
BASE = {"batch_size": 32, "conv_layers": 2, "dropout": 0.3, "batch_norm": True}
# (config, val_accuracy per epoch, status) of each run's trials; max_epochs is 4
TRIALS = [
    ({"lr": 0.01, "optimizer": "momentum", "momentum": 0.9}, [0.5, 0.7, 0.8, 0.75], "finished"),
    (
        {"lr": 0.002, "optimizer": "adam", "kernel_size": 5, "batch_size": 64, "batch_norm": False},
        [0.6, 0.65, 0.7, 0.72],
        "finished",
    ),
    (
        {"lr": 0.02, "optimizer": "sgd", "kernel_size": 3, "conv_layers": 1},
        [0.4, 0.45],
        "early_stopped",
    ),
    ({"lr": 0.003, "optimizer": "adam", "kernel_size": 3, "dropout": 0.0}, [0.3], "errored"),
    ({"lr": 0.025, "optimizer": "momentum", "momentum": 0.5}, [0.2, NAN], "diverged"),
    ({"lr": 0.005, "optimizer": "sgd", "kernel_size": 5}, [0.1, 0.15], "running"),  # interrupted
]
RUNS = [("random", 0), ("random", 1), ("asha", 0), ("asha", 1)]


def run_rows(strategy: str, seed: int) -> list[dict]:
    """One run's trials.csv rows, interleaved as concurrent trials report (epoch by epoch)."""
    shift = 0.01 * RUNS.index((strategy, seed))
    rows = []
    for number, (config, values, status) in enumerate(TRIALS):
        if (strategy, seed) == ("asha", 1) and status == "early_stopped":
            values = [0.9, 0.95]  # the run's best epoch is in a trial stopped early
        for epoch, value in enumerate(values, start=1):
            rows.append(
                {
                    "strategy": strategy,
                    "seed": seed,
                    "trial_id": f"{strategy}_{seed}_{number:05d}",
                    "status": status,
                    "epoch": epoch,
                    "val_accuracy": value + shift,
                    "val_loss": (1 - value - shift) ** 2,
                    **{f"config/{k}": v for k, v in {**BASE, **config}.items()},
                    "proposed_by": "random",
                }
            )
    rows.sort(key=lambda row: (row["epoch"], row["trial_id"]))
    for cum, row in enumerate(rows, start=1):
        row |= {"cum_epochs": cum, "wall_s": 2.0 * cum}
    return rows


def write_results(folder: Path, metric: str = "val_accuracy", mode: str = "max", **run) -> Path:
    study = parse_study(
        {
            **TINY_STUDY,
            "space": SPACE,
            "metric": {"name": metric, "mode": mode},
            "strategies": ["random", "asha"],
            "seeds": [0, 1],
        }
    )
    runs = [RunRecord(strategy=s, seed=k, started=0.0, status="finished", **run) for s, k in RUNS]
    record = StudyRecord(
        study=study, study_file="t.yaml", study_hash="h", runs={r.key: r for r in runs}
    )
    folder.mkdir(parents=True, exist_ok=True)
    write_study_record(folder, record)
    rows = [row for s, k in RUNS for row in run_rows(s, k)]
    pd.DataFrame(rows).to_csv(folder / "trials.csv", index=False)
    return folder


def config_of(trial_id: str) -> dict:
    return {**BASE, **TRIALS[int(trial_id.rsplit("_", 1)[1])][0]}


def typed(params: dict) -> dict:
    """Values with their types: 32 and 32.0, True and 1 are different params."""
    return {k: (type(v), v) for k, v in params.items()}


@pytest.mark.parametrize(("metric", "mode"), [("val_accuracy", "max"), ("val_loss", "min")])
def test_each_run_is_a_study_of_its_trials(tmp_path, metric, mode):
    folder = write_results(tmp_path / "tiny", metric, mode)
    result = to_optuna(folder)
    journal = folder / JOURNAL_FILE
    assert result.storage == str(journal)
    assert result.studies == {f"{s}/seed-{k}": len(TRIALS) for s, k in RUNS}
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))
    )
    table = pd.read_csv(folder / "trials.csv")
    for strategy, seed in RUNS:
        study = optuna.load_study(study_name=f"{strategy}/seed-{seed}", storage=storage)
        frame = table[(table["strategy"] == strategy) & (table["seed"] == seed)]
        assert study.direction.name == ("MAXIMIZE" if mode == "max" else "MINIMIZE")
        assert study.metric_names == [metric]
        assert [t.user_attrs["trial_id"] for t in study.trials] == list(frame["trial_id"].unique())
        for trial in study.trials:
            rows = frame[frame["trial_id"] == trial.user_attrs["trial_id"]]
            check_trial(trial, rows, metric, mode, strategy, seed)
        finished = frame[frame["status"] == "finished"][metric]
        assert study.best_value == (finished.max() if mode == "max" else finished.min())
        # every trial's value is its best epoch: the best of them is what hpo selects,
        # even where that trial was stopped early (asha/seed-1), which Optuna's best is not
        valued = [t.value for t in study.trials if t.value is not None]
        assert (max(valued) if mode == "max" else min(valued)) == best_row(frame, metric, mode)[
            metric
        ]
    assert study.best_value != best_row(frame, metric, mode)[metric]  # asha/seed-1


def check_trial(trial, rows, metric: str, mode: str, strategy: str, seed: int) -> None:
    status = rows["status"].iloc[0]
    expected = {
        "finished": TrialState.COMPLETE,
        "early_stopped": TrialState.PRUNED,
        "errored": TrialState.FAIL,
        "diverged": TrialState.FAIL,
        "running": TrialState.RUNNING,
    }
    assert trial.state == expected[status]
    assert typed(trial.params) == typed(config_of(trial.user_attrs["trial_id"]))
    steps = dict(zip(rows["epoch"], rows[metric], strict=True))
    assert trial.intermediate_values.keys() == steps.keys()
    for epoch, value in steps.items():
        reported = trial.intermediate_values[epoch]
        assert reported == value or (math.isnan(reported) and math.isnan(value))
    finite = rows[metric].dropna()
    if trial.state in (TrialState.FAIL, TrialState.RUNNING):
        assert trial.value is None
    else:
        assert trial.value == (finite.max() if mode == "max" else finite.min())
    assert trial.user_attrs | {"proposed_by": "random"} == {
        "trial_id": rows["trial_id"].iloc[0],
        "strategy": strategy,
        "seed": seed,
        "status": status,
        "epochs": int(rows["epoch"].max()),
        "best_epoch": int(rows.loc[finite.idxmax() if mode == "max" else finite.idxmin(), "epoch"]),
        "proposed_by": "random",
    }


def test_a_conditional_parameter_is_absent_where_inactive(tmp_path):
    folder = write_results(tmp_path / "tiny")
    to_optuna(folder)
    study = optuna.load_study(study_name="random/seed-0", storage=storage_of(folder))
    for trial in study.trials:
        assert ("momentum" in trial.params) == (trial.params["optimizer"] == "momentum")
        assert ("kernel_size" in trial.params) == (trial.params["optimizer"] != "momentum")
        assert set(trial.distributions) == set(trial.params)


def storage_of(folder: Path):
    backend = optuna.storages.journal.JournalFileBackend(str(folder / JOURNAL_FILE))
    return optuna.storages.JournalStorage(backend)


def test_running_again_replaces_the_studies_and_keeps_other_ones(tmp_path):
    folder = write_results(tmp_path / "tiny")
    to_optuna(folder)
    optuna.create_study(storage=storage_of(folder), study_name="mine")
    again = to_optuna(folder)
    assert again.studies == {f"{s}/seed-{k}": len(TRIALS) for s, k in RUNS}
    storage = storage_of(folder)
    assert sorted(optuna.get_all_study_names(storage)) == sorted([*again.studies, "mine"])
    for name in again.studies:
        assert len(optuna.load_study(study_name=name, storage=storage).trials) == len(TRIALS)
    assert sorted(p.name for p in folder.iterdir()) == [JOURNAL_FILE, "study.json", "trials.csv"]


def test_a_failure_leaves_the_journal_as_it_was(tmp_path, monkeypatch):
    folder = write_results(tmp_path / "tiny")
    to_optuna(folder)
    before = (folder / JOURNAL_FILE).read_bytes()
    calls = []

    def failing(*args):
        calls.append(args)
        if len(calls) > 7:  # in the second run's study, after its first one was replaced
            raise RuntimeError("disk full")
        return original(*args)

    original = module._trial
    monkeypatch.setattr(module, "_trial", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        to_optuna(folder)
    assert (folder / JOURNAL_FILE).read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == [JOURNAL_FILE, "study.json", "trials.csv"]


def test_a_sqlite_url_works_and_is_replaced_too(tmp_path):
    folder = write_results(tmp_path / "tiny")
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    for _ in range(2):
        result = to_optuna(folder, storage=url)
    assert result.storage == url
    assert sorted(optuna.get_all_study_names(url)) == sorted(f"{s}/seed-{k}" for s, k in RUNS)
    study = optuna.load_study(study_name="asha/seed-1", storage=url)
    assert len(study.trials) == len(TRIALS)
    assert [t.state for t in study.trials].count(TrialState.PRUNED) == 1
    assert not (folder / JOURNAL_FILE).exists()


def test_values_a_run_overrode_or_outside_the_space_are_not_params(tmp_path):
    folder = write_results(tmp_path / "tiny", overrides={"conv_layers": 7})
    table = pd.read_csv(folder / "trials.csv")
    table["config/conv_layers"] = 7
    table.loc[table["trial_id"].str.endswith("00000"), "config/lr"] = 0.5  # beyond high
    table.to_csv(folder / "trials.csv", index=False)
    to_optuna(folder)
    study = optuna.load_study(study_name="random/seed-0", storage=storage_of(folder))
    assert study.user_attrs["overrides"] == {"conv_layers": 7}
    assert all("conv_layers" not in t.params for t in study.trials)
    first = study.trials[0]
    assert "lr" not in first.params and first.user_attrs["config/lr"] == 0.5
    assert "config/conv_layers" not in first.user_attrs  # the study says it once


def test_a_folder_without_study_json_or_trials_is_refused(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(StudyError, match=r"empty: no study\.json"):
        to_optuna(empty)
    folder = write_results(tmp_path / "tiny")
    (folder / "trials.csv").unlink()
    with pytest.raises(StudyError, match=r"tiny: .*trials\.csv"):
        to_optuna(folder)
    assert not (folder / JOURNAL_FILE).exists()


def test_a_storage_that_cannot_be_opened_is_one_line(tmp_path):
    folder = write_results(tmp_path / "tiny")
    with pytest.raises(StudyError, match="storage nosuch://x: cannot open it"):
        to_optuna(folder, storage="nosuch://x")
    (tmp_path / "notes.txt").write_text("not a journal\n")
    with pytest.raises(StudyError, match=r"notes\.txt: line 1 is not an Optuna journal record"):
        to_optuna(folder, storage=str(tmp_path / "notes.txt"))
    assert (tmp_path / "notes.txt").read_text() == "not a journal\n"


def test_the_command_prints_each_study_and_how_to_open_them(tmp_path, capsys):
    folder = write_results(tmp_path / "tiny")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert cmd_to_optuna(parser.parse_args([str(folder)])) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:-1] == [f"{s}/seed-{k}: {len(TRIALS)} trials" for s, k in RUNS]
    assert lines[-1] == f"open with: optuna-dashboard {folder / JOURNAL_FILE}"
    url = "postgresql://me:secret@localhost/db"
    assert module._shown(url) == "postgresql://me:***@localhost/db"
