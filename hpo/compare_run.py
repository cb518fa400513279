"""Runs a compared study: each variant (combination of levels) as an ordinary study.

Variants run in `hpo.compare.variants` order, so one that starts from another variant's
runs (a warm start from its selected model, or the learning-rate bounds of its range
test) finds them finished. Each variant is resumable on its own, exactly as a study is.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from hpo import preflight
from hpo.compare import VARIANTS_DIR, Variant, variant_of, variants
from hpo.files import write_bytes
from hpo.provenance import now_iso, package_versions
from hpo.records import (
    StudyRecord,
    read_run_record,
    run_dir,
    write_study_record,
)
from hpo.results import read_trials
from hpo.runner import StudyRunner, StudySource, previous_record, selected_state
from hpo.spec import StudyError

WARM_START_DIR = "warm_start"  # in a variant's folder: the weights each of its runs starts from


class CompareRunner:
    """`run()` runs every variant of a compared study (`compare:`) into
    `<results>/<study>/variants/<slug>/`; study.json at the top names the compared study."""

    def __init__(
        self,
        study_file: str | Path,
        results_root: str | Path = "results",
        strategies: Sequence[str] | None = None,
        seeds: Sequence[int] | None = None,
        echo: Callable[[str], None] = print,
        reuse_actors: bool = True,
        function: Callable[..., Any] | None = None,
        evaluate: Callable[..., Any] | None = None,
        **options: Any,
    ):
        """As StudyRunner's arguments; `study_file` may be a Study built in Python;
        `options`: StudyRunner's progress, parallel_runs and mlflow, for every variant
        (variants run one after another: a level may warm-start from another's runs)."""
        self.source = StudySource.of(study_file)
        self.study_file, self.study = self.source.path, self.source.study
        self.directory = Path(results_root).resolve() / self.study.name
        self.echo = echo
        self.variants = variants(self.study)
        self.runners = {
            v.label: StudyRunner(
                self.source,
                results_root,
                strategies,
                seeds,
                echo,
                reuse_actors,
                variant=v,
                overrides=self._overrides(v),
                function=function,
                evaluate=evaluate,
                **options,
            )
            for v in self.variants
        }
        shared: dict[int, Any] = {}  # every variant trains on the same splits: load once
        for runner in self.runners.values():
            runner._bundles = shared
        self.ran_any = False

    def run(self, address: str | None = None, fresh: bool = False) -> StudyRecord:
        record = self._prepare(fresh)
        for variant in self.variants:
            runner = self.runners[variant.label]
            runner.say(f"== {variant.label}")
            runner.run(address=address, fresh=fresh)
            self.ran_any = self.ran_any or runner.ran_any
        record.ended_at = now_iso()
        write_study_record(self.directory, record)
        return record

    def trials(self) -> pd.DataFrame:
        """Every variant's trials.csv rows, with its label in `variant`."""
        frames = [
            runner.trials().assign(variant=label)
            for label, runner in self.runners.items()
            if not runner.trials().empty
        ]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    # ---------------------------------------------------------------- helpers
    def _prepare(self, fresh: bool) -> StudyRecord:
        """The top study.json; results of another version of the file are an error
        (without --fresh) or removed (with it), as for an ordinary study."""
        digest = self.source.digest
        preflight.check_free_space(self.directory)
        preflight.make_writable_folder(self.directory)
        previous = previous_record(self.directory, self.source.name, digest, fresh)
        if previous is None:  # new, or another version's results removed with --fresh
            shutil.rmtree(self.directory / VARIANTS_DIR, ignore_errors=True)
        record = StudyRecord(
            study=self.study,
            study_file=self.source.name,
            study_hash=digest,
            versions=package_versions(),
            started_at=previous.started_at if previous is not None else now_iso(),
        )
        write_study_record(self.directory, record)
        return record

    def _overrides(self, variant: Variant) -> Callable[[str, int], dict[str, Any]]:
        def overrides(strategy: str, seed: int) -> dict[str, Any]:
            values: dict[str, Any] = {}
            if "warm_start" in variant.sources:
                values["init_from"] = str(self._warm_start(variant, strategy, seed))
            if "lr_from" in variant.sources:
                values.update(self._lr_bounds(variant, strategy, seed))
            return values

        return overrides

    def _source(self, variant: Variant, link: str, strategy: str, seed: int) -> tuple[Variant, Any]:
        source = variant_of(self.study, variant.sources[link])
        folder = run_dir(source.directory(self.directory), strategy, seed)
        run = read_run_record(folder)
        if run is None or run.status != "finished" or run.best is None:
            raise StudyError(
                f"compare: {variant.label} ({link}) starts from {source.label}'s {strategy} "
                f"seed {seed} run, which has not finished with a selected trial"
            )
        return source, run

    def _warm_start(self, variant: Variant, strategy: str, seed: int) -> Path:
        """The source run's selected model (its best checkpoint), saved in this variant's
        folder as a state dict that `init_from` loads."""
        import torch

        source, run = self._source(variant, "warm_start", strategy, seed)
        folder = run_dir(source.directory(self.directory), strategy, seed)
        found = selected_state(
            folder, run.best.trial_id, self.study.metric.name, self.study.metric.mode
        )
        if found is None:
            raise StudyError(f"compare: {source.label}'s {strategy} seed {seed}: no checkpoint")
        buffer = io.BytesIO()
        torch.save(found[1]["model"], buffer)
        target = variant.directory(self.directory) / WARM_START_DIR / f"{strategy}-seed-{seed}.pt"
        return write_bytes(target, buffer.getvalue())

    def _lr_bounds(self, variant: Variant, strategy: str, seed: int) -> dict[str, float]:
        """lr (the peak: lr_max) and lr_min that the source run's range test found."""
        from hpo.lr_range import pick_lr_bounds, range_curve

        source, _ = self._source(variant, "lr_from", strategy, seed)
        trials = read_trials(source.directory(self.directory))
        mine = trials[(trials["strategy"] == strategy) & (trials["seed"] == seed)]
        curve = range_curve(mine)
        try:
            bounds = pick_lr_bounds(curve["lr"].to_numpy(), curve["loss"].to_numpy())
        except ValueError as error:
            raise StudyError(
                f"compare: {variant.label} (lr_from {source.label}): {error}"
            ) from None
        return {"lr": float(bounds.lr_max), "lr_min": float(bounds.lr_min)}
