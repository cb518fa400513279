"""Compared factors (a study's `compare:`): one variant per combination of levels.

Each variant is an ordinary study (the levels' values fixed, their `space` added) that
every strategy and seed tunes on the same budget, in its own results folder
`<results>/<study>/variants/<slug>/`, so status, the per-variant report, export and
retrain work on it unchanged. A variant may start from another variant's run of the same
strategy and seed: its selected model's weights (`warm_start`) or the learning-rate
bounds its range test found (`lr_from`); those run first.

`load_compare` reads every variant's saved results into one `CompareResults` for the
report's factor sections.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from hpo.records import StudyRecord, read_study_record, run_dir
from hpo.spec import Combination, Study, combinations, slug, variant_label, variant_study

VARIANTS_DIR = "variants"
LINKS = ("warm_start", "lr_from")  # how a level can use another level's runs


@dataclass(frozen=True)
class Variant:
    """One combination of compared levels and the study it runs."""

    levels: dict[str, str]  # factor → level name, in the study's factor order
    study: Study
    # link ("warm_start"/"lr_from") → the levels of the variant whose runs this one uses
    sources: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return ", ".join(f"{factor}={level}" for factor, level in self.levels.items())

    @property
    def slug(self) -> str:
        return slug("_".join(f"{factor}-{level}" for factor, level in self.levels.items()))

    def directory(self, study_dir: str | Path) -> Path:
        return Path(study_dir) / VARIANTS_DIR / self.slug


def variants(study: Study) -> list[Variant]:
    """The study's variants, each after the variants it takes weights or bounds from."""
    found = [_variant(study, combination) for combination in combinations(study)]
    return _sources_first(found)


def _variant(study: Study, combination: Combination) -> Variant:
    levels = {factor: level.name for factor, level in combination.items()}
    sources = {}
    for factor, level in combination.items():
        for link in LINKS:
            source = getattr(level, link)
            if source is not None:
                sources[link] = {**levels, factor: str(source)}
    return Variant(levels, variant_study(study, combination, {"trusted": True}), sources)


def _sources_first(found: list[Variant]) -> list[Variant]:
    by_levels = {tuple(v.levels.items()): v for v in found}
    ordered: list[Variant] = []

    def visit(variant: Variant, path: tuple[str, ...]) -> None:
        if variant in ordered:
            return
        if variant.label in path:
            raise ValueError(f"compare: levels use each other's runs in a cycle: {variant.label}")
        for levels in variant.sources.values():
            visit(by_levels[tuple(levels.items())], (*path, variant.label))
        ordered.append(variant)

    for variant in found:
        visit(variant, ())
    return ordered


def variant_of(study: Study, levels: dict[str, str]) -> Variant:
    return next(v for v in variants(study) if v.levels == levels)


# ------------------------------------------------------------------ results
@dataclass
class VariantResults:
    variant: Variant
    directory: Path
    record: StudyRecord | None  # None: the variant has not started
    trials: pd.DataFrame  # its trials.csv (empty when none reported)


@dataclass
class CompareResults:
    """Every variant's saved results, for the report's factor sections.

    `runs`: one row per variant × strategy × seed with the factor levels as columns (named
    after the factors), `variant` (its label), `strategy`, `seed`, `run_status`,
    `selected_trial`, `selected_epoch`, `best_val` (the study metric of the selected trial),
    `test_accuracy`, `test_loss` and `config/<name>` of the selected config.
    `curves`: per variant × strategy × seed, every epoch of that run's selected trial:
    the factor columns, `variant`, `strategy`, `seed`, `trial_id`, `epoch`, `train_loss`,
    `train_accuracy`, `val_loss`, `val_accuracy`, `lr`.
    `trials`: every variant's trials.csv rows with the factor columns and `variant` added.
    `iterations`: where trials recorded them (`record_iterations`), one row per recorded
    mini-batch: the factor columns, `variant`, `strategy`, `seed`, `trial_id`, `epoch`,
    `iteration` (counted from 1 over the trial), `loss` and `lr`.
    `views`: variant label → the arrays (views.npz) its best run's selected model saved,
    e.g. `bn_gamma/<layer>` and `bn_beta/<layer>`; variants without any are absent.
    """

    directory: Path
    record: StudyRecord
    variants: list[VariantResults]
    runs: pd.DataFrame
    curves: pd.DataFrame
    trials: pd.DataFrame
    iterations: pd.DataFrame = field(default_factory=pd.DataFrame)
    views: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def study(self) -> Study:
        return self.record.study

    @property
    def factors(self) -> list[str]:
        return list(self.study.compare)

    def levels(self, factor: str) -> list[str]:
        return [level.name for level in self.study.compare[factor]]


