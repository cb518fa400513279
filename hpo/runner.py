"""Runs a study: every strategy × seed as one Ray Tune experiment, resumable, on disk."""

from __future__ import annotations

import logging
import os
import platform
import shutil
import socket
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from hpo import results as res
from hpo.spec import STRATEGY_NAMES, Study, StudyError, load_study, resolved, study_hash

PACKAGES = ("hpo", "ray", "torch", "torchvision", "optuna", "pandas", "numpy", "scikit-learn")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def quiet_ray() -> None:
    """One line per run is the progress report: silence Tune's tables and advisories."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # Trials that the budget ended before they started have no rows: not worth a warning.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# Ray turns 127.0.0.1 into this machine's outward address, and its servers then listen on
# every interface, unless multi-node support is off (ray_constants.ENABLE_RAY_CLUSTER).
SINGLE_HOST_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def init_ray(address: str | None = None) -> None:
    """Connect to `address` (an existing cluster) or start Ray locally on loopback only."""
    if not address:
        os.environ[SINGLE_HOST_ENV] = "0"  # read by Ray's own processes as they start
    import ray
    from ray._private import ray_constants

    from trainables import ALLOW_CUSTOM_ENV, custom_allowed

    quiet_ray()
    if ray.is_initialized():
        return
    if address:
        # Workers of an existing cluster do not inherit this process's environment.
        allow = {ALLOW_CUSTOM_ENV: "1"} if custom_allowed() else {}
        ray.init(
            address=address,
            log_to_driver=False,
            logging_level="WARNING",
            runtime_env={"env_vars": allow} if allow else None,
        )
    else:
        ray_constants.ENABLE_RAY_CLUSTER = False  # in case Ray was imported before the env
        ray.init(
            # "local": a new instance, even where `ray start` left a cluster on this
            # machine (ray.init() would join it, or hang on a dead one's address file)
            address="local",
            include_dashboard=False,
            log_to_driver=False,
            logging_level="WARNING",
            _node_ip_address="127.0.0.1",
        )


class RunInterrupted(Exception):
    """A run stopped by Ctrl-C: its state is saved and `hpo run` resumes it."""


def run_complete(experiment_dir: Path, total_epochs: int) -> bool:
    """Did `Tuner.fit` return because the run is over, or because of Ctrl-C?

    After Ctrl-C, Tune saves its state and returns normally, with unfinished trials still
    PENDING/PAUSED/RUNNING in the saved state. A run is over when its epoch budget is
    spent (Tune does not re-save trials that the final stop-all ended, so their saved
    status may be stale) or when every saved trial has ended.
    """
    if sum(res.epochs_on_disk(experiment_dir).values()) >= total_epochs:
        return True
    trials = res.load_analysis(experiment_dir).trials
    return all(t.status in ("TERMINATED", "ERROR") for t in trials)


class StudyRunner:
    """Owns one study's results folder; `run()` executes the selected strategy × seed runs."""

    def __init__(
        self,
        study_file: str | Path,
        results_root: str | Path = "results",
        strategies: Sequence[str] | None = None,
        seeds: Sequence[int] | None = None,
        echo: Callable[[str], None] = print,
        reuse_actors: bool = True,
    ):
        self.study_file = Path(study_file)
        self.study: Study = absolute_paths(load_study(self.study_file))
        self.strategies = list(strategies or self.study.strategies)
        self.seeds = list(self.study.seeds if seeds is None else seeds)
        for name in self.strategies:
            if name not in self.study.strategies:
                known = self.study.strategies
                raise StudyError(f"--strategies: {name!r} is not in the study's strategies {known}")
        self.directory = Path(results_root).resolve() / self.study.name
        self.echo = echo
        # One Ray actor per slot runs trial after trial (tests compare with False).
        self.reuse_actors = reuse_actors
        self.ran_any = False  # whether the last run() trained anything
        self._bundles: dict[int, Any] = {}

    # ----------------------------------------------------------------- public
    def run(self, address: str | None = None, fresh: bool = False) -> dict[str, Any]:
        # Missing weights or data files fail here, before anything is written or started.
        check_trainable_inputs(self.study)
        self._data(self.seeds[0])
        meta = self._prepare(fresh)
        pending = [(s, k) for s in self.strategies for k in self.seeds if not self._finished(s, k)]
        self.ran_any = bool(pending)
        if not pending:
            self.echo("every selected run finished earlier: nothing to do")
            return meta  # a finished study is left exactly as it was
        init_ray(address)
        check_shared_results(self.directory)
        meta["ended_at"] = None
        meta.setdefault("started_at", now_iso())
        meta["machine"] = machine_info()
        self._save_meta(meta)
        for strategy, seed in pending:
            key = f"{strategy}/seed-{seed}"
            try:
                meta["runs"][key] = self._run_one(strategy, seed)
            except (RunInterrupted, KeyboardInterrupt):
                meta["runs"][key] = res.read_json(
                    res.run_dir(self.directory, strategy, seed) / res.RUN_MARKER
                )
                self._save_meta(meta)
                self.write_trials_csv()
                raise KeyboardInterrupt from None
            except Exception as error:
                meta["runs"][key] = self._mark_failed(strategy, seed, error)
                self._save_meta(meta)
                raise
            self._save_meta(meta)
            self.write_trials_csv()
        meta["ended_at"] = now_iso()
        self._save_meta(meta)
        return meta

    def trials(self) -> pd.DataFrame:
        """trials.csv as saved (empty when no run has reported yet)."""
        path = self.directory / "trials.csv"
        return pd.read_csv(path) if path.exists() else pd.DataFrame()

    def write_trials_csv(self) -> pd.DataFrame:
        """Rebuild trials.csv from every run directory on disk."""
        frames = []
        for strategy in self.study.strategies:
            for seed in self.study.seeds:
                marker = res.read_json(res.run_dir(self.directory, strategy, seed) / res.RUN_MARKER)
                if marker is not None:
                    frames.append(self._run_frame(strategy, seed, marker))
        trials = (
            pd.concat([f for f in frames if not f.empty], ignore_index=True) if frames else None
        )
        if trials is not None:
            res.write_csv_atomic(self.directory / "trials.csv", trials)
        return trials if trials is not None else pd.DataFrame()

    # ---------------------------------------------------------------- helpers
    def _prepare(self, fresh: bool) -> dict[str, Any]:
        """Create the folder (writable check before any trial starts) and load study.json."""
        digest = study_hash(self.study_file)
        check_free_space(self.directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            probe = self.directory / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as error:
            raise StudyError(
                f"{self.directory}: results folder is not writable ({error})"
            ) from None
        meta = res.read_json(self.directory / "study.json")
        changed = meta is not None and meta.get("study_hash") != digest
        if changed and not fresh:
            raise StudyError(
                f"{self.directory}: holds results of a different version of {self.study_file}; "
                "use --fresh to start over or --results to write elsewhere"
            )
        if changed:  # --fresh on another version: its results cannot be compared with new ones
            for strategy in STRATEGY_NAMES:
                shutil.rmtree(self.directory / strategy, ignore_errors=True)
            meta = None
        meta = meta or {"runs": {}}
        if fresh:
            for strategy in self.strategies:
                for seed in self.seeds:
                    shutil.rmtree(res.run_dir(self.directory, strategy, seed), ignore_errors=True)
                    meta["runs"].pop(f"{strategy}/seed-{seed}", None)
        meta.update(
            study=resolved(self.study),
            study_file=str(self.study_file),
            study_hash=digest,
            versions=package_versions(),
        )
        return meta

    def _mark_failed(self, strategy: str, seed: int, error: Exception) -> dict[str, Any]:
        """The run stopped on an error (not a trial's: the run's own): say so on disk;
        `hpo run` resumes it from Tune's saved state once the cause is fixed."""
        path = res.run_dir(self.directory, strategy, seed) / res.RUN_MARKER
        marker = res.read_json(path) or {"strategy": strategy, "seed": seed}
        marker.update(status="failed", error=f"{type(error).__name__}: {error}"[:500])
        if path.parent.exists():
            res.write_json_atomic(path, marker)
        return marker

    def _finished(self, strategy: str, seed: int) -> bool:
        marker = res.read_json(res.run_dir(self.directory, strategy, seed) / res.RUN_MARKER)
        return bool(marker) and marker.get("status") == "finished"

    def _save_meta(self, meta: dict[str, Any]) -> None:
        res.write_json_atomic(self.directory / "study.json", meta)

    def _data(self, seed: int):
        from trainables import trainable_info
        from trainables.data import load_dataset

        split_seed = self.study.dataset.split_seed
        key = seed if split_seed is None else split_seed
        if key not in self._bundles:
            d, info = self.study.dataset, trainable_info(self.study.trainable)
            self._bundles[key] = load_dataset(
                d.name,
                d.val_fraction,
                d.test_fraction,
                key,
                scale=info.input_scale,
                **d.loader_options(),
            )
        return self._bundles[key]

    def _run_one(self, strategy: str, seed: int) -> dict[str, Any]:
        path = res.run_dir(self.directory, strategy, seed)
        marker = res.read_json(path / res.RUN_MARKER) or {}
        if marker.get("status") == "finished":
            self.echo(f"{strategy:>9} seed {seed}: finished earlier, skipped")
            return marker
        from ray import tune

        restoring = tune.Tuner.can_restore(str(path))
        if not restoring:
            shutil.rmtree(path, ignore_errors=True)
            marker = {
                "strategy": strategy,
                "seed": seed,
                "started": time.time(),
                "data_sizes": self._data(seed).sizes(),
            }
        marker.update(
            status="running",
            started_at=marker.get("started_at", now_iso()),
            driver_pid=os.getpid(),  # `hpo status` tells a killed driver from a live one
            driver_host=socket.gethostname(),
        )
        res.write_json_atomic(path / res.RUN_MARKER, marker)
        self.echo(f"{strategy:>9} seed {seed}: {'resuming' if restoring else 'running'} …")
        tuner = self._tuner(strategy, seed, path, restoring)
        began = marker["fit_started"] = time.time()
        grid = tuner.fit()
        marker["wall_s"] = marker.get("wall_s", 0.0) + time.time() - began
        if not run_complete(path, self.study.budget.total_epochs):
            # Tune caught Ctrl-C, saved its state and returned: resumable, not finished.
            marker["status"] = "interrupted"
            res.write_json_atomic(path / res.RUN_MARKER, marker)
            raise RunInterrupted(f"{strategy} seed {seed}")
        marker.update(
            status="finished",
            ended_at=now_iso(),
            errors=sum(1 for r in grid if r.error is not None),
        )
        marker.update(self._summarize(strategy, seed, path, marker))
        res.write_json_atomic(path / res.RUN_MARKER, marker)
        self.echo(self._run_line(marker))
        return marker

    def _tuner(self, strategy: str, seed: int, path: Path, restoring: bool):
        from ray import tune

        from hpo.strategies import STRATEGIES
        from hpo.strategies.budget import EpochBudget
        from trainables.tune_trial import run_trial

        study, budget = self.study, self.study.budget
        trainable = tune.with_resources(
            tune.with_parameters(
                run_trial,
                data=self._data(seed),
                trainable_name=study.trainable,
                max_epochs=budget.max_epochs,
                threads=max(1, int(study.resources.cpu)),
                gpu=study.resources.gpu,
            ),
            {"cpu": study.resources.cpu, "gpu": study.resources.gpu},
        )
        if restoring:
            return tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True)
        plan = STRATEGIES[strategy](study, seed)
        plan.param_space["seed"] = seed  # torch seeds of every trial in this run
        return tune.Tuner(
            trainable,
            param_space=plan.param_space,
            tune_config=tune.TuneConfig(
                metric=study.metric.name,
                mode=study.metric.mode,
                search_alg=plan.search_alg,
                scheduler=plan.scheduler,
                num_samples=plan.num_samples,
                max_concurrent_trials=plan.max_concurrent_trials,
                time_budget_s=budget.time_limit_s,
                reuse_actors=self.reuse_actors,
            ),
            run_config=tune.RunConfig(
                name=path.name,
                storage_path=str(path.parent),
                stop=EpochBudget(budget.max_epochs, budget.total_epochs, str(path)),
                checkpoint_config=tune.CheckpointConfig(
                    num_to_keep=1,
                    checkpoint_score_attribute=study.metric.name,
                    checkpoint_score_order=study.metric.mode,
                ),
                failure_config=tune.FailureConfig(max_failures=study.max_failures),
                callbacks=[_trial_dirs_callback()],
                verbose=0,
            ),
        )

    def _run_frame(self, strategy: str, seed: int, marker: dict[str, Any]) -> pd.DataFrame:
        return res.trial_frame(
            res.run_dir(self.directory, strategy, seed),
            strategy,
            seed,
            self.study.budget.max_epochs,
            run_started=float(marker["started"]),
            run_finished=marker.get("status") == "finished",
            config_keys=[*self.study.space, *self.study.fixed],
        )

    def _summarize(
        self, strategy: str, seed: int, path: Path, marker: dict[str, Any]
    ) -> dict[str, Any]:
        """Best trial by validation metric, then its checkpoint measured once on test."""
        metric, mode = self.study.metric.name, self.study.metric.mode
        frame = self._run_frame(strategy, seed, marker)
        summary: dict[str, Any] = {
            "trials": int(frame["trial_id"].nunique()) if not frame.empty else 0,
            "epochs": int(len(frame)),
            "statuses": (
                frame.groupby("trial_id")["status"].first().value_counts().to_dict()
                if not frame.empty
                else {}
            ),
            "best": None,
        }
        row = None if frame.empty else res.best_row(frame, metric, mode)
        if row is None:
            return summary
        config = {
            k.removeprefix("config/"): _plain(v) for k, v in row.items() if k.startswith("config/")
        }
        summary["best"] = {
            "trial_id": row["trial_id"],
            "epoch": int(row["epoch"]),
            "cum_epochs": int(row["cum_epochs"]),
            metric: float(row[metric]),
            "config": config,
            **self._test_metrics(path, row["trial_id"], seed),
        }
        return summary

    def _test_metrics(self, path: Path, trial_id: str, seed: int) -> dict[str, Any]:
        """Evaluate the selected trial's best checkpoint on the held-out test split."""
        from trainables import resolve, trainable_info
        from trainables.loop import evaluate_state
        from trainables.tune_trial import load_checkpoint_state

        analysis = res.load_analysis(path)
        trial = next(t for t in analysis.trials if t.trial_id == trial_id)
        checkpoint = analysis.get_best_checkpoint(
            trial, metric=self.study.metric.name, mode=self.study.metric.mode
        )
        if checkpoint is None:
            return {"test_accuracy": None, "test_loss": None, "checkpoint_epoch": None}
        with checkpoint.as_directory() as directory:
            state = load_checkpoint_state(directory)
        data = self._data(seed)
        measured = evaluate_state(self.study.trainable, trial.config, state, data)
        views = trainable_info(self.study.trainable).views
        if views:  # arrays the report shows for this run's selected trial
            arrays = resolve(views)(self.study.trainable, trial.config, state, data)
            res.write_npz_atomic(path / res.VIEWS_FILE, arrays)
        return {**measured, "checkpoint_epoch": int(state["epoch"])}

    def _run_line(self, marker: dict[str, Any]) -> str:
        best = marker.get("best") or {}
        metric = self.study.metric.name
        value = best.get(metric)
        test = best.get("test_accuracy")
        return (
            f"{marker['strategy']:>9} seed {marker['seed']}: {marker['trials']} trials, "
            f"{marker['epochs']} epochs, best {metric} "
            f"{'n/a' if value is None else f'{value:.4f}'}, test accuracy "
            f"{'n/a' if test is None else f'{test:.4f}'}, {marker['wall_s']:.0f} s"
        )


