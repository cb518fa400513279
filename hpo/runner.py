"""Runs a study: every strategy × seed as one Ray Tune experiment, resumable, on disk.

The lifecycle of a run lives here: plan what is left → `Tuner.fit` or `Tuner.restore` →
summarize its trials → measure the selected trial once on test. How Tune is asked to run
it is `hpo.experiment`; checks before anything starts are `hpo.preflight`; what is
written is `hpo.records` (study.json, hpo_run.json) and trials.csv.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from hpo import preflight
from hpo import results as res
from hpo.compare import Variant
from hpo.files import write_csv, write_npz
from hpo.provenance import machine_info, now_iso, package_versions
from hpo.records import (
    STUDY_FILE,
    RunRecord,
    StudyRecord,
    read_run_record,
    read_study_record,
    run_dir,
    run_key,
    write_run_record,
    write_study_record,
)
from hpo.spec import Study, StudyError, load_study, study_digest, study_hash
from hpo.strategies import STRATEGIES, decision, selected

if TYPE_CHECKING:
    from hpo.progress import StudyProgress


class RunInterrupted(Exception):
    """A run stopped by Ctrl-C: its state is saved and `hpo run` resumes it."""


class StudyRunner:
    """Owns one study's results folder; `run()` executes the selected strategy × seed runs."""

    def __init__(
        self,
        study_file: str | Path | Study | StudySource,
        results_root: str | Path = "results",
        strategies: Sequence[str] | None = None,
        seeds: Sequence[int] | None = None,
        echo: Callable[[str], None] = print,
        reuse_actors: bool = True,
        variant: Variant | None = None,
        overrides: Callable[[str, int], dict[str, Any]] | None = None,
        function: Callable[..., Any] | None = None,
        evaluate: Callable[..., Any] | None = None,
        progress: StudyProgress | None = None,
        parallel_runs: int | None = None,
        mlflow: str | bool = False,
    ):
        """`study_file`: a study file, or a Study built in Python (hpo.api);
        `variant`: one combination of a compared study's levels, run into its own
        folder (hpo.compare); `overrides(strategy, seed)`: config values that one run's
        trials take over the study's (a warm start's weights, a range test's bounds);
        `function`, `evaluate`: the callables of a function trainable given to the Python
        API (else its "module:function" reference is imported where trials run);
        `progress`: the live display that shows each run (else `echo` gets one line as a
        run starts and one as it ends); `parallel_runs`: runs at once (default: the
        study's); `mlflow`: log every trial to MLflow (True: a store in the results
        folder, or a tracking URI)."""
        self.source = StudySource.of(study_file)
        self.study_file = self.source.path
        parent = self.source.study
        self.study: Study = preflight.absolute_paths(variant.study if variant else parent)
        self.function, self.evaluate = function, evaluate
        self.strategies = selected(self.study, strategies)
        self.seeds = list(self.study.seeds if seeds is None else seeds)
        self.directory = Path(results_root).resolve() / self.study.name
        if variant is not None:
            self.directory = variant.directory(self.directory)
        self.variant = variant
        self.overrides = overrides or (lambda strategy, seed: {})
        self.echo, self.progress = echo, progress
        self.parallel_runs, self.mlflow = parallel_runs, mlflow
        self._parallel = 1  # runs that may go on at once right now
        self._active: set[str] = set()  # keys of the runs in Tuner.fit right now
        # One Ray actor per slot runs trial after trial (tests compare with False).
        self.reuse_actors = reuse_actors
        self.ran_any = False  # whether the last run() trained anything
        self._bundles: dict[int, Any] = {}

    # ----------------------------------------------------------------- public
    def run(self, address: str | None = None, fresh: bool = False) -> StudyRecord:
        # Missing weights or data files fail here, before anything is written or started.
        preflight.check_trainable_inputs(self.study)
        if not self.study.runs_function:
            self._data(self.seeds[0])
        record = self._prepare(fresh)
        pending = [(s, k) for s in self.strategies for k in self.seeds if not self._finished(s, k)]
        self.ran_any = bool(pending)
        if not pending:
            self.say("every selected run finished earlier: nothing to do")
            return record  # a finished study is left exactly as it was
        from hpo.ray_session import init_ray

        init_ray(address)
        preflight.check_shared_results(self.directory)
        record.ended_at = None
        record.started_at = record.started_at or now_iso()
        record.machine = machine_info()
        write_study_record(self.directory, record)
        parallel = min(self.parallel_runs or self.study.parallel_runs, len(pending))
        if parallel > 1:
            self._run_parallel(pending, record, parallel)
        else:
            for strategy, seed in pending:
                self._keep(record, strategy, seed, lambda s=strategy, k=seed: self._run_one(s, k))
        record.ended_at = now_iso()
        write_study_record(self.directory, record)
        return record

    def _keep(
        self, record: StudyRecord, strategy: str, seed: int, run: Callable[[], RunRecord]
    ) -> None:
        """Run one strategy × seed (`run`) and keep what it did in study.json and
        trials.csv, however it ended: finished, failed or interrupted."""
        from hpo.side_by_side import RunsStopped

        key = run_key(strategy, seed)
        try:
            record.runs[key] = run()
        except (RunInterrupted, RunsStopped, KeyboardInterrupt):
            done = read_run_record(run_dir(self.directory, strategy, seed))
            if done is not None:
                record.runs[key] = done
            write_study_record(self.directory, record)
            self.write_trials_csv()
            raise KeyboardInterrupt from None
        except Exception as error:
            record.runs[key] = self._mark_failed(strategy, seed, error)
            write_study_record(self.directory, record)
            try:  # the trials it finished stay in the results
                self.write_trials_csv()
            except Exception as unreadable:  # the run's own error is the one to raise
                self.say(f"trials.csv not rebuilt: {unreadable}", error=True)
            raise
        write_study_record(self.directory, record)
        self.write_trials_csv()

    def _run_parallel(
        self, pending: list[tuple[str, int]], record: StudyRecord, parallel: int
    ) -> None:
        """Up to `parallel` runs at once, each `Tuner.fit` in a thread of this process
        (Tune drives trials through Ray; the threads only wait on it). Finished runs are
        written to study.json and trials.csv by this thread, one at a time; Ctrl-C stops
        every run at its next step, resumable; the first failed run's error is raised
        once the others have ended."""
        from concurrent.futures import Future, ThreadPoolExecutor, as_completed, wait

        from hpo.side_by_side import STOP

        for seed in {k for _, k in pending}:  # load each split once, before the threads
            if not self.study.runs_function:
                self._data(seed)
        STOP.clear()
        self._parallel = parallel
        failures: list[BaseException] = []
        pool = ThreadPoolExecutor(parallel, thread_name_prefix="hpo-run")
        futures = {pool.submit(self._run_one, s, k): (s, k) for s, k in pending}
        kept: set[Future] = set()
        try:
            for future in as_completed(futures):
                kept.add(future)
                try:
                    self._keep(record, *futures[future], future.result)
                except KeyboardInterrupt:
                    raise
                except Exception as error:  # the other runs go on; raised at the end
                    failures.append(error)
        except KeyboardInterrupt:
            STOP.set()  # each run's Tune loop ends at its next step
            for future in futures:
                future.cancel()  # runs not started yet stay pending
            wait(futures)
            for future in set(futures) - kept:
                if not future.cancelled():
                    with contextlib.suppress(BaseException):  # each says what it saved
                        self._keep(record, *futures[future], future.result)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            self._parallel = 1
        if failures:
            raise failures[0]

    def trials(self) -> pd.DataFrame:
        """trials.csv as saved (empty when no run has reported yet)."""
        return res.read_trials(self.directory)

    def write_trials_csv(self) -> pd.DataFrame:
        """Rebuild trials.csv from every run directory on disk (but the runs still going
        on beside the one that ended: their rows come in when they end)."""
        frames = []
        for strategy in self.study.strategies:
            for seed in self.study.seeds:
                run = read_run_record(run_dir(self.directory, strategy, seed))
                if run is not None and run.key not in self._active:
                    frames.append(self._run_frame(run))
        frames = [f for f in frames if not f.empty]
        if not frames:
            return pd.DataFrame()
        trials = pd.concat(frames, ignore_index=True)
        write_csv(self.directory / res.TRIALS_FILE, trials)
        return trials

    # ---------------------------------------------------------------- helpers
    def _prepare(self, fresh: bool) -> StudyRecord:
        """Create the folder (writable check before any trial starts) and its record."""
        digest = self.source.digest
        preflight.check_free_space(self.directory)
        preflight.make_writable_folder(self.directory)
        previous = previous_record(self.directory, self.source.name, digest, fresh)
        if previous is None and (self.directory / STUDY_FILE).exists():
            # --fresh over another version's results: they cannot be compared with new ones
            for strategy in STRATEGIES:
                shutil.rmtree(self.directory / strategy, ignore_errors=True)
        runs = dict(previous.runs) if previous is not None else {}
        if fresh:
            for strategy in self.strategies:
                for seed in self.seeds:
                    shutil.rmtree(run_dir(self.directory, strategy, seed), ignore_errors=True)
                    runs.pop(run_key(strategy, seed), None)
        return StudyRecord(
            study=self.study,
            study_file=self.source.name,
            study_hash=digest,
            versions=package_versions(),
            machine=previous.machine if previous is not None else None,
            started_at=previous.started_at if previous is not None else None,
            ended_at=previous.ended_at if previous is not None else None,
            runs=runs,
            variant=self.variant.levels if self.variant is not None else None,
        )

    def _mark_failed(self, strategy: str, seed: int, error: Exception) -> RunRecord:
        """The run stopped on an error (not a trial's: the run's own): say so on disk;
        `hpo run` resumes it from Tune's saved state once the cause is fixed."""
        path = run_dir(self.directory, strategy, seed)
        run = read_run_record(path) or RunRecord(strategy=strategy, seed=seed, started=time.time())
        already = run.status == "failed"  # a failure _run_one ended itself
        run.status, run.error = "failed", f"{type(error).__name__}: {error}"[:500]
        write_run_record(path, run)
        if not already:
            self._ended(run, f"{strategy:>9} seed {seed}: failed: {run.error}", "failed")
        return run

    def _finished(self, strategy: str, seed: int) -> bool:
        run = read_run_record(run_dir(self.directory, strategy, seed))
        return run is not None and run.status == "finished"

    def _data(self, seed: int):
        split_seed = self.study.dataset.split_seed
        key = seed if split_seed is None else split_seed
        if key not in self._bundles:
            self._bundles[key] = study_data(self.study, key)
        return self._bundles[key]

    def _run_one(self, strategy: str, seed: int) -> RunRecord:
        from ray import tune

        from hpo.experiment import build_tuner, drop_never_started, run_complete
        from hpo.side_by_side import RunsStopped, start_gate

        path = run_dir(self.directory, strategy, seed)
        restoring = tune.Tuner.can_restore(str(path))
        run = read_run_record(path) if restoring else None
        if not restoring:
            shutil.rmtree(path, ignore_errors=True)  # a run that never got as far as Tune
        if run is None:
            run = RunRecord(
                strategy=strategy,
                seed=seed,
                started=time.time(),
                started_at=now_iso(),
                data_sizes={} if self.study.runs_function else self._data(seed).sizes(),
            )
        run.status, run.error = "running", None
        run.overrides = self.overrides(strategy, seed)
        run.driver_pid = os.getpid()  # `hpo status` tells a killed driver from a live one
        run.driver_host = socket.gethostname()
        run.parallel_runs = max(run.parallel_runs, self._parallel)
        write_run_record(path, run)
        self._started(run, path, restoring)
        tuner = build_tuner(
            self.study,
            strategy,
            seed,
            path,
            self._trainable(seed, run.overrides),
            restoring=restoring,
            reuse_actors=self.reuse_actors,
            callbacks=self._callbacks(strategy, seed),
        )
        decision.reset(str(path))
        began = run.fit_started = time.time()
        self._active.add(run.key)
        try:
            with start_gate(path.name):
                grid = tuner.fit()
        except RunsStopped:  # Ctrl-C while runs go on in threads: resumable
            self._stopped(run, path, time.time() - began)
            raise
        finally:
            self._active.discard(run.key)
        run.wall_s = (run.wall_s or 0.0) + time.time() - began
        run.busy_s = res.busy_seconds(path)
        # Tune's restored copies of the searcher and scheduler are not timed: unknown.
        run.decision_s = None if restoring else decision.seconds(str(path))
        if not run_complete(path, self.study.budget.total_epochs):
            # Tune caught Ctrl-C, saved its state and returned: resumable, not finished.
            self._stopped(run, path, 0.0)
            raise RunInterrupted(f"{strategy} seed {seed}")
        drop_never_started(path)
        run.status, run.ended_at = "finished", now_iso()
        run.errors = sum(1 for r in grid if r.error is not None)
        unusable = report_error(grid)
        if unusable:  # the user's function reports what no strategy can rank: fix it first
            run.status, run.error = "failed", unusable
            write_run_record(path, run)
            self._ended(run, f"{strategy:>9} seed {seed}: failed: {unusable}", "failed")
            raise StudyError(f"{self.study.name} {strategy} seed {seed}: {unusable}")
        self._summarize(run, path)
        write_run_record(path, run)
        self._ended(run, self._run_line(run), "finished")
        return run

    def _callbacks(self, strategy: str, seed: int) -> list[Any]:
        """Tune callbacks of a new run: its live progress, Ctrl-C from worker threads,
        TensorBoard, MLflow when asked. Tune pickles them with the run: a resumed run
        keeps its own."""
        from hpo.progress import ProgressCallback
        from hpo.side_by_side import StartedUp, StopWhenAsked
        from hpo.trackers import run_callbacks

        experiment = run_dir(self.directory, strategy, seed).name  # Tune's name for the run
        callbacks = [
            ProgressCallback(run_key(strategy, seed)),
            StopWhenAsked(),
            StartedUp(experiment),
        ]
        # TensorBoard with each trial's hparams (budget-stopped trials too); MLflow if asked
        callbacks += run_callbacks(self.study, strategy, seed, self.directory, self.mlflow)
        return callbacks

    def say(self, text: str, error: bool = False) -> None:
        if self.progress is not None:
            self.progress.message(text, error=error)
        else:
            self.echo(text)

    def _started(self, run: RunRecord, path: Path, restoring: bool) -> None:
        label = f"{run.strategy:>9} seed {run.seed}"
        if self.progress is None:
            self.echo(f"{label}: {'resuming' if restoring else 'running'} …")
            return
        budget, metric = self.study.budget, self.study.metric
        done = sum(res.epochs_on_disk(path).values()) if restoring else 0
        self.progress.run_started(
            run.key, label, budget.total_epochs, budget.max_epochs, metric.name, metric.mode,
            epochs_done=done, resumed=restoring,
        )  # fmt: skip

    def _ended(self, run: RunRecord, line: str, status: str) -> None:
        if self.progress is None:
            self.echo(line)
        else:
            self.progress.run_ended(run.key, line, status)

    def _stopped(self, run: RunRecord, path: Path, seconds: float) -> None:
        """The run was interrupted: resumable from what Tune saved."""
        run.wall_s = (run.wall_s or 0.0) + seconds
        run.status = "interrupted"
        write_run_record(path, run)
        self._ended(run, f"{run.strategy:>9} seed {run.seed}: interrupted", "interrupted")

    def _trainable(self, seed: int, overrides: dict[str, Any]):
        """The trial function with this run's data shipped once through Ray's object store."""
        from ray import tune

        study = self.study
        if study.runs_function:
            from trainables.user_function import function_trial

            return tune.with_parameters(
                function_trial, function=self.function or study.trainable, metric=study.metric.name
            )
        from trainables.tune_trial import run_trial

        return tune.with_parameters(
            run_trial,
            data=self._data(seed),
            trainable_name=study.trainable,
            max_epochs=study.budget.max_epochs,
            threads=max(1, int(study.resources.cpu)),
            gpu=study.resources.gpu,
            overrides=overrides,
        )

    def _run_frame(self, run: RunRecord) -> pd.DataFrame:
        return res.trial_frame(
            run_dir(self.directory, run.strategy, run.seed),
            run.strategy,
            run.seed,
            self.study.budget.max_epochs,
            run_started=run.started,
            run_finished=run.status == "finished",
            config_keys=[*self.study.space, *self.study.fixed, *run.overrides],
            any_metrics=self.study.runs_function,
        )

    def _summarize(self, run: RunRecord, path: Path) -> None:
        """Trials and epochs of the run, then its best trial by validation metric, measured
        once on test from its best checkpoint."""
        metric, mode = self.study.metric.name, self.study.metric.mode
        frame = self._run_frame(run)
        row = res.summarize_run(run, frame, metric, mode)
        if row is None:
            run.best = None
            return
        test, checkpoint_epoch = self._test_metrics(path, row["trial_id"], run)
        run.best = res.best_trial(row, metric, test, checkpoint_epoch)

    def _test_metrics(
        self, path: Path, trial_id: str, run: RunRecord
    ) -> tuple[dict[str, float | None], int | None]:
        """Evaluate the selected trial's best checkpoint on the held-out test split."""
        from trainables import resolve, trainable_info
        from trainables.loop import evaluate_state

        if self.study.runs_function:
            return self._function_test_metrics(path, trial_id)
        found = selected_state(path, trial_id, self.study.metric.name, self.study.metric.mode)
        if found is None:
            return {"test_accuracy": None, "test_loss": None}, None
        config, state = found
        config = {**config, **run.overrides}
        data = self._data(run.seed)
        measured = evaluate_state(self.study.trainable, config, state, data)
        views = trainable_info(self.study.trainable).views
        if views:  # arrays the report shows for this run's selected trial
            arrays = resolve(views)(self.study.trainable, config, state, data)
            if arrays:  # e.g. a cnn without batch norm has none
                write_npz(path / res.VIEWS_FILE, arrays)
        return measured, int(state["epoch"])

    def _function_test_metrics(
        self, path: Path, trial_id: str
    ) -> tuple[dict[str, float | None], int | None]:
        """The user's `evaluate(config, checkpoint)` of the selected trial's best
        checkpoint; nothing where the function trainable has no `evaluate`."""
        from trainables.user_function import evaluator_of, measure

        evaluate = evaluator_of(self.function or self.study.trainable, self.evaluate)
        if evaluate is None:
            return {}, None
        metric, mode = self.study.metric.name, self.study.metric.mode
        config, checkpoint, epoch = selected_checkpoint(path, trial_id, metric, mode)
        return measure(evaluate, config, checkpoint), epoch

    def _run_line(self, run: RunRecord) -> str:
        best = run.best
        value = None if best is None else best.value
        name = test_name(self.study)
        test = None if best is None else best.test.get(name)
        return (
            f"{run.strategy:>9} seed {run.seed}: {run.trials} trials, "
            f"{run.epochs} epochs, best {self.study.metric.name} "
            f"{'n/a' if value is None else f'{value:.4f}'}, {name.replace('_', ' ')} "
            f"{'n/a' if test is None else f'{test:.4f}'}, {run.wall_s:.0f} s"
        )


