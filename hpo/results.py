"""Saved results on disk → one tidy DataFrame (one row per trial per reported epoch).

Reads Ray Tune's own experiment directories, so it works on a study that ran yesterday,
on another machine or on a cluster, and never needs a live Tuner.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from hpo.records import BestTrial, RunRecord, StudyRecord, read_study_record
from hpo.spec import Study, StudyError
from trainables import (
    EPOCH_METRICS,
    GRAD_NORM_PREFIX,
    HEAD_METRICS,
    HYPERPARAMETER_PREFIX,
    PROPOSED_BY,
    TRAINABLES,
)

METRIC_COLUMNS = [*EPOCH_METRICS, "diverged", "early_stopped"]
# Metrics some trainables or configs report besides EPOCH_METRICS (each trainable declares
# its own; a second head adds HEAD_METRICS; grad_norm_every adds grad_norm/<layer>).
EXTRA_METRICS: tuple[str, ...] = tuple(
    dict.fromkeys(
        [m for info in TRAINABLES.values() for m in info.metrics if m not in METRIC_COLUMNS]
        + list(HEAD_METRICS)
    )
)


def metric_columns(columns: Any, any_metrics: bool = False) -> list[str]:
    """The columns of reported results that trials.csv keeps, in a stable order;
    `any_metrics` (a user's function trainable): every column it reported as well."""
    present = set(columns)
    extras = [c for c in EXTRA_METRICS if c in present]
    norms = sorted(c for c in present if str(c).startswith(GRAD_NORM_PREFIX))
    known = [c for c in METRIC_COLUMNS if c in present] + extras + norms
    if not any_metrics:
        return known
    return known + [c for c in columns if c not in known and _reported_by_user(str(c))]


# What Ray Tune and hpo add to a reported result (trials.csv has its own columns for them).
_BOOKKEEPING = frozenset(
    {
        "training_iteration", "time_this_iter_s", "time_total_s", "timestamp", "date", "done",
        "trial_id", "pid", "hostname", "node_ip", "node_id", "experiment_tag",
        "iterations_since_restore", "checkpoint_dir_name", "should_checkpoint",
        "timesteps_total", "episodes_total", "timesteps_since_restore", "time_since_restore",
    }
)  # fmt: skip


def _reported_by_user(column: str) -> bool:
    return column not in _BOOKKEEPING and not column.startswith((HYPERPARAMETER_PREFIX, "config/"))


# Trial statuses as the results and the report show them.
TRIAL_STATUSES: tuple[str, ...] = ("finished", "early_stopped", "diverged", "errored", "running")
FINISHED, EARLY_STOPPED, DIVERGED, ERRORED, RUNNING = TRIAL_STATUSES
TRIALS_FILE = "trials.csv"
VIEWS_FILE = "views.npz"  # arrays of the run's selected trial for the report (trainable views)


def result_lines(experiment_dir: str | Path | None) -> Iterator[dict[str, Any]]:
    """Every result a run's trials wrote so far, from their result.json files (a run in
    progress, or one whose driver died, has nothing else yet); a line being written or
    cut by a crash is skipped."""
    if experiment_dir is None:
        return
    for result_file in Path(experiment_dir).glob("*/result.json"):
        for line in result_file.read_text().splitlines():
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def epochs_on_disk(experiment_dir: str | Path | None) -> dict[str, int]:
    """Highest training_iteration per trial id: the epochs each trial has spent."""
    found: dict[str, int] = {}
    for row in result_lines(experiment_dir):
        trial, epoch = row.get("trial_id"), int(row.get("training_iteration", 0))
        if trial:
            found[trial] = max(found.get(trial, 0), epoch)
    return found


def busy_seconds(experiment_dir: str | Path | None) -> float:
    """Seconds a run's trials spent training: Tune's time_this_iter_s of each epoch (the
    last report of an epoch that a restored trial reported twice)."""
    epochs: dict[tuple[str, int], float] = {}
    for row in result_lines(experiment_dir):
        key = (str(row.get("trial_id")), int(row.get("training_iteration", 0)))
        epochs[key] = float(row.get("time_this_iter_s") or 0.0)
    return float(sum(epochs.values()))


def trial_frame(
    experiment_dir: str | Path,
    strategy: str,
    seed: int,
    max_epochs: int,
    run_started: float,
    run_finished: bool,
    config_keys: list[str],
    any_metrics: bool = False,
) -> pd.DataFrame:
    """All epochs of all trials of one strategy-seed run, ordered as they happened, with
    the config in force at each epoch and how the trial's config was proposed.
    `any_metrics`: a user's function trainable, whose every report is an epoch
    (Tune's training_iteration) and whose every reported column is kept."""
    from hpo.strategies import STRATEGIES

    proposes = STRATEGIES[strategy].proposes if strategy in STRATEGIES else "random"
    analysis = load_analysis(experiment_dir)
    frames = []
    for trial in analysis.trials:
        rows = reported_rows(trial, analysis)
        if any_metrics and rows is not None and "training_iteration" in rows:
            rows = rows.assign(epoch=rows["training_iteration"])
        if rows is None or rows.empty or "epoch" not in rows:
            continue
        # A trial restored from a checkpoint may re-report epochs: keep the last report.
        rows = rows.drop_duplicates("epoch", keep="last").sort_values("epoch")
        frame = pd.DataFrame({c: rows[c] for c in metric_columns(rows.columns, any_metrics)})
        for flag in ("diverged", "early_stopped"):
            frame[flag] = frame[flag].astype(str).str.lower().eq("true") if flag in frame else False
        frame["report_time"] = rows["report_time"].to_numpy()
        frame["node_ip"] = rows["node_ip"].to_numpy() if "node_ip" in rows else ""
        frame["pid"] = rows["pid"].to_numpy() if "pid" in rows else -1  # the worker process
        frame["node_id"] = rows["node_id"].to_numpy() if "node_id" in rows else ""  # Ray node
        for key in config_keys:
            frame[f"config/{key}"] = _in_force(rows, trial.config, key)
        proposed = _in_force(rows, trial.config, PROPOSED_BY)
        frame[PROPOSED_BY] = [p if isinstance(p, str) and p else proposes for p in proposed]
        frame.insert(0, "status", trial_status(trial.status, frame, max_epochs, run_finished))
        frame.insert(0, "trial_id", trial.trial_id)
        frames.append(frame)
    return run_frame(frames, strategy, seed, run_started)


def run_frame(
    frames: list[pd.DataFrame], strategy: str, seed: int, run_started: float
) -> pd.DataFrame:
    """One run's trials (each a frame of its epochs, with report_time) as trials.csv rows:
    in the order they were reported, with the epochs the run had spent and its clock."""
    if not frames:
        return pd.DataFrame()
    frame = pd.concat(frames, ignore_index=True).sort_values("report_time", kind="stable")
    frame.insert(0, "seed", seed)
    frame.insert(0, "strategy", strategy)
    frame["cum_epochs"] = range(1, len(frame) + 1)
    frame["wall_s"] = frame["report_time"] - run_started
    return frame.reset_index(drop=True)


def summarize_run(run: RunRecord, frame: pd.DataFrame, metric: str, mode: str) -> pd.Series | None:
    """Set a run record's trial, epoch and status counts from its trials.csv rows;
    returns its best row by validation (best_row), None when nothing finite was reported."""
    run.trials = int(frame["trial_id"].nunique()) if not frame.empty else 0
    run.epochs = int(len(frame))
    run.statuses = (
        frame.groupby("trial_id")["status"].first().value_counts().to_dict()
        if not frame.empty
        else {}
    )
    return None if frame.empty else best_row(frame, metric, mode)


def best_trial(
    row: pd.Series,
    metric: str,
    test: dict[str, float | None] | None = None,
    checkpoint_epoch: int | None = None,
) -> BestTrial:
    """A run's selected trial-epoch (a best_row) as its record says it."""
    return BestTrial(
        trial_id=row["trial_id"],
        epoch=int(row["epoch"]),
        cum_epochs=int(row["cum_epochs"]),
        metric=metric,
        value=float(row[metric]),
        config=best_config(row),
        test=test or {},
        checkpoint_epoch=checkpoint_epoch,
    )


def best_config(row: pd.Series) -> dict[str, Any]:
    """The config/<k> values of a trials.csv row, as plain Python values; an empty cell is
    a parameter the trial did not have (inactive under its `when:`), left out."""
    return {
        k.removeprefix("config/"): v.item() if hasattr(v, "item") else v
        for k, v in row.items()
        if k.startswith("config/") and not (pd.api.types.is_scalar(v) and pd.isna(v))
    }


def _in_force(rows: pd.DataFrame, config: dict[str, Any], key: str) -> list[Any]:
    """A config value per reported epoch: as the trial reported it (PBT changes configs
    while trials run), else the trial's config (results from before hp/ columns)."""
    column = f"{HYPERPARAMETER_PREFIX}{key}"
    if column in rows:  # a missing value: the key was not in the config then
        return [None if pd.isna(v) else v for v in rows[column]]
    return [config.get(key)] * len(rows)


def reported_rows(trial, analysis) -> pd.DataFrame | None:
    """Every result a trial reported, from its progress.csv.

    Ray Tune 2.60's JSON logger rewrites result.json when a paused trial resumes, losing
    the epochs before the pause, and ExperimentAnalysis prefers that file; the CSV logger
    appends, so progress.csv keeps them all.
    """
    progress = Path(trial.path) / "progress.csv" if trial.relative_logdir else None
    if progress is not None and progress.exists() and progress.stat().st_size:
        return pd.read_csv(progress)
    return analysis.trial_dataframes.get(trial.trial_id)


def load_analysis(experiment_dir: str | Path):
    """Ray Tune's ExperimentAnalysis of a run folder, without its warnings about trials
    that were created but never started (they simply have no rows)."""
    import logging

    from ray.tune import ExperimentAnalysis

    log = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        return ExperimentAnalysis(str(experiment_dir))
    finally:
        log.setLevel(level)


def trial_status(ray_status: str, rows: pd.DataFrame, max_epochs: int, run_finished: bool) -> str:
    """Map Ray's trial state plus the reported epochs to finished/early_stopped/diverged/..."""
    if ray_status == "ERROR":
        return ERRORED
    if bool(rows["diverged"].any()):
        return DIVERGED
    if int(rows["epoch"].max()) >= max_epochs:
        return FINISHED
    if not run_finished and ray_status in ("RUNNING", "PENDING", "PAUSED"):
        return RUNNING
    return EARLY_STOPPED


def best_row(frame: pd.DataFrame, metric: str, mode: str) -> pd.Series | None:
    """The epoch with the best finite validation metric (ties: the earliest in the run).

    Trials that diverged or errored are never selected, even by an epoch that looked good
    before they failed: a config that is unstable is not the one to hand to a user.
    """
    if "status" in frame:
        frame = frame[~frame["status"].isin([DIVERGED, ERRORED])]
    finite = frame[frame[metric].map(lambda v: isinstance(v, (int, float)) and math.isfinite(v))]
    if finite.empty:
        return None
    ordered = finite.sort_values(
        [metric, "cum_epochs"], ascending=[mode == "min", True], kind="stable"
    )
    return ordered.iloc[0]


EXPECTED = "expected the results folder of `hpo run`, holding study.json and trials.csv"
REQUIRED_COLUMNS = ("strategy", "seed", "trial_id", "status", "epoch", "cum_epochs", "wall_s")


@dataclass
class Results:
    """What the report and export read: the study's record (study.json) and trials.csv."""

    directory: Path
    record: StudyRecord
    trials: pd.DataFrame

    @property
    def study(self) -> Study:
        return self.record.study

    @property
    def metric(self) -> str:
        return self.record.metric

    @property
    def mode(self) -> str:
        return self.record.mode

    def leaderboard(self) -> pd.DataFrame:
        """One row per strategy: its runs' best validation metric (mean, std over seeds),
        test measurement, mean rank, trials, epochs and wall time, best first."""
        from hpo.report import tables

        runs = tables.run_table(tables.runs_frame(self.record), self.trials, *self._ranked())
        return tables.leaderboard(runs, self.mode)

    @property
    def best_config(self) -> dict[str, Any]:
        """The configuration `hpo export` writes (chosen on validation only)."""
        return self.best().config

    def best(self, strategy: str = "best", seed: int | None = None):
        """The export record (hpo.records.ExportRecord) of `strategy`'s best run, or of
        the best strategy's: config, validation and test scores, provenance."""
        from hpo.export import export_document, select

        return export_document(self, select(self.trials, *self._ranked(), strategy, seed))

    @property
    def runs(self) -> dict[str, Path]:
        """Each strategy × seed run's Ray Tune experiment folder, by "strategy/seed-k"."""
        from hpo.records import run_dir

        return {
            key: run_dir(self.directory, run.strategy, run.seed)
            for key, run in self.record.runs.items()
        }

    def report(self) -> Path:
        """Write the HTML report (as `hpo report`); returns index.html's path."""
        from hpo.report import build_report

        return build_report(self.directory)

    def export(self, strategy: str = "best", seed: int | None = None, **options: Any) -> Path:
        """Write the best configuration (as `hpo export`); returns the file's path."""
        from hpo.export import export

        return export(self.directory, strategy, seed, **options)

    def _ranked(self) -> tuple[str, str]:
        return self.metric, self.mode


def read_trials(study_dir: str | Path) -> pd.DataFrame:
    """trials.csv as saved (empty when no run has reported yet)."""
    path = Path(study_dir) / TRIALS_FILE
    try:
        return pd.read_csv(path) if path.is_file() else pd.DataFrame()
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise StudyError(f"{path}: unreadable CSV ({error})") from None


def load_results(study_dir: str | Path) -> Results:
    """study.json and trials.csv of a results folder, or a StudyError that names the
    folder and what was expected there."""
    directory = Path(study_dir)
    if not directory.is_dir():
        raise StudyError(f"{directory}: no such folder ({EXPECTED})")
    record = read_study_record(directory)
    if record.study.compare:
        folders = sorted(p.name for p in (directory / "variants").glob("*") if p.is_dir())
        raise StudyError(
            f"{directory}: a compared study keeps its runs in one folder per variant; "
            f"use {directory / 'variants' / (folders[0] if folders else '<variant>')} "
            f"(or another of its {len(folders)} variants)"
        )
    trials = read_trials(directory)
    if trials.empty:
        raise StudyError(
            f"{directory}: no trial has reported yet (trials.csv is missing or empty); "
            "run the report once a run has finished or been interrupted"
        )
    missing = [c for c in (*REQUIRED_COLUMNS, record.metric) if c not in trials]
    if missing:
        raise StudyError(f"{directory / TRIALS_FILE}: missing columns {missing} ({EXPECTED})")
    return Results(directory, record, trials)
