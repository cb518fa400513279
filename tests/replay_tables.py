"""Learning-curve tables written in `hpo tabulate`'s format without training: known curves
for the replay tests (a replay reads nothing else of a table)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from hpo.files import write_csv
from hpo.records import TableRecord, write_table_record
from hpo.spec import load_study, study_hash
from hpo.tabulate import TABLE_FILE, table_configs


def smooth_accuracy(config: dict[str, Any], seed: int, epoch: int) -> float:
    """Rises with epochs towards a ceiling that peaks at lr = 0.01 (and less dropout)."""
    ceiling = 0.95 - 0.08 * abs(math.log10(config["lr"]) + 2) - 0.05 * config.get("dropout", 0)
    return ceiling * (1 - math.exp(-epoch / 3)) + 0.002 * seed


def write_table(
    study_file: str | Path,
    folder: str | Path,
    configs: list[dict[str, Any]] | int = 40,
    seeds: list[int] | None = None,
    accuracy: Callable[[dict[str, Any], int, int], float] = smooth_accuracy,
    epoch_seconds: Callable[[dict[str, Any], int, int], float] = lambda c, s, e: 1.0,
    diverges_at: Callable[[dict[str, Any]], int | None] = lambda c: None,
) -> Path:
    """table.json + table.csv for `study_file` with the given curves (a config that
    diverges reports NaN losses at that epoch, flagged, and stops); returns the folder."""
    study = load_study(study_file)
    if isinstance(configs, int):
        configs = table_configs(study, configs, seed=0)  # as hpo tabulate chooses them
    seeds = seeds if seeds is not None else list(study.seeds)
    rows = []
    for index, config in enumerate(configs):
        for seed in seeds:
            last = diverges_at(config) or study.budget.max_epochs
            for epoch in range(1, last + 1):
                value = accuracy(config, seed, epoch)
                diverged = epoch == diverges_at(config)
                rows.append(
                    {
                        "config_id": index,
                        "seed": seed,
                        "epoch": epoch,
                        "status": "finished",
                        "train_loss": math.nan if diverged else 1 - value,
                        "train_accuracy": value,
                        "val_loss": math.nan if diverged else 1 - value,
                        "val_accuracy": value,
                        "lr": config.get("lr", 0.0),
                        "epoch_time_s": epoch_seconds(config, seed, epoch),
                        "diverged": diverged,
                        **{f"config/{k}": v for k, v in config.items()},
                    }
                )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_csv(folder / TABLE_FILE, pd.DataFrame(rows))
    record = TableRecord(
        study_file=str(study_file),
        study_hash=study_hash(study_file),
        sample_seed=0,
        configs=configs,
        seeds=seeds,
        status="finished",
        rows=len(rows),
    )
    write_table_record(folder, record)
    return folder