# Checkpoints and logs of a small study take tens of MiB; a nearly full disk fails before
# any trial starts instead of halfway (HPO_MIN_FREE_MB changes the threshold).
MIN_FREE_MB = 256


def check_free_space(directory: Path) -> None:
    existing = next(p for p in (directory, *directory.parents) if p.exists())
    if not existing.is_dir():
        raise StudyError(f"{directory}: results folder is not writable ({existing} is a file)")
    needed = float(os.environ.get("HPO_MIN_FREE_MB", MIN_FREE_MB))
    free = shutil.disk_usage(existing).free / 2**20
    if free < needed:
        raise StudyError(
            f"{directory}: only {free:.0f} MiB free on its disk, a study needs at least "
            f"{needed:.0f} MiB (free some space or pass --results on another disk)"
        )


def check_shared_results(directory: Path, timeout_s: float = 60.0) -> None:
    """On a multi-node cluster every node writes its trials' results under `directory`:
    check that each alive node sees a file written here (a shared file system)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2:
        return
    probe = directory / f".shared-probe-{os.getpid()}"
    probe.write_text("visible")
    sees = ray.remote(num_cpus=0)(os.path.exists)
    try:
        answers = [
            sees.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            ).remote(str(probe))
            for node in nodes
        ]
        seen = ray.get(answers, timeout=timeout_s)
        blind = [n["NodeManagerAddress"] for n, ok in zip(nodes, seen, strict=True) if not ok]
    finally:
        probe.unlink(missing_ok=True)
    if blind:
        raise StudyError(
            f"--results {directory.parent}: not visible from the cluster node(s) "
            f"{', '.join(sorted(set(blind)))}; on a multi-node cluster give a path that every "
            "node shares (e.g. NFS)"
        )


def absolute_paths(study: Study) -> Study:
    """File-path hyperparameters (e.g. pretrained weights) made absolute: trials run in
    their own folders, possibly on other nodes, and study.json should say which file."""
    from trainables import trainable_info

    keys = trainable_info(study.trainable).path_params

    def absolute(value: Any) -> Any:
        if isinstance(value, str) and Path(value).expanduser().exists():
            return str(Path(value).expanduser().resolve())
        return value

    fixed = {k: absolute(v) if k in keys else v for k, v in study.fixed.items()}
    space = {
        k: p.model_copy(update={"choice": [absolute(v) for v in p.choice]})
        if k in keys and p.choice
        else p
        for k, p in study.space.items()
    }
    return study.model_copy(update={"fixed": fixed, "space": space})


def check_trainable_inputs(study: Study) -> None:
    """The trainable's own check of the values a study gives it (e.g. weights files)."""
    from trainables import WeightsError, resolve, trainable_info

    check = trainable_info(study.trainable).check
    if not check:
        return
    values = {k: [v] for k, v in study.fixed.items()}
    values.update({k: list(p.choice) for k, p in study.space.items() if p.choice})
    try:
        resolve(check)(values)
    except WeightsError as error:
        raise StudyError(f"{study.name}: {error}") from None


