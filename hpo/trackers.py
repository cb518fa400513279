"""Trackers that follow a run's trials as they train: TensorBoard event files in every
trial folder, and MLflow runs (optional: `hpo run --mlflow`, the `hpo[mlflow]` extra).

Ray Tune (2.60) adds its own TensorBoard logger to every Tuner unless
TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1, so each trial folder under
results/<study>/<strategy>/seed-<k>/ holds `events.out.tfevents.*` (scalars
`ray/tune/<metric>`, one point per epoch; hparams as the trial ends) and `tensorboard
--logdir results/<study>` shows every strategy and seed. hpo passes a subclass of that
logger instead (Tune then adds none), which ends the trials that the epoch budget's
stop-all stopped and keeps a restarted trial in its own event file (TensorBoardLogger).

Tune pickles the callbacks with the run (tuner.pkl) and `Tuner.restore` brings them
back: the classes here are found by name (`hpo.trackers.…`) when a run resumes.
"""

from __future__ import annotations

import numbers
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray.tune.logger import LoggerCallback, TBXLoggerCallback
from ray.tune.utils import flatten_dict

from hpo.spec import StudyError

if TYPE_CHECKING:
    from ray.tune import Callback
    from ray.tune.experiment import Trial

    from hpo.spec import Study

MLFLOW_DB = "mlflow.db"  # the default MLflow store, in the study's results folder
MLFLOW_ARTIFACTS = "mlartifacts"
NO_MLFLOW = "--mlflow: needs the mlflow package; install it with pip install 'hpo[mlflow]'"
_ENDED = ("TERMINATED", "ERROR")  # Tune's statuses of a trial that is over
_CREATING = threading.Lock()


