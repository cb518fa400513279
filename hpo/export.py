"""Export a study's selected configuration with its provenance (`hpo export`).

Selection uses validation metrics only: the strategy with the best mean (over seeds) of
each run's best validation metric, then that strategy's best run, then its best epoch.
The test metric is carried along as a measurement, never used to choose.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from hpo import results as res
from hpo.files import write_text
from hpo.records import ExportRecord, TestScore, ValidationScore
from hpo.spec import StudyError


def run_bests(trials: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """One row per strategy-seed run: its epoch with the best finite validation metric."""
    rows = []
    for _, run in trials.groupby(["strategy", "seed"], sort=False):
        best = res.best_row(run, metric, mode)
        if best is not None:
            rows.append(best)
    return pd.DataFrame(rows).reset_index(drop=True)


def strategy_ranking(bests: pd.DataFrame, metric: str, mode: str) -> list[str]:
    """Strategies by the mean over seeds of their runs' best validation metric."""
    order = {name: i for i, name in enumerate(dict.fromkeys(bests["strategy"]))}
    means = bests.groupby("strategy")[metric].mean()
    sign = -1.0 if mode == "max" else 1.0
    return sorted(means.index, key=lambda s: (sign * means[s], order[s]))


def select(
    trials: pd.DataFrame, metric: str, mode: str, strategy: str = "best", seed: int | None = None
) -> pd.Series:
    """The exported trial-epoch; raises StudyError when nothing finite qualifies."""
    if trials.empty or metric not in trials:
        raise StudyError(f"no trial reported {metric!r}: nothing to export")
    bests = run_bests(trials, metric, mode)
    if bests.empty:
        raise StudyError(
            f"no trial has a finite {metric} (all diverged or errored): nothing to export"
        )
    if strategy == "best":
        strategy = strategy_ranking(bests, metric, mode)[0]
    chosen = bests[bests["strategy"] == strategy]
    if seed is not None:
        chosen = chosen[chosen["seed"] == seed]
    if chosen.empty:
        where = f"strategy {strategy!r}" + (f" seed {seed}" if seed is not None else "")
        raise StudyError(f"{where}: no finished trial with a finite {metric} in these results")
    ordered = chosen.sort_values([metric, "seed"], ascending=[mode == "min", True], kind="stable")
    return ordered.iloc[0]


def export_document(results: res.Results, row: pd.Series) -> ExportRecord:
    """The exported file's content: config plus everything needed to trust and rerun it."""
    record, study = results.record, results.study
    strategy, seed = str(row["strategy"]), int(row["seed"])
    run = record.run(strategy, seed)
    best = run.best if run is not None else None
    same_trial = best is not None and best.trial_id == row["trial_id"]
    config = dict(best.config) if same_trial else _config_from_row(row)
    dataset = study.dataset
    if dataset is not None and dataset.split_seed is None:  # the split it trained and was tested on
        dataset = dataset.model_copy(update={"split_seed": seed})
    return ExportRecord(
        study=study.name,
        strategy=strategy,
        seed=seed,
        trial_id=str(row["trial_id"]),
        trainable=study.trainable,
        dataset=dataset,
        config=config,
        validation=ValidationScore(
            metric=study.metric.name,
            mode=study.metric.mode,
            value=float(row[study.metric.name]),
            epoch=int(row["epoch"]),
            max_epochs=study.budget.max_epochs,
        ),
        test=TestScore(
            accuracy=best.test.get("test_accuracy"),
            loss=best.test.get("test_loss"),
            metrics=dict(best.test),
        )
        if same_trial
        else TestScore(),
        resources=study.resources,
        versions=record.versions,
        study_file=record.study_file,
        study_hash=record.study_hash,
        exported_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def _config_from_row(row: pd.Series) -> dict[str, Any]:
    config = {}
    for key, value in row.items():
        if key.startswith("config/") and not (isinstance(value, float) and math.isnan(value)):
            config[key.removeprefix("config/")] = value.item() if hasattr(value, "item") else value
    return config


def as_study(document: ExportRecord) -> dict[str, Any]:
    """A one-trial study file that reruns the exported config through `hpo run`."""
    config = dict(document.config)
    # A study must search something: the first hyperparameter becomes a one-value choice.
    first = next(iter(config))
    epochs = document.validation.max_epochs
    return {
        "name": f"{document.study}-{document.strategy}-seed{document.seed}-best",
        "description": f"Exported {document.strategy} seed {document.seed} "
        f"trial {document.trial_id} of study {document.study}",
        "trainable": document.trainable,
        **({"dataset": document.dataset.model_dump(mode="json")} if document.dataset else {}),
        "fixed": {k: v for k, v in config.items() if k != first},
        "space": {first: {"choice": [config[first]]}},
        "metric": {"name": document.validation.metric, "mode": document.validation.mode},
        "budget": {"max_epochs": epochs, "min_epochs": 1, "total_epochs": epochs},
        "strategies": ["random"],
        "seeds": [document.seed],
        "resources": document.resources.model_dump(mode="json"),
    }


def export(
    study_dir: str | Path,
    strategy: str = "best",
    seed: int | None = None,
    fmt: str = "yaml",
    out: str | Path | None = None,
    as_study_file: bool = False,
) -> Path:
    """Select, build and write the export; returns the written file."""
    import json

    import yaml

    study_dir = Path(study_dir)
    results = res.load_results(study_dir)  # StudyError naming the folder when it is not one
    if results.record.replay is not None:
        raise StudyError(
            f"{study_dir}: a replay (simulated on recorded curves, nothing trained): its "
            "values may be a surrogate's; export from a real study's results folder"
        )
    study = results.study
    if strategy != "best" and strategy not in study.strategies:
        raise StudyError(f"--strategy: {strategy!r} is not one of {study.strategies} or best")
    row = select(results.trials, study.metric.name, study.metric.mode, strategy, seed)
    document = export_document(results, row)
    content = as_study(document) if as_study_file else document.model_dump(mode="json")
    if out is None:
        stem = "study" if as_study_file else "best"
        out = study_dir / f"{stem}-{document.strategy}-seed{document.seed}.{fmt}"
    if fmt == "json":
        text = json.dumps(content, indent=2) + "\n"
    else:
        text = yaml.safe_dump(content, sort_keys=False)
    return write_text(out, text)
