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
from typing import Any

import pandas as pd

from hpo import results as res
from hpo.spec import StudyError, parse_study

PENDING, RUNNING, FINISHED, FAILED, INTERRUPTED = (
    "pending",
    "running",
    "finished",
    "failed",
    "interrupted",
)


def driver_alive(marker: dict[str, Any]) -> bool:
    """Is the `hpo run` process that wrote this 'running' marker still alive? Only
    answerable on its own host; elsewhere a running marker is taken at its word."""
    pid, host = marker.get("driver_pid"), marker.get("driver_host")
    if not pid or host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_state(marker: dict[str, Any] | None) -> str:
    if marker is None:
        return PENDING
    status = marker.get("status")
    if status == "running" and not driver_alive(marker):
        return INTERRUPTED  # killed without a chance to say so; `hpo run` resumes it
    return status if status in (RUNNING, FINISHED, FAILED, INTERRUPTED) else PENDING


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


def planned_trials(study, strategy: str, seed: int) -> int:
    """Trials the strategy plans (for ASHA/Hyperband an upper bound: the budget ends them)."""
    from hpo.strategies import STRATEGIES

    plan = STRATEGIES[strategy](study, seed)
    return int(plan.notes.get("grid_points", plan.num_samples))


def study_status(study_dir: str | Path) -> pd.DataFrame:
    """One row per strategy × seed: state, trials done/planned, epochs spent of the budget,
    best validation metric so far and elapsed seconds."""
    study_dir = Path(study_dir)
    meta = res.read_json(study_dir / "study.json")
    if meta is None:
        raise StudyError(f"{study_dir}: no study.json (expected a results folder of hpo run)")
    study = parse_study(meta["study"], str(study_dir / "study.json"), trusted=True)
    metric, mode = study.metric.name, study.metric.mode
    rows = []
    for strategy in study.strategies:
        for seed in study.seeds:
            path = res.run_dir(study_dir, strategy, seed)
            marker = res.read_json(path / res.RUN_MARKER)
            state = run_state(marker)
            trials, epochs, best = reported_so_far(path, metric, mode)
            if state == FINISHED and (marker or {}).get("best"):
                best = float(marker["best"][metric])
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
                    "elapsed_s": elapsed(marker, state),
                }
            )
    return pd.DataFrame(rows)


def elapsed(marker: dict[str, Any] | None, state: str) -> float:
    if not marker:
        return 0.0
    spent = float(marker.get("wall_s", 0.0))
    if state == RUNNING and marker.get("fit_started"):
        spent += time.time() - float(marker["fit_started"])
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
        except (StudyError, ValueError, KeyError) as error:
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
