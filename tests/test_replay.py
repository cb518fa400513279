"""`hpo replay`: strategies simulated on recorded curves with Ray Tune's own searchers and
schedulers. Fast tests use tables written with known curves (tests/replay_tables.py); the
slow one compares a replay with a real `hpo run` on a table recorded by `hpo tabulate`."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import yaml

from hpo.records import read_study_record
from hpo.replay.curves import CurveTable
from hpo.replay.runs import replay
from hpo.spec import StudyError, load_study
from hpo.tabulate import read_table, table_configs
from tests.conftest import TINY_STUDY, run_hpo
from tests.replay_tables import write_table

FINITE_SPACE = {
    "lr": {"choice": [0.001, 0.003, 0.01, 0.03]},
    "optimizer": {"choice": ["momentum", "adam"]},
}


def finite_study(**changes) -> dict:
    study = {**TINY_STUDY, "space": FINITE_SPACE, "strategies": ["grid", "random", "sha", "asha"]}
    return {**study, **changes}


def quiet(_: str) -> None:
    pass


def test_a_finite_space_is_tabulated_whole_and_looked_up_exactly(write_study, tmp_path):
    study_file = write_study(finite_study())
    study = load_study(study_file)
    configs = table_configs(study, 200)
    assert len(configs) == 8 and configs[0] == {"lr": 0.001, "optimizer": "momentum"}
    assert len(table_configs(study, 5)) == 5  # fewer than the space: a sample
    folder = write_table(study_file, tmp_path / "table", configs=configs)
    record, rows = read_table(folder)
    curves = CurveTable(study, record.configs, rows)
    curve = curves.curve({"lr": 0.01, "optimizer": "adam", "seed": 3, "proposed_by": "x"}, 0)
    held = rows[(rows.config_id == configs.index({"lr": 0.01, "optimizer": "adam"}))]
    held = held[held.seed == 0]
    assert not curve.predicted
    assert [curve.metrics(e)["val_accuracy"] for e in range(1, 5)] == held.val_accuracy.tolist()

    out = replay(study_file, folder, tmp_path / "r", seeds=[0, 1], processes=1, echo=quiet)
    record = read_study_record(out)
    assert record.replay.surrogate is None  # every proposal was in the table
    assert record.replay.predicted_share == 0.0
    trials = pd.read_csv(out / "trials.csv")
    assert not trials["predicted"].any()


def test_a_continuous_space_uses_a_surrogate_whose_held_out_error_is_measured(
    write_study, tmp_path
):
    study_file = write_study({**TINY_STUDY, "strategies": ["random", "optuna"]})
    folder = write_table(study_file, tmp_path / "table", configs=60)
    out = replay(study_file, folder, tmp_path / "r", seeds=[0], processes=1, echo=quiet)
    info = read_study_record(out).replay
    assert info.simulated and "extra trees" in info.surrogate
    # The smooth synthetic curves are easy: the error is small, but it is measured.
    assert 0 < info.surrogate_mae_final < 0.02 and 0 < info.surrogate_mae_curve < 0.02
    # Random proposals are predicted; (seed 0's sampler happens to draw the table's own
    # first sample, which is looked up: the same seeded generator made the table)
    assert 0.5 < info.predicted_share <= 1.0

    record, rows = read_table(folder)
    curves = CurveTable(load_study(study_file), record.configs, rows)
    near = {**record.configs[0], "lr": record.configs[0]["lr"] * 1.0001}
    guess, held = curves.curve(near, 0), curves.curve(record.configs[0], 0)
    assert guess.predicted and not held.predicted
    assert abs(guess.metrics(4)["val_accuracy"] - held.metrics(4)["val_accuracy"]) < 1e-3


def test_a_proposal_among_diverged_table_configs_diverges_too(write_study, tmp_path):
    study_file = write_study({**TINY_STUDY, "strategies": ["random"]})
    folder = write_table(
        study_file,
        tmp_path / "table",
        configs=60,
        diverges_at=lambda c: 2 if c["lr"] > 0.01 else None,
    )
    record, rows = read_table(folder)
    curves = CurveTable(load_study(study_file), record.configs, rows)
    high = curves.curve({"lr": 0.025, "optimizer": "adam"}, 0)
    low = curves.curve({"lr": 0.002, "optimizer": "adam"}, 0)
    assert high.predicted and high.diverged_at == 2 and high.epochs == 2
    assert low.diverged_at is None and low.epochs == 4
    out = replay(study_file, folder, tmp_path / "r", seeds=[0, 1, 2], processes=1, echo=quiet)
    trials = pd.read_csv(out / "trials.csv")
    ended = trials.groupby("trial_id").agg(lr=("config/lr", "first"), status=("status", "first"))
    assert (ended.status[ended.lr > 0.015] == "diverged").all()
    assert (ended.status[ended.lr < 0.005] == "finished").all()
    for run in read_study_record(out).runs.values():
        assert run.best.config["lr"] <= 0.015  # a diverged trial is never selected


def test_charged_decision_time_moves_the_clock(write_study, tmp_path):
    study_file = write_study({**TINY_STUDY, "strategies": ["optuna"], "max_concurrent_trials": 1})
    folder = write_table(study_file, tmp_path / "table", configs=30)
    runs = {}
    for charge in (False, True):
        out = replay(
            study_file,
            folder,
            tmp_path / str(charge),
            processes=1,
            charge_decisions=charge,
            echo=quiet,
        )
        runs[charge] = read_study_record(out).runs["optuna/seed-0"]
    # One worker: every decision is made while the worker waits, so charging it adds up
    # to (at most, the last one comes after the last epoch) the run's decision time.
    extra = runs[True].wall_s - runs[False].wall_s
    assert 0 < extra <= runs[True].decision_s + 1e-9
    assert runs[False].wall_s == 16.0  # 16 epochs of 1 s, one worker


def test_a_time_limit_holds_on_the_simulated_clock(write_study, tmp_path):
    budget = {**TINY_STUDY["budget"], "time_limit_s": 5.0}
    study = {**TINY_STUDY, "strategies": ["random"], "budget": budget, "max_concurrent_trials": 1}
    study_file = write_study(study)
    folder = write_table(study_file, tmp_path / "table", configs=10)  # 1 s per epoch
    out = replay(study_file, folder, tmp_path / "r", processes=1, echo=quiet)
    run = read_study_record(out).runs["random/seed-0"]
    assert run.epochs == 5 and run.wall_s == 5.0  # not the 16 epochs the budget allows


def test_replays_are_deterministic_and_report_like_real_runs(write_study, tmp_path):
    study_file = write_study(
        {**TINY_STUDY, "strategies": ["random", "sha", "asha", "hyperband", "optuna", "pbt"]}
    )
    folder = write_table(study_file, tmp_path / "table", configs=30)
    first = replay(study_file, folder, tmp_path / "a", seeds=[0, 1], processes=1, echo=quiet)
    second = replay(study_file, folder, tmp_path / "b", seeds=[0, 1], processes=2, echo=quiet)
    a, b = pd.read_csv(first / "trials.csv"), pd.read_csv(second / "trials.csv")
    # Tune names trials with a random prefix; everything else is the same
    pd.testing.assert_frame_equal(a.drop(columns="trial_id"), b.drop(columns="trial_id"))
    record = read_study_record(first)
    assert set(record.runs) == {f"{s}/seed-{k}" for s in record.study.strategies for k in (0, 1)}
    budget = record.study.budget
    for run in record.runs.values():
        assert run.status == "finished" and run.epochs <= budget.total_epochs
        assert run.wall_s > 0 and run.decision_s > 0 and run.best.test == {}
        rows = a[(a.strategy == run.strategy) & (a.seed == run.seed)]
        assert run.best.value == rows.val_accuracy.max()
        assert rows.wall_s.is_monotonic_increasing  # simulated seconds, in report order
        assert rows.cum_epochs.tolist() == list(range(1, len(rows) + 1))
    pbt = a[a.strategy == "pbt"]
    assert (pbt.proposed_by == "perturbation").any()  # exploits happened in the replay


def test_asha_with_two_workers_sees_results_in_simulated_completion_order(
    write_study, tmp_path, monkeypatch
):
    """Epoch times differ by config (1 to 8 s): with two workers, results must reach ASHA in
    the order of their simulated completion, each trial's epochs back to back from its
    start, and a trial may start only when one of the two workers is free."""
    from ray.tune.schedulers import ASHAScheduler

    from hpo.strategies.budget import EpochBudget

    seen: list[tuple[str, int]] = []  # every result, in the order the run processed them
    asked: list[tuple[str, int]] = []  # those ASHA decided on (not the budget's stops)
    budget, asha = EpochBudget.__call__, ASHAScheduler.on_trial_result

    def spy_budget(self, trial_id, result):
        seen.append((trial_id, result["training_iteration"]))
        return budget(self, trial_id, result)

    def spy_asha(self, controller, trial, result):
        asked.append((trial.trial_id, result["training_iteration"]))
        return asha(self, controller, trial, result)

    monkeypatch.setattr(EpochBudget, "__call__", spy_budget)
    monkeypatch.setattr(ASHAScheduler, "on_trial_result", spy_asha)
    study_file = write_study(finite_study(strategies=["asha"]))
    study = load_study(study_file)
    seconds = {0.001: 1.0, 0.003: 2.0, 0.01: 5.0, 0.03: 8.0}
    folder = write_table(
        study_file,
        tmp_path / "table",
        configs=table_configs(study, 8),
        epoch_seconds=lambda config, seed, epoch: seconds[config["lr"]],
    )
    out = replay(study_file, folder, tmp_path / "r", workers=2, processes=1, echo=quiet)
    rows = pd.read_csv(out / "trials.csv")
    by_time = rows.sort_values(["report_time", "cum_epochs"], kind="stable")
    assert by_time.cum_epochs.tolist() == rows.cum_epochs.tolist()
    assert [(t, e) for t, e in zip(rows.trial_id, rows.epoch, strict=True)] == seen
    assert asked == [pair for pair in seen if pair in set(asked)] and len(asked) > len(seen) / 2
    spans = []
    for _, trial in rows.groupby("trial_id"):
        step = seconds[trial["config/lr"].iloc[0]]
        start = trial.report_time.iloc[0] - step
        assert np.allclose(trial.report_time, start + step * trial.epoch)
        spans.append((start, trial.report_time.iloc[-1]))
    ends = {0.0} | {end for _, end in spans}
    for start, _ in spans:
        assert any(math.isclose(start, end) for end in ends)  # a worker freed just then
        busy = sum(s <= start + 1e-9 < e for s, e in spans)
        assert busy <= 2
    assert (
        len({start for start, _ in spans if start == 0}) == 1 and sum(s == 0 for s, _ in spans) == 2
    )  # both workers start at once


def test_bad_input_is_one_line_and_writes_nothing(write_study, tmp_path):
    study_file = write_study(finite_study())
    folder = write_table(study_file, tmp_path / "table", configs=8)
    results = tmp_path / "r"

    def refused(*args: str) -> str:
        done = run_hpo(
            "replay", str(study_file), "--table", str(folder), "--results", str(results), *args
        )
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("hpo replay: error: ")
        assert not results.exists()
        return lines[0]

    assert "5-2 is an empty range" in refused("--seeds", "5-2")
    assert "'bogus' is not a registered strategy" in refused("--strategies", "bogus")
    assert "'pbt' is not one of the study's strategies" in refused("--strategies", "pbt")
    study_file.write_text(yaml.safe_dump(finite_study(description="another version")))
    assert "a table of another version of" in refused()


def test_an_unfinished_table_is_refused(write_study, tmp_path):
    from hpo.records import read_table_record, write_table_record

    study_file = write_study(finite_study())
    folder = write_table(study_file, tmp_path / "table", configs=8)
    record = read_table_record(folder)
    record.status = "running"
    write_table_record(folder, record)
    with pytest.raises(StudyError, match="the table is unfinished"):
        replay(study_file, folder, tmp_path / "r", echo=quiet)
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_one_worker_replay_reproduces_a_real_run(ray_session, tmp_path):
    """A study over a finite space, one trial at a time: a real `hpo run` of grid, random
    and sha, and a replay on the table `hpo tabulate` recorded for the same study, give
    the same configurations in the same order, the same promotions and the same metrics
    (the CNN's training is seeded per epoch, so a recorded curve is the curve)."""
    from hpo.runner import StudyRunner
    from hpo.tabulate import tabulate

    # SHA: 5 trials to 2 epochs, 2 of them promoted to 4. One trial at a time, every SHA
    # pause and resume starts a trial anew (seconds each): few rungs and trials keep it short.
    study = finite_study(
        strategies=["grid", "random", "sha"],
        max_concurrent_trials=1,
        budget={"max_epochs": 4, "min_epochs": 2, "reduction_factor": 2, "total_epochs": 16},
    )
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump(study))
    StudyRunner(study_file, tmp_path / "results", echo=quiet).run()
    folder = tabulate(study_file, tmp_path / "results", configs=8, seeds=[0], echo=quiet)
    out = replay(study_file, folder, tmp_path / "results", workers=1, processes=1, echo=quiet)

    real = pd.read_csv(tmp_path / "results" / "tiny" / "trials.csv")
    simulated = pd.read_csv(out / "trials.csv")
    columns = ["strategy", "seed", "epoch", "config/lr", "config/optimizer", "status"]
    for strategy in ("grid", "random", "sha"):
        a = real[real.strategy == strategy].reset_index(drop=True)
        b = simulated[simulated.strategy == strategy].reset_index(drop=True)
        pd.testing.assert_frame_equal(a[columns], b[columns])  # same order, same promotions
        assert np.allclose(a.val_accuracy, b.val_accuracy), strategy
        # the same trials in the same roles: trial ids map one to one
        pairs = set(zip(a.trial_id, b.trial_id, strict=True))
        assert len(pairs) == a.trial_id.nunique() == b.trial_id.nunique()
    real_record = read_study_record(tmp_path / "results" / "tiny")
    replayed = read_study_record(out)
    for key, run in real_record.runs.items():
        assert replayed.runs[key].best.value == pytest.approx(run.best.value)
        assert replayed.runs[key].best.config == run.best.config
    sha = real[real.strategy == "sha"]
    reached = sha.groupby("trial_id").epoch.max().value_counts().to_dict()
    assert reached.get(4, 0) >= 1 and reached.get(2, 0) >= 1  # promoted, and stopped at a rung


