"""`hpo replay`: every strategy × seed of a study simulated on a recorded table, written as
a results folder (`<results>/<study>/replay/`) that `hpo report` reads like a real one.

The table must be finished and recorded for this very study file (same hash). Runs are
spread over processes (one per CPU); each is deterministic for its seed unless decision
time is charged to the clock. The folder is written whole at the end (a staging folder
renamed into place): an interrupted or failed replay leaves the previous one intact.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from hpo import results as res
from hpo.files import write_csv
from hpo.provenance import now_iso, package_versions
from hpo.records import ReplayInfo, RunRecord, StudyRecord, write_study_record
from hpo.replay.curves import CurveTable
from hpo.replay.simulator import SimRun, simulate
from hpo.spec import Study, StudyError, load_study, study_hash, without_compare
from hpo.strategies import selected
from hpo.tabulate import TABLE_DIR, read_table
from trainables import PROPOSED_BY

REPLAY_DIR = "replay"


def replay(
    study_file: str | Path,
    table: str | Path | None = None,
    results_root: str | Path = "results",
    seeds: list[int] | None = None,
    strategies: list[str] | None = None,
    workers: int | None = None,
    charge_decisions: bool = False,
    processes: int | None = None,
    echo: Callable[[str], None] = print,
) -> Path:
    """Replay the study's strategies × seeds on its table; returns the replay folder."""
    began = time.time()
    study_file = Path(study_file)
    study = without_compare(load_study(study_file), study_file, "replay")
    # Every registered strategy can be replayed (the simulator drives its Ray Tune
    # objects); an unregistered name cannot be simulated.
    strategies = selected(study, strategies)
    seeds = list(seeds if seeds is not None else study.seeds)
    workers = workers or study.max_concurrent_trials or 1
    if workers < 1:
        raise StudyError(f"--workers: expected a positive number of workers, got {workers}")
    root = Path(results_root)
    table_dir = Path(table) if table else root / study.name / TABLE_DIR
    curves, info = _load_table(study, study_file, table_dir, workers, charge_decisions)
    echo(
        f"replaying {len(strategies)} strategies × {len(seeds)} seeds on {table_dir} "
        f"({len(curves.configs)} configs × {len(curves.seeds)} seeds), {workers} workers"
    )
    jobs = [(strategy, seed) for strategy in strategies for seed in seeds]
    simulated = _simulate_all(study, jobs, curves, workers, charge_decisions, processes)
    frames, runs = [], {}
    for (strategy, seed), sim in zip(jobs, simulated, strict=True):
        frame = _trial_rows(study, strategy, seed, sim)
        runs[f"{strategy}/seed-{seed}"] = _run_record(study, strategy, seed, sim, frame)
        frames.append(frame)
    trials = pd.concat([f for f in frames if not f.empty], ignore_index=True)
    predicted = float(trials["predicted"].mean()) if len(trials) else 0.0
    info.predicted_share = predicted
    info.simulated_s = float(sum(sim.clock for sim in simulated))
    info.real_s = time.time() - began
    record = StudyRecord(
        study=study,
        study_file=str(study_file),
        study_hash=study_hash(study_file),
        versions=package_versions(),
        started_at=now_iso(),
        ended_at=now_iso(),
        runs=runs,
        replay=info,
    )
    folder = root / study.name / REPLAY_DIR
    _write(folder, record, trials)
    if info.surrogate is None:
        source = "every trial-epoch looked up in the table (no surrogate)"
    else:
        source = (
            f"{predicted:.0%} of trial-epochs predicted by the surrogate (held-out MAE of "
            f"final {study.metric.name} {info.surrogate_mae_final:.3f})"
        )
    echo(
        f"{folder}: {len(jobs)} runs, {info.simulated_s:,.0f} simulated s in "
        f"{info.real_s:.1f} s ({info.simulated_s / max(info.real_s, 1e-9):,.0f}× real time); "
        + source
    )
    return folder