def _trial_dirs_callback():
    from ray.tune import Callback

    class GiveEveryTrialADirectory(Callback):
        """Ray Tune builds the ResultGrid from every trial's directory, but a trial that a
        scheduler created and the budget stopper ended before it ever started has none,
        and `Tuner.fit` then fails (Ray 2.60). Give such trials their (empty) directory."""

        def on_experiment_end(self, trials, **info):
            for trial in trials:
                if not trial.relative_logdir:
                    trial.init_local_path()

    return GiveEveryTrialADirectory()


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"hostname": platform.node(), "cpus": os.cpu_count(), "gpus": 0}
    try:
        import ray

        if ray.is_initialized():
            resources = ray.cluster_resources()
            info.update(cluster_cpus=resources.get("CPU", 0), gpus=resources.get("GPU", 0))
    except Exception:  # noqa: BLE001 - machine facts are best effort
        pass
    return info


def format_leaderboard(meta: dict[str, Any], trials: pd.DataFrame) -> str:
    """The report's leaderboard (hpo.report.tables), as terminal text."""
    from hpo.report import tables

    metric, mode = meta["study"]["metric"]["name"], meta["study"]["metric"]["mode"]
    runs = tables.run_table(tables.runs_frame(meta), trials, metric, mode)
    board = tables.leaderboard(runs, mode)
    if board.empty:
        return "no finished runs yet"

    def pm(mean: float, std: float) -> str:
        if pd.isna(mean):
            return "n/a"
        return f"{mean:.4f} ± {0.0 if pd.isna(std) else std:.4f}"

    lines = [
        f"{'strategy':<10} {'seeds':>5}  {'best ' + metric:<20} {'test accuracy':<20}"
        f" {'rank':>5} {'trials':>7} {'epochs':>7} {'wall s':>7}"
    ]
    for row in board.itertuples():
        lines.append(
            f"{row.strategy:<10} {row.seeds:>5}  {pm(row.best_val_mean, row.best_val_std):<20}"
            f" {pm(row.test_mean, row.test_std):<20} {row.mean_rank:>5.2f}"
            f" {row.trials_per_run:>7.1f} {row.epochs_per_run:>7.0f} {row.wall_s_per_run:>7.0f}"
        )
    return "\n".join(lines)