CURVE_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr")


def load_compare(study_dir: str | Path) -> CompareResults:
    """A compared study's results folder → CompareResults (variants not yet run included,
    with no rows)."""
    from hpo.results import read_trials

    study_dir = Path(study_dir)
    record = read_study_record(study_dir)
    loaded, runs, curves, trials, iterations, views = [], [], [], [], [], {}
    for variant in variants(record.study):
        directory = variant.directory(study_dir)
        has_record = (directory / "study.json").is_file()
        variant_record = read_study_record(directory) if has_record else None
        frame = read_trials(directory) if has_record else pd.DataFrame()
        loaded.append(VariantResults(variant, directory, variant_record, frame))
        tags = {**variant.levels, "variant": variant.label}
        if not frame.empty:
            trials.append(frame.assign(**tags))
        if variant_record is None:
            continue
        best_views = _best_views(directory, variant_record)
        if best_views:
            views[variant.label] = best_views
        for run in variant_record.runs.values():
            recorded = iteration_rows(run_dir(directory, run.strategy, run.seed))
            if not recorded.empty:
                iterations.append(recorded.assign(**tags, strategy=run.strategy, seed=run.seed))
            runs.append({**tags, **_run_row(run)})
            if run.best is not None and not frame.empty:
                chosen = frame[
                    (frame["strategy"] == run.strategy)
                    & (frame["seed"] == run.seed)
                    & (frame["trial_id"] == run.best.trial_id)
                ]
                columns = [c for c in CURVE_COLUMNS if c in chosen]
                curves.append(
                    chosen[columns].assign(
                        **tags, strategy=run.strategy, seed=run.seed, trial_id=run.best.trial_id
                    )
                )
    return CompareResults(
        study_dir,
        record,
        loaded,
        pd.DataFrame(runs),
        pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(),
        pd.concat(trials, ignore_index=True) if trials else pd.DataFrame(),
        pd.concat(iterations, ignore_index=True) if iterations else pd.DataFrame(),
        views,
    )


def _best_views(directory: Path, record: StudyRecord) -> dict[str, Any]:
    """views.npz of the variant's run whose selected trial has the best validation metric."""
    import numpy as np

    from hpo.results import VIEWS_FILE

    finished = [r for r in record.runs.values() if r.best is not None]
    finished.sort(key=lambda r: r.best.value, reverse=record.mode == "max")
    for run in finished:
        path = run_dir(directory, run.strategy, run.seed) / VIEWS_FILE
        if path.is_file():
            with np.load(path) as arrays:
                return dict(arrays)
    return {}


def iteration_rows(experiment_dir: str | Path) -> pd.DataFrame:
    """The mini-batch losses and learning rates that a run's trials recorded
    (`record_iterations`), from their result.json lines; empty where none did."""
    from hpo.results import result_lines

    rows = []
    for line in result_lines(experiment_dir):
        losses = line.get("iteration_loss")
        if not isinstance(losses, list):
            continue
        for index, loss, lr in zip(
            line.get("iteration_index", []), losses, line.get("iteration_lr", []), strict=False
        ):
            rows.append(
                {
                    "trial_id": line.get("trial_id"),
                    "epoch": line.get("epoch"),
                    "iteration": index,
                    "loss": loss,
                    "lr": lr,
                }
            )
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows).drop_duplicates(["trial_id", "iteration"], keep="last")
    return frame.sort_values(["trial_id", "iteration"], ignore_index=True)


def _run_row(run: Any) -> dict[str, Any]:
    best = run.best
    row = {
        "strategy": run.strategy,
        "seed": run.seed,
        "run_status": run.status,
        "selected_trial": best.trial_id if best else None,
        "selected_epoch": best.epoch if best else None,
        "best_val": best.value if best else None,
        "test_accuracy": best.test.get("test_accuracy") if best else None,
        "test_loss": best.test.get("test_loss") if best else None,
    }
    if best is not None:
        row.update({f"config/{k}": v for k, v in best.config.items()})
    return row


__all__ = [
    "VARIANTS_DIR",
    "CompareResults",
    "Variant",
    "VariantResults",
    "load_compare",
    "variant_of",
    "variants",
    "variant_label",
]