def _load_table(
    study: Study, study_file: Path, table_dir: Path, workers: int, charge_decisions: bool
) -> tuple[CurveTable, ReplayInfo]:
    """The table's curves, refused when it belongs to another study version or is
    unfinished; the surrogate's held-out error when the table does not cover the space."""
    record, rows = read_table(table_dir)
    digest = study_hash(study_file)
    if record.study_hash != digest:
        raise StudyError(
            f"{table_dir}: a table of another version of {study_file} (study hash "
            f"{record.study_hash[:12]}, the file's is {digest[:12]}); run hpo tabulate again"
        )
    if record.status != "finished":
        raise StudyError(
            f"{table_dir}: the table is unfinished ({record.rows or 0} rows); run "
            "`hpo tabulate` again to finish it"
        )
    curves = CurveTable(study, record.configs, rows)
    info = ReplayInfo(
        table=str(table_dir),
        table_hash=record.study_hash,
        table_configs=len(record.configs),
        table_seeds=list(record.seeds),
        workers=workers,
        charge_decisions=charge_decisions,
    )
    if not covers_space(study, curves):
        info.surrogate = curves.describe()
        info.surrogate_mae_final, info.surrogate_mae_curve = curves.held_out_error()
    return curves, info


def covers_space(study: Study, curves: CurveTable) -> bool:
    """Whether every configuration a strategy can propose is in the table: a finite space
    (choices only) whose every point the table holds."""
    from hpo import space as spaces

    points = spaces.finite_points(study.space)
    return points is not None and all(curves.holds(point) for point in points)


_CURVES: CurveTable | None = None  # the table, once per worker process


def _set_curves(curves: CurveTable) -> None:
    global _CURVES
    _CURVES = curves


def _simulate_one(study: Study, job: tuple[str, int], workers: int, charge: bool) -> SimRun:
    import logging

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("ray.tune").setLevel(logging.ERROR)
    strategy, seed = job
    return simulate(study, strategy, seed, _CURVES, workers, charge)


def _simulate_all(
    study: Study,
    jobs: list[tuple[str, int]],
    curves: CurveTable,
    workers: int,
    charge: bool,
    processes: int | None,
) -> list[SimRun]:
    processes = processes or min(len(jobs), os.cpu_count() or 1)
    if processes <= 1:
        _set_curves(curves)
        return [_simulate_one(study, job, workers, charge) for job in jobs]
    # Spawned, not forked: a forked child of a process connected to Ray (a notebook, the
    # test session) inherits that connection, and registering the replay's trainable
    # then blocks on Ray's key-value store (measured: a hang).
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        processes, mp_context=spawn, initializer=_set_curves, initargs=(curves,)
    ) as pool:
        n = len(jobs)
        return list(
            pool.map(_simulate_one, [study] * n, jobs, [workers] * n, [charge] * n, chunksize=1)
        )


def _trial_rows(study: Study, strategy: str, seed: int, sim: SimRun) -> pd.DataFrame:
    """trials.csv rows of one simulated run, in the columns of a real run's."""
    from hpo.strategies import STRATEGIES

    proposes = STRATEGIES[strategy].proposes
    by_trial: dict[str, list[dict[str, Any]]] = {}
    for row in sim.rows:
        by_trial.setdefault(row.trial_id, []).append(
            {
                "trial_id": row.trial_id,
                "epoch": row.epoch,
                **{k: v for k, v in row.metrics.items() if k != "epoch"},
                "diverged": row.diverged,
                "early_stopped": False,
                "report_time": row.time,
                **{f"config/{k}": row.config.get(k) for k in [*study.space, *study.fixed]},
                PROPOSED_BY: row.config.get(PROPOSED_BY) or proposes,
                "predicted": row.predicted,
            }
        )
    frames = []
    for trial_id, rows in by_trial.items():
        frame = pd.DataFrame(rows).drop_duplicates("epoch", keep="last")
        status = res.trial_status(sim.statuses[trial_id], frame, study.budget.max_epochs, True)
        frame.insert(1, "status", status)
        frames.append(frame)
    return res.run_frame(frames, strategy, seed, run_started=0.0)


def _run_record(
    study: Study, strategy: str, seed: int, sim: SimRun, frame: pd.DataFrame
) -> RunRecord:
    metric, mode = study.metric.name, study.metric.mode
    run = RunRecord(
        strategy=strategy,
        seed=seed,
        status="finished",
        started=0.0,
        wall_s=sim.clock,
        decision_s=sim.decision_s,
    )
    row = res.summarize_run(run, frame, metric, mode)
    if row is not None and math.isfinite(float(row[metric])):
        run.best = res.best_trial(row, metric)
    return run


def _write(folder: Path, record: StudyRecord, trials: pd.DataFrame) -> None:
    """study.json and trials.csv, put in place together."""
    from hpo import preflight

    staging = folder.with_name(f".{folder.name}-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    preflight.make_writable_folder(staging)
    write_study_record(staging, record)
    write_csv(staging / res.TRIALS_FILE, trials)
    old = folder.with_name(f".{folder.name}-old-{os.getpid()}")
    if folder.exists():
        folder.rename(old)
    staging.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