class StudySource:
    """Where a study came from: its file (hashed as bytes, as `hpo run` always has), or a
    Study built in Python (hashed as its resolved fields)."""

    def __init__(self, study: Study, path: Path | None, digest: str):
        self.study, self.path, self.digest = study, path, digest

    @classmethod
    def of(cls, source: str | Path | Study | StudySource) -> StudySource:
        if isinstance(source, StudySource):
            return source
        if isinstance(source, Study):
            return cls(source, None, study_digest(source))
        return cls(load_study(source), Path(source), study_hash(source))

    @property
    def name(self) -> str:
        """What study.json's `study_file` says: the file, or that it was built in Python."""
        return str(self.path) if self.path is not None else f"<python: {self.study.name}>"


def test_name(study: Study) -> str:
    """The test measurement the run line shows: the study metric's test counterpart for a
    function trainable (val_loss → test_loss), test accuracy for the others."""
    if study.runs_function:
        return "test_" + study.metric.name.removeprefix("val_")
    return "test_accuracy"


def report_error(grid) -> str | None:
    """The first trial error that says the user's function reported something unusable
    (trainables.user_function.ReportError), as its one line."""
    for result in grid:
        text = str(result.error or "")
        if "ReportError" in text:
            lines = [line for line in text.splitlines() if "ReportError:" in line]
            return (lines[-1] if lines else text).split("ReportError:", 1)[-1].strip()
    return None