def test_the_report_reads_a_replay_and_says_so_first(write_study, tmp_path):
    import re

    from hpo.report import build_report

    study_file = write_study({**TINY_STUDY, "strategies": ["random", "asha", "optuna"]})
    folder = write_table(study_file, tmp_path / "table", configs=40)
    out = replay(study_file, folder, tmp_path / "r", seeds=list(range(10)), echo=quiet)
    page = build_report(out).read_text()
    body = page[page.index("<body") :]
    first_text = re.sub(r"<[^>]+>", " ", body[body.index(">") + 1 :]).split()
    assert (
        " ".join(first_text[:9])
        == "REPLAY: simulated on recorded learning curves, nothing was trained."
    )
    assert "extra trees" in body and "held-out MAE" in body
    assert "Friedman" in body and "Many seeds" in body  # ten seeds: the many-seeds section

    from hpo.bench import ranking

    lines: list[str] = []
    result = ranking(out, out, subset=3, draws=200, echo=lines.append)
    assert result["real_tau"] == pytest.approx(1.0)  # itself
    assert result["replay_seeds"] == 10 and -1 <= result["subset_tau_median"] <= 1
    assert sorted(result["replay_mean_ranks"]) == ["asha", "optuna", "random"]
    assert len(lines) == 4 and "Kendall tau" in lines[-1]


