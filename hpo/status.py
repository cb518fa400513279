"""Where a study stands, read from its results folder alone (`hpo status`, `hpo list`).

Nothing here needs Ray or a live driver: the run markers (hpo_run.json), Ray Tune's
per-trial result files and study.json say everything, so the same command works on a
study that a Ray Job is running on a cluster and on one copied from another machine.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pandas as pd

from hpo import results as res
from hpo.records import (
    RUN_STATUSES,
    RunRecord,
    StudyRecord,
    read_run_record,
    read_study_record,
    run_dir,
)
from hpo.spec import Study, StudyError

PENDING = "pending"  # no run record yet
RUNNING, FINISHED, INTERRUPTED, FAILED = RUN_STATUSES


def driver_alive(run: RunRecord) -> bool:
    """Is the `hpo run` process that wrote this 'running' record still alive? Only
    answerable on its own host; elsewhere a running record is taken at its word."""
    if not run.driver_pid or run.driver_host != socket.gethostname():
        return True
    try:
        os.kill(run.driver_pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_state(run: RunRecord | None) -> str:
    if run is None:
        return PENDING
    if run.status == RUNNING and not driver_alive(run):
        return INTERRUPTED  # killed without a chance to say so; `hpo run` resumes it
    return run.status


def reported_so_far(experiment_dir: Path, metric: str, mode: str) -> tuple[int, int, float]:
    """Trials that reported, epochs spent (highest epoch per trial) and the best metric
    so far, from the trials' result.json lines."""
    epochs = res.epochs_on_disk(experiment_dir)
    values = [
        float(v)
        for row in res.result_lines(experiment_dir)
        if isinstance(v := row.get(metric), (int, float)) and v == v  # not NaN
    ]
    best = (max(values) if mode == "max" else min(values)) if values else float("nan")
    return len(epochs), sum(epochs.values()), best


def planned_trials(study: Study, strategy: str, seed: int) -> int:
    """Trials the strategy plans (for ASHA/Hyperband an upper bound: the budget ends them)."""
    from hpo.strategies import STRATEGIES

    return STRATEGIES[strategy].plan(study, seed).planned_trials


def study_status(study_dir: str | Path) -> pd.DataFrame:
    """One row per strategy × seed: state, trials done/planned, epochs spent of the budget,
    best validation metric so far and elapsed seconds."""
    study_dir = Path(study_dir)
    record = read_study_record(study_dir)
    study = record.study
    metric, mode = study.metric.name, study.metric.mode
    if record.replay is not None:
        return _replay_status(record)
    if study.compare:
        return _compared_status(study_dir, record)
    rows = []
    for strategy in study.strategies:
        for seed in study.seeds:
            path = run_dir(study_dir, strategy, seed)
            run = read_run_record(path)
            state = run_state(run)
            trials, epochs, best = reported_so_far(path, metric, mode)
            if state == FINISHED and run.best is not None:
                best = run.best.value
            rows.append(
                {
                    "strategy": strategy,
                    "seed": seed,
                    "state": state,
                    "trials": trials,
                    "planned_trials": planned_trials(study, strategy, seed),
                    "epochs": epochs,
                    "budget_epochs": study.budget.total_epochs,
                    f"best_{metric}": best,
                    "elapsed_s": elapsed(run, state),
                }
            )
    return pd.DataFrame(rows)


def _compared_status(study_dir: Path, record: StudyRecord) -> pd.DataFrame:
    """A compared study's runs, variant by variant (a variant not started yet: pending)."""
    from hpo.compare import variants

    frames = []
    for variant in variants(record.study):
        folder = variant.directory(study_dir)
        if (folder / "study.json").is_file():
            table = study_status(folder)
        else:
            table = pd.DataFrame(
                [
                    {"strategy": s, "seed": k, "state": PENDING}
                    for s in variant.study.strategies
                    for k in variant.study.seeds
                ]
            )
        frames.append(table.assign(variant=variant.label))
    table = pd.concat(frames, ignore_index=True)
    return table[["variant", *[c for c in table.columns if c != "variant"]]]


def _replay_status(record: StudyRecord) -> pd.DataFrame:
    """A replay's runs (hpo replay writes them all at once, finished): elapsed_s is in
    simulated seconds."""
    metric = record.metric
    return pd.DataFrame(
        [
            {
                "strategy": run.strategy,
                "seed": run.seed,
                "state": f"{run.status} (replay)",
                "trials": run.trials,
                "planned_trials": planned_trials(record.study, run.strategy, run.seed),
                "epochs": run.epochs,
                "budget_epochs": record.study.budget.total_epochs,
                f"best_{metric}": run.best.value if run.best is not None else None,
                "elapsed_s": run.wall_s,
            }
            for run in record.runs.values()
        ]
    )


def elapsed(run: RunRecord | None, state: str) -> float:
    if run is None:
        return 0.0
    spent = run.wall_s or 0.0
    if state == RUNNING and run.fit_started:
        spent += time.time() - run.fit_started
    return spent


def overall_state(states: list[str]) -> str:
    if states and all(s == FINISHED for s in states):
        return FINISHED
    for state in (RUNNING, FAILED, INTERRUPTED):
        if state in states:
            return state
    return "partial" if FINISHED in states else PENDING


def list_studies(results_root: str | Path) -> pd.DataFrame:
    """Every study under a results root: state, finished runs and the last update."""
    root = Path(results_root)
    if not root.is_dir():
        raise StudyError(f"{root}: no such results folder")
    rows = []
    for meta_file in sorted(root.glob("*/study.json")):
        study_dir = meta_file.parent
        try:
            table = study_status(study_dir)
        except StudyError as error:
            rows.append({"study": study_dir.name, "state": f"unreadable ({error})"})
            continue
        newest = max(p.stat().st_mtime for p in study_dir.rglob("*") if p.is_file())
        rows.append(
            {
                "study": study_dir.name,
                "state": overall_state(table["state"].tolist()),
                "runs_finished": int((table["state"] == FINISHED).sum()),
                "runs": len(table),
                "last_update": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(newest)),
            }
        )
    return pd.DataFrame(rows, columns=["study", "state", "runs_finished", "runs", "last_update"])