def previous_record(
    directory: Path, study_file: str | Path, digest: str, fresh: bool
) -> StudyRecord | None:
    """The folder's record if it holds this very study file's results; None for a new
    folder and, with --fresh, for another version's (or an unreadable) record; an
    error for the latter without --fresh."""
    if not (directory / STUDY_FILE).exists():
        return None
    try:
        previous = read_study_record(directory)
    except StudyError as error:
        if fresh:
            return None
        raise StudyError(
            f"{error}; use --fresh to start over or --results to write elsewhere"
        ) from None
    if previous.study_hash == digest:
        return previous
    if fresh:
        return None
    raise StudyError(
        f"{directory}: holds results of a different version of {study_file}; "
        "use --fresh to start over or --results to write elsewhere"
    )


def selected_state(
    path: str | Path, trial_id: str, metric: str, mode: str
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """A run's trial config and the state of its best checkpoint by `metric` (None where it
    kept none)."""
    import logging

    from trainables.tune_trial import load_checkpoint_state

    analysis = res.load_analysis(path)
    trial = next(t for t in analysis.trials if t.trial_id == trial_id)
    # The trial's own result rows say which checkpoint folder each result wrote. Tune's
    # registry can lag them: it may save its final experiment state before registering
    # the last result's checkpoint (seen: no checkpoint at all for a one-epoch trial, and
    # the epoch-4 one picked for a trial whose best was its fifth and last).
    directory = best_checkpoint_on_disk(
        Path(trial.path), res.reported_rows(trial, analysis), metric, mode
    )
    if directory is not None:
        return dict(trial.config), load_checkpoint_state(directory)
    log = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = log.level
    log.setLevel(logging.CRITICAL)  # its "no checkpoints have been found": None below
    try:
        checkpoint = analysis.get_best_checkpoint(trial, metric=metric, mode=mode)
    finally:
        log.setLevel(level)
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return dict(trial.config), load_checkpoint_state(folder)


def selected_checkpoint(
    path: str | Path, trial_id: str, metric: str, mode: str
) -> tuple[dict[str, Any], str | None, int | None]:
    """A function trainable's trial config, its best checkpoint folder still on disk by
    `metric` (None where it kept none) and that checkpoint's epoch."""
    analysis = res.load_analysis(path)
    trial = next(t for t in analysis.trials if t.trial_id == trial_id)
    rows = res.reported_rows(trial, analysis)
    directory = best_checkpoint_on_disk(Path(trial.path), rows, metric, mode)
    if directory is None:
        return dict(trial.config), None, None
    row = rows[rows["checkpoint_dir_name"] == directory.name].iloc[-1]
    return dict(trial.config), str(directory), int(row["training_iteration"])


def best_checkpoint_on_disk(
    trial_dir: Path, rows: pd.DataFrame | None, metric: str, mode: str
) -> Path | None:
    """The checkpoint folder still on disk whose result has the best `metric` (the one
    Tune keeps when it keeps one, scored by the metric)."""
    if rows is None or "checkpoint_dir_name" not in rows or metric not in rows:
        return None
    saved = rows.dropna(subset=["checkpoint_dir_name", metric])
    saved = saved[[(trial_dir / name).is_dir() for name in saved["checkpoint_dir_name"]]]
    if saved.empty:
        return None
    best = saved.sort_values(metric, ascending=mode == "min", kind="stable").iloc[0]
    return trial_dir / str(best["checkpoint_dir_name"])


def study_data(study: Study, split_seed: int):
    """The study's dataset, split with `split_seed`, scaled as its trainable expects."""
    from trainables import trainable_info
    from trainables.data import load_dataset

    d = study.dataset
    return load_dataset(
        d.name,
        d.val_fraction,
        d.test_fraction,
        split_seed,
        scale=trainable_info(study.trainable).input_scale,
        **d.loader_options(),
    )