def run_callbacks(
    study: Study, strategy: str, seed: int, results_dir: Path, mlflow: bool | str | None = None
) -> list[Callback]:
    """The tracker callbacks of one new strategy × seed run, for `build_tuner(callbacks=)`:
    TensorBoard always (as Tune would add it), MLflow when `mlflow` is True (the default
    store in `results_dir`, the study's results folder) or a tracking URI."""
    callbacks: list[Callback] = []
    if os.environ.get("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "0") != "1":
        callbacks.append(TensorBoardLogger())
    if mlflow:
        uri = None if mlflow is True else str(mlflow)
        callbacks.append(mlflow_callback(uri, results_dir, study.name, strategy, seed))
    return callbacks


def mlflow_callback(
    tracking_uri: str | None, results_dir: Path, study_name: str, strategy: str, seed: int
) -> MLflowLogger:
    """Logs every trial of one run as an MLflow run of the experiment `study_name`, tagged
    with its strategy and seed. `tracking_uri` None: a SQLite store in `results_dir`.

    Not a file store (./mlruns): MLflow 3.18's FileStore refuses to start unless
    MLFLOW_ALLOW_FILE_STORE=true ("maintenance mode") and MLflow's own default is now
    sqlite:///mlflow.db. Its SQLAlchemy and Alembic come with optuna, a dependency of hpo.
    """
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise StudyError(NO_MLFLOW) from None
    artifacts = None
    if tracking_uri is None:
        folder = Path(results_dir).resolve()
        tracking_uri = f"sqlite:///{folder / MLFLOW_DB}"
        artifacts = (folder / MLFLOW_ARTIFACTS).as_uri()  # else ./mlruns of the cwd
    tags = {"strategy": strategy, "seed": str(seed), "hpo_study": study_name}
    return MLflowLogger(tracking_uri, study_name, tags, artifact_location=artifacts)


class TensorBoardLogger(TBXLoggerCallback):
    """Ray Tune's TensorBoard logger, fixed for two cases hpo's runs meet:
    - a trial that restarts within its run (a PBT exploit, a scheduler's pause) keeps its
      event file: Ray's logger opens a new one, and tensorboardX names files by the
      second, so a restart within the same second overwrote the epochs before it;
    - when the epoch budget is spent, Tune's stop-all ends the running and paused trials
      without `on_trial_complete`: Ray's logger would leave their writers open, their
      hparams unwritten and up to 30 s of events unflushed when Tune's final sync copies
      the trial folders into the results. They are ended as the step that stopped them
      ends, before that sync; any still open as the run ends (Ctrl-C) are ended then.
    """

    def log_trial_start(self, trial: Trial) -> None:
        if trial not in self._trial_writer:
            super().log_trial_start(trial)

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        super().on_step_end(iteration, trials, **info)
        for trial in [t for t in self._trial_writer if t.status in _ENDED]:
            self.log_trial_end(trial, failed=trial.status == "ERROR")

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        super().on_experiment_end(trials, **info)
        for trial in list(self._trial_writer):
            self.log_trial_end(trial, failed=trial.status == "ERROR")


class MLflowLogger(LoggerCallback):
    """One MLflow run per Tune trial: named after the trial, the run's `tags` plus
    trial_name and trial_id, params = the trial's config, metrics = every number of every
    result (step = training_iteration) — the layout of Ray's MLflowLoggerCallback.

    Not Ray's class itself, which in hpo's runs (Ray 2.60, MLflow 3.18)
    - crashes PBT: an exploited trial restarts with a new config and Ray logs its params
      again, which MLflow refuses ("Changing param values is not allowed");
    - leaves the trials that Tune's stop-all ended RUNNING in MLflow, and starts a second
      MLflow run for each trial that resumes after Ctrl-C;
    - sets mlflow's process-wide tracking URI and reads it back at each call: runs in
      threads of one process, each with its own URI, would log into each other's store;
    - commits each metric on its own (~0.2 s per result on SQLite, in Tune's loop).
    Here each callback has its own MlflowClient, a result is one `log_batch`, and the
    trial → run ids are saved with Tune's state (get_state/set_state).
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment_name: str,
        tags: Mapping[str, str],
        artifact_location: str | None = None,
    ):
        self.tracking_uri, self.experiment_name = tracking_uri, experiment_name
        self.tags, self.artifact_location = dict(tags), artifact_location
        self._runs: dict[str, str] = {}  # trial id → MLflow run id
        self._open: dict[str, Trial] = {}  # trials whose MLflow run is RUNNING
        self._client: Any = None
        self._experiment_id: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None, "_open": {}}  # Tune pickles it

    def setup(self, *args: Any, **kwargs: Any) -> None:
        from mlflow.tracking import MlflowClient

        self._client = MlflowClient(self.tracking_uri)
        self._experiment_id = experiment_id(
            self._client, self.experiment_name, self.artifact_location
        )

    def get_state(self) -> dict[str, Any] | None:
        return {"runs": dict(self._runs)} if self._runs else None

    def set_state(self, state: dict[str, Any]) -> None:
        self._runs.update(state.get("runs", {}))  # a resumed trial goes on in its run

    def log_trial_start(self, trial: Trial) -> None:
        key = trial.trial_id
        if key in self._open:
            return  # a paused trial goes on (PBT, ASHA): its params stay its first config
        if key in self._runs:  # resumed after Ctrl-C: the run Tune's saved state names
            self._client.update_run(self._runs[key], status="RUNNING")
        else:
            tags = {**self.tags, "trial_name": str(trial), "trial_id": key}
            run = self._client.create_run(self._experiment_id, tags=tags, run_name=str(trial))
            self._runs[key] = run.info.run_id
            self._log(key, params=_params(trial.config))
        self._open[key] = trial

    def log_trial_result(self, iteration: int, trial: Trial, result: dict) -> None:
        if trial.trial_id not in self._open:
            self.log_trial_start(trial)
        step = result.get("timesteps_total") or result["training_iteration"]
        self._log(trial.trial_id, metrics=_metrics(result, step))

    def log_trial_end(self, trial: Trial, failed: bool = False) -> None:
        self._end(trial, "FAILED" if failed else "FINISHED")

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        # Trials that Tune's stop-all ended (the epoch budget spent): no on_trial_complete.
        for trial in list(self._open.values()):
            if trial.status in _ENDED:
                self._end(trial, "FAILED" if trial.status == "ERROR" else "FINISHED")

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        for trial in list(self._open.values()):  # Ctrl-C, or the run's own error
            self._end(trial, "KILLED")

    def _end(self, trial: Trial, status: str) -> None:
        if self._open.pop(trial.trial_id, None) is None:
            return
        run_id = self._runs[trial.trial_id]
        if status == "FINISHED" and not trial.last_result.get("training_iteration"):
            # Started as the budget ran out, never trained: hpo drops it from the results.
            self._client.delete_run(run_id)
        else:
            self._client.set_terminated(run_id, status=status)

    def _log(self, trial_id: str, **batch: Any) -> None:
        self._client.log_batch(self._runs[trial_id], **batch)


def experiment_id(client: Any, name: str, artifact_location: str | None = None) -> str:
    """The MLflow experiment `name`, created if it is new."""
    from mlflow.exceptions import MlflowException

    with _CREATING:  # runs that start at once in threads would each create it
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return client.create_experiment(name, artifact_location=artifact_location)
        except MlflowException:  # another process created it first
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id


def _params(config: Mapping[str, Any]) -> list[Any]:
    from mlflow.entities import Param

    return [Param(key, str(value)) for key, value in flatten_dict(dict(config)).items()]


def _metrics(result: Mapping[str, Any], step: int) -> list[Any]:
    """Every number of a result (config/… too: PBT's changes show there), as Ray logs."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    flat = flatten_dict(dict(result), delimiter="/")
    return [
        Metric(key, float(value), now, int(step))
        for key, value in flat.items()
        if isinstance(value, numbers.Real)
    ]