def test_status_lists_a_replays_runs_and_export_refuses_it(write_study, tmp_path):
    from hpo.export import export
    from hpo.status import study_status

    study_file = write_study({**TINY_STUDY, "strategies": ["random"]})
    folder = write_table(study_file, tmp_path / "table", configs=10)
    out = replay(study_file, folder, tmp_path / "r", seeds=[3, 4], processes=1, echo=quiet)
    status = study_status(out)
    assert status[["strategy", "seed", "state"]].values.tolist() == [
        ["random", 3, "finished (replay)"],
        ["random", 4, "finished (replay)"],
    ]
    with pytest.raises(StudyError, match="a replay .* export from a real study"):
        export(out)


def test_the_command_replays_and_ends_with_the_report(write_study, tmp_path):
    study_file = write_study(finite_study(strategies=["random", "sha"]))
    folder = write_table(study_file, tmp_path / "table", configs=8)
    done = run_hpo(
        "replay",
        str(study_file),
        "--table",
        str(folder),
        "--results",
        str(tmp_path / "r"),
        "--seeds",
        "0-2",
        "--workers",
        "1",
    )
    assert done.returncode == 0, done.stderr
    out = tmp_path / "r" / "tiny" / "replay"
    assert (
        "2 strategies × 3 seeds" in done.stdout
        and "looked up in the table (no surrogate)" in done.stdout
    )
    assert done.stdout.strip().splitlines()[-1] == f"report:  {out / 'report' / 'index.html'}"
    record = read_study_record(out)
    assert record.replay.workers == 1 and len(record.runs) == 6
