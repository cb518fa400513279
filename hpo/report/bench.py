"""How long `build_report` takes on a large study: a synthetic results folder in the real
format (study.json + trials.csv as `hpo run` writes them), then one timed report.

    .venv/bin/python -m hpo.report.bench              # 1,000 trials × 30 epochs
    .venv/bin/python -m hpo.report.bench --trials 200 --epochs 10 --keep /tmp/synthetic

`synthetic_study` is also what the fast report tests build their folders with: no Ray,
no training, seconds instead of minutes.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpo.files import write_csv
from hpo.provenance import package_versions
from hpo.records import BestTrial, Machine, RunRecord, StudyRecord, write_study_record
from hpo.report import build_report
from hpo.spec import parse_study
from hpo.strategies import STRATEGIES

SPACE: dict[str, Any] = {
    "lr": {"loguniform": {"low": 1.0e-4, "high": 0.1}},
    "optimizer": {"choice": ["sgd", "momentum", "adam"]},
    "dropout": {"uniform": {"low": 0.0, "high": 0.5}},
    "batch_size": {"choice": [32, 64, 128]},
    "kernel_size": {"randint": {"low": 2, "high": 6}},
    "batch_norm": {"choice": [True, False]},
}
FIXED: dict[str, Any] = {"conv_layers": 2, "activation": "relu"}
SIZES = {"train": 1078, "val": 359, "test": 360}
ETA = 3  # the synthetic budget's reduction factor (min_epochs 1)
# How the synthetic strategies behave, so the report's fidelity, proposals, decision-time
# and PBT paths all see data shaped like a real study's.
STOPPED_AT_RUNGS = ("sha", "asha", "hyperband", "bohb")
MODEL_BASED = ("optuna", "bohb")
STARTUP_TRIALS = 4  # a model-based run's random start-up trials
PBT = "pbt"
PERTURBED = ("lr", "dropout")  # PBT's continuous hyperparameters in SPACE


def _config(rng: np.random.Generator) -> dict[str, Any]:
    return {
        "lr": float(math.exp(rng.uniform(math.log(1e-4), math.log(0.1)))),
        "optimizer": str(rng.choice(SPACE["optimizer"]["choice"])),
        "dropout": float(rng.uniform(0.0, 0.5)),
        "batch_size": int(rng.choice(SPACE["batch_size"]["choice"])),
        "kernel_size": int(rng.integers(2, 6)),
        "batch_norm": bool(rng.integers(0, 2)),
        **FIXED,
    }


def _curve(config: dict[str, Any], epochs: int, rng: np.random.Generator) -> np.ndarray:
    """A plausible validation-accuracy curve: its ceiling and speed depend on the config
    (best near lr = 3e-3 with adam), plus noise."""
    distance = abs(math.log10(config["lr"]) - math.log10(3e-3))
    ceiling = 0.99 - 0.12 * distance**2 - (0.04 if config["optimizer"] == "sgd" else 0.0)
    ceiling = float(np.clip(ceiling - 0.05 * config["dropout"], 0.12, 0.995))
    speed = 2.0 + 6.0 * distance + (4.0 if config["optimizer"] == "sgd" else 0.0)
    epoch = np.arange(1, epochs + 1)
    values = ceiling - (ceiling - 0.1) * np.exp(-epoch / speed) + rng.normal(0, 0.01, epochs)
    return np.clip(values, 0.0, 1.0)


def synthetic_study(
    directory: str | Path,
    trials: int = 1000,
    epochs: int = 30,
    strategies: Sequence[str] = tuple(STRATEGIES),
    seeds: Sequence[int] = (0, 1),
    diverged_fraction: float = 0.02,
    seed: int = 0,
) -> Path:
    """Write `<directory>/synthetic/{study.json,trials.csv}` with `trials` trials spread
    over strategies × seeds, each reporting up to `epochs` epochs (a diverged trial
    stops with NaN metrics), two at a time per run, and return the study folder."""
    rng = np.random.default_rng(seed)
    study_dir = Path(directory) / "synthetic"
    study_dir.mkdir(parents=True, exist_ok=True)
    runs = [(s, k) for s in strategies for k in seeds]
    per_run = np.full(len(runs), trials // len(runs))
    per_run[: trials % len(runs)] += 1
    frames, records = [], {}
    clock = 1.8e9
    for (strategy, run_seed), count in zip(runs, per_run, strict=True):
        started = clock
        slots = [started + 5.0, started + 5.0]  # two trials at a time, after a start-up
        rows = []
        for index in range(int(count)):
            config = _config(rng)
            curve = _curve(config, epochs, rng)
            diverges = rng.random() < diverged_fraction
            stop = _stop_epoch(strategy, epochs, rng)
            reported = int(rng.integers(1, stop + 1)) if diverges else stop
            status = "finished" if stop == epochs else "early_stopped"
            configs, proposers = _proposals(strategy, index, config, epochs, rng)
            slot = int(np.argmin(slots))
            for epoch in range(1, reported + 1):
                slots[slot] += float(rng.uniform(0.05, 0.3))
                broken = diverges and epoch == reported
                accuracy = np.nan if broken else float(curve[epoch - 1])
                in_force = configs[epoch - 1]
                rows.append(
                    {
                        "trial_id": f"{strategy[:2]}{run_seed}_{index:05d}",
                        "status": "diverged" if diverges else status,
                        "epoch": epoch,
                        "train_loss": np.nan if broken else 2.3 * (1 - accuracy) + 0.01,
                        "train_accuracy": np.nan if broken else min(1.0, accuracy + 0.01),
                        "val_loss": np.nan if broken else 2.3 * (1 - accuracy) + 0.05,
                        "val_accuracy": accuracy,
                        "lr": in_force["lr"],
                        "epoch_time_s": 0.1,
                        "diverged": broken,
                        "report_time": slots[slot],
                        "node_ip": "127.0.0.1",
                        "proposed_by": proposers[epoch - 1],
                        **{f"config/{k}": v for k, v in in_force.items()},
                    }
                )
        frame = pd.DataFrame(rows).sort_values("report_time", kind="stable")
        frame.insert(0, "seed", run_seed)
        frame.insert(0, "strategy", strategy)
        frame["cum_epochs"] = np.arange(1, len(frame) + 1)
        frame["wall_s"] = frame["report_time"] - started
        frames.append(frame)
        clock = float(frame["report_time"].max()) + 1.0
        run = _run_record(strategy, run_seed, started, frame, rng)
        records[run.key] = run
    write_csv(study_dir / "trials.csv", pd.concat(frames, ignore_index=True))
    record = StudyRecord(
        study=parse_study(_study(strategies, seeds, trials, epochs), "synthetic study"),
        study_file="synthetic (hpo.report.bench)",
        study_hash="0" * 64,
        versions=package_versions(),
        machine=Machine(hostname="synthetic", cpus=os.cpu_count(), gpus=0),
        started_at=_iso(1.8e9),
        ended_at=_iso(clock),
        runs=records,
    )
    write_study_record(study_dir, record)
    return study_dir


def _stop_epoch(strategy: str, epochs: int, rng: np.random.Generator) -> int:
    """The epoch a trial stops at: successive-halving strategies promote one in η trials
    at each rung 1, η, η², … below `epochs`; the others train to the end."""
    if strategy not in STOPPED_AT_RUNGS:
        return epochs
    rung = 1
    while rung < epochs and rng.random() >= 1 / ETA:
        rung *= ETA
    return min(rung, epochs)


def _proposals(
    strategy: str, index: int, config: dict[str, Any], epochs: int, rng: np.random.Generator
) -> tuple[list[dict[str, Any]], list[str]]:
    """The config in force and proposed_by at each epoch of one trial: TPE's start-up
    trials then model proposals; PBT's random start, then perturbed copies every
    interval (a quarter of the population exploits); the registry's label otherwise."""
    if strategy in MODEL_BASED:
        return [config] * epochs, ["startup" if index < STARTUP_TRIALS else "model"] * epochs
    if strategy != PBT:
        proposes = getattr(STRATEGIES.get(strategy), "proposes", "random")
        return [config] * epochs, [proposes] * epochs
    interval = max(1, epochs // 3)
    configs, proposers, current, label = [], [], dict(config), "random"
    for epoch in range(1, epochs + 1):
        if epoch > 1 and (epoch - 1) % interval == 0 and rng.random() < 0.25:
            current, label = _perturb(current, rng), "perturbation"
        configs.append(current)
        proposers.append(label)
    return configs, proposers


def _perturb(config: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """PBT's explore step: scale each continuous hyperparameter by 0.8 or 1.2, in bounds."""
    perturbed = dict(config)
    for name in PERTURBED:
        (bounds,) = SPACE[name].values()
        scaled = config[name] * float(rng.choice([0.8, 1.2]))
        perturbed[name] = float(np.clip(scaled, bounds["low"], bounds["high"]))
    return perturbed


def _run_record(
    strategy: str, seed: int, started: float, frame: pd.DataFrame, rng: np.random.Generator
) -> RunRecord:
    """The run's record, with its best trial selected as the runner does, and the
    driver's decision seconds where this hpo records them (a model-based searcher
    spends more of the run deciding)."""
    finite = frame.dropna(subset=["val_accuracy"])
    best = finite.sort_values(["val_accuracy", "cum_epochs"], ascending=[False, True]).iloc[0]
    ended = float(frame["report_time"].max())
    share = (0.03 if strategy in MODEL_BASED else 0.003) * float(rng.uniform(0.5, 1.5))
    measured = {"decision_s": share * (ended - started)}
    return RunRecord(
        **(measured if "decision_s" in RunRecord.model_fields else {}),
        strategy=strategy,
        seed=seed,
        started=started,
        status="finished",
        started_at=_iso(started),
        ended_at=_iso(ended),
        wall_s=ended - started,
        errors=0,
        data_sizes=SIZES,
        trials=int(frame["trial_id"].nunique()),
        epochs=len(frame),
        statuses=frame.groupby("trial_id")["status"].first().value_counts().to_dict(),
        best=BestTrial(
            trial_id=best["trial_id"],
            epoch=int(best["epoch"]),
            cum_epochs=int(best["cum_epochs"]),
            metric="val_accuracy",
            value=float(best["val_accuracy"]),
            config={
                k.removeprefix("config/"): (v.item() if hasattr(v, "item") else v)
                for k, v in best.items()
                if k.startswith("config/")
            },
            test={"test_loss": 0.2, "test_accuracy": float(best["val_accuracy"]) - 0.01},
            checkpoint_epoch=int(best["epoch"]),
        ),
    )


def _study(strategies: Sequence[str], seeds: Sequence[int], trials: int, epochs: int) -> dict:
    return {
        "name": "synthetic",
        "description": f"synthetic results: {trials} trials × {epochs} epochs (benchmark)",
        "trainable": "cnn",
        "dataset": {
            "name": "digits",
            "val_fraction": 0.2,
            "test_fraction": 0.2,
            "split_seed": None,
        },
        "fixed": FIXED,
        "space": SPACE,
        "metric": {"name": "val_accuracy", "mode": "max"},
        "budget": {
            "max_epochs": epochs,
            "min_epochs": 1,
            "reduction_factor": ETA,
            "total_epochs": trials * epochs // max(len(strategies) * len(seeds), 1),
            "time_limit_s": None,
        },
        "strategies": list(strategies),
        "seeds": list(seeds),
        "resources": {"cpu": 1.0, "gpu": 0.0},
        "max_concurrent_trials": 2,
        "max_failures": 0,
    }


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpo.report.bench", description=__doc__)
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--cpus", type=int, default=2, help="pin to this many CPUs (Linux)")
    parser.add_argument("--keep", help="write the synthetic study here and keep it")
    args = parser.parse_args(argv)
    if args.cpus and hasattr(os, "sched_setaffinity"):
        available = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, available[: args.cpus])
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.keep or scratch)
        study_dir = synthetic_study(root, trials=args.trials, epochs=args.epochs)
        rows = len(pd.read_csv(study_dir / "trials.csv"))
        began = time.perf_counter()
        page = build_report(study_dir)
        seconds = time.perf_counter() - began
        print(
            f"build_report: {args.trials} trials × {args.epochs} epochs ({rows} rows), "
            f"{cpus} CPUs: {seconds:.1f} s; index.html {page.stat().st_size / 1e6:.1f} MB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
