"""hpo.trackers: TensorBoard event files and MLflow runs of every trial.

The fast tests drive the callbacks through Tune's callback hooks with stand-in trials;
the slow ones run the quadratic study (random, then PBT: an exploit restarts a trial with
a new config) through `build_tuner`, as the runner does, and read back what a user opens:
each trial folder's event files, and the MLflow store.
"""

from __future__ import annotations

import copy
import json
import pickle
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import ray.cloudpickle

from hpo.records import run_dir
from hpo.spec import Study, StudyError
from hpo.trackers import (
    MLFLOW_DB,
    MLflowLogger,
    TensorBoardLogger,
    mlflow_callback,
    run_callbacks,
)
from tests.quadratic import STUDY, train

SPACE = ("x", "k", "y", "kind")  # the hyperparameters of every quadratic trial
STRATEGIES = ("random", "pbt")


@dataclass(eq=False)  # hashed by identity, as Tune's Trial
class StandIn:
    """The parts of a Tune Trial that the trackers read."""

    trial_id: str
    config: dict[str, Any]
    status: str = "RUNNING"
    evaluated_params: dict[str, Any] = field(default_factory=dict)
    last_result: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"train_{self.trial_id}"


def result(epoch: int, loss: float) -> dict[str, Any]:
    return {"loss": loss, "training_iteration": epoch, "config": {"x": 0.5}, "node": "n1"}


def started(logger: MLflowLogger, *trials: StandIn) -> MLflowLogger:
    logger.setup()
    for trial in trials:
        logger.on_trial_start(iteration=0, trials=list(trials), trial=trial)
    return logger


def report(logger: MLflowLogger, trial: StandIn, *losses: float, first: int = 1) -> None:
    for epoch, loss in enumerate(losses, start=first):
        trial.last_result = result(epoch, loss)
        logger.on_trial_result(
            iteration=epoch, trials=[trial], trial=trial, result=trial.last_result
        )


def runs_of(uri: str, experiment: str) -> dict[str, Any]:
    """The MLflow runs of `experiment`, by trial id."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id]) if found else []
    return {run.data.tags["trial_id"]: run for run in runs}


def history(uri: str, run: Any, metric: str = "loss") -> list[tuple[int, float]]:
    from mlflow.tracking import MlflowClient

    points = MlflowClient(uri).get_metric_history(run.info.run_id, metric)
    return sorted((point.step, point.value) for point in points)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One SQLite MLflow store for the fast tests (each creates its own experiment)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / MLFLOW_DB}"


# ------------------------------------------------------------------------------- fast
def test_the_default_mlflow_store_is_sqlite_in_the_study_folder(tmp_path):
    logger = mlflow_callback(None, tmp_path, "quadratic", "random", 3)
    assert logger.tracking_uri == f"sqlite:///{tmp_path.resolve()}/{MLFLOW_DB}"
    assert logger.artifact_location == (tmp_path.resolve() / "mlartifacts").as_uri()
    assert logger.experiment_name == "quadratic"
    assert logger.tags == {"strategy": "random", "seed": "3", "hpo_study": "quadratic"}
    given = mlflow_callback("http://mlflow:5000", tmp_path, "quadratic", "random", 3)
    assert (given.tracking_uri, given.artifact_location) == ("http://mlflow:5000", None)


def test_mlflow_missing_is_a_study_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError
    with pytest.raises(StudyError, match=r"pip install 'hpo\[mlflow\]'"):
        mlflow_callback(None, tmp_path, "quadratic", "random", 0)


def test_run_callbacks(monkeypatch, tmp_path):
    study = Study.from_dict(copy.deepcopy(STUDY), trainable=train)
    assert [type(c) for c in run_callbacks(study, "random", 0, tmp_path)] == [TensorBoardLogger]
    both = run_callbacks(study, "random", 0, tmp_path, mlflow=True)
    assert [type(c) for c in both] == [TensorBoardLogger, MLflowLogger]
    assert both[1].tracking_uri.endswith(f"{tmp_path.resolve()}/{MLFLOW_DB}")
    given = run_callbacks(study, "random", 0, tmp_path, mlflow="sqlite:////elsewhere.db")
    assert given[1].tracking_uri == "sqlite:////elsewhere.db"
    # Ray Tune's switch for its automatic loggers switches hpo's TensorBoard logger off too
    monkeypatch.setenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    assert run_callbacks(study, "random", 0, tmp_path) == []


def test_callbacks_pickle_before_and_after_they_ran(store, tmp_path):
    """Tune pickles the callbacks with the run (tuner.pkl) and unpickles them to resume."""
    study = Study.from_dict(copy.deepcopy(STUDY), trainable=train)
    callbacks = run_callbacks(study, "random", 0, tmp_path, mlflow=store)
    for dumps, loads in ((pickle.dumps, pickle.loads), (ray.cloudpickle.dumps, pickle.loads)):
        again = loads(dumps(callbacks))
        assert [type(c) for c in again] == [TensorBoardLogger, MLflowLogger]
        assert again[1].tags == callbacks[1].tags
    logger, trial = callbacks[1], StandIn("a", {"x": 0.1})
    logger.experiment_name = "pickled"
    report(started(logger, trial), trial, 1.0)
    again = pickle.loads(pickle.dumps(logger))  # without its client and the live trials
    assert again._client is None and again._open == {}
    assert again._runs == logger._runs


def test_mlflow_logger_ends_every_trial_and_survives_pbt(store):
    a, b = StandIn("a", {"x": 0.1, "kind": "plain"}), StandIn("b", {"x": 0.9, "kind": "plain"})
    late = StandIn("late", {"x": 0.5, "kind": "plain"})  # started as the budget ran out
    logger = started(MLflowLogger(store, "lifecycle", {"strategy": "pbt", "seed": "0"}), a, b, late)
    report(logger, a, 3.0)
    report(logger, b, 2.0)
    a.config = {"x": 0.7, "kind": "plain"}  # PBT exploit: `a` restarts with b's perturbed config
    logger.on_trial_start(iteration=2, trials=[a, b], trial=a)
    report(logger, a, 1.5, first=2)
    logger.on_trial_complete(iteration=3, trials=[a, b], trial=a)
    b.status = late.status = "TERMINATED"  # the epoch budget's stop-all: no on_trial_complete
    logger.on_step_end(iteration=3, trials=[a, b, late])
    logger.on_experiment_end(trials=[a, b, late])

    runs = runs_of(store, "lifecycle")  # `late` never trained: gone, as from the results
    assert sorted(runs) == ["a", "b"]
    assert {run.info.status for run in runs.values()} == {"FINISHED"}
    assert runs["a"].data.params == {"x": "0.1", "kind": "plain"}  # its first config
    assert history(store, runs["a"]) == [(1, 3.0), (2, 1.5)]
    assert history(store, runs["b"]) == [(1, 2.0)]
    assert "config/x" in runs["a"].data.metrics and "node" not in runs["a"].data.metrics
    tags = runs["b"].data.tags
    assert (tags["strategy"], tags["seed"], tags["trial_name"]) == ("pbt", "0", "train_b")


def test_a_resumed_trial_goes_on_in_its_mlflow_run(store):
    fresh = MLflowLogger(store, "resumed", {"strategy": "random", "seed": "0"})
    pickled = pickle.dumps(fresh)  # tuner.pkl: written as the run starts
    trial = StandIn("t", {"x": 0.2})
    report(started(fresh, trial), trial, 4.0)
    state = fresh.get_state()  # Tune's saved state of the callbacks
    fresh.on_experiment_end(trials=[trial])  # Ctrl-C
    assert runs_of(store, "resumed")["t"].info.status == "KILLED"

    resumed = pickle.loads(pickled)  # Tuner.restore: tuner.pkl, then the saved state
    resumed.set_state(state)
    again = StandIn("t", {"x": 0.2})  # Tune rebuilds its Trial objects
    report(started(resumed, again), again, 3.0, first=2)
    assert runs_of(store, "resumed")["t"].info.status == "RUNNING"
    resumed.on_trial_complete(iteration=2, trials=[again], trial=again)
    runs = runs_of(store, "resumed")
    assert list(runs) == ["t"] and runs["t"].info.status == "FINISHED"
    assert history(store, runs["t"]) == [(1, 4.0), (2, 3.0)]


def test_runs_in_threads_keep_to_their_own_store(tmp_path):
    """Runs side by side in one process: one experiment created once per store, each
    logger in its own store (mlflow's global tracking URI is never set)."""
    import mlflow

    before = mlflow.get_tracking_uri()
    uris = [f"sqlite:///{tmp_path / name}" for name in ("one.db", "two.db")]
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def run(uri: str, trial_id: str) -> None:
        try:
            logger = MLflowLogger(uri, "side-by-side", {"strategy": trial_id, "seed": "0"})
            trial = StandIn(trial_id, {"x": 0.3})
            start.wait()
            report(started(logger, trial), trial, *range(5, 0, -1))
            logger.on_trial_complete(iteration=5, trials=[trial], trial=trial)
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [
        threading.Thread(target=run, args=(uri, f"{n}{k}"))
        for n, uri in enumerate(uris)
        for k in "ab"
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for n, uri in enumerate(uris):
        runs = runs_of(uri, "side-by-side")
        assert sorted(runs) == [f"{n}a", f"{n}b"]
        assert all(len(history(uri, run)) == 5 for run in runs.values())
    assert mlflow.get_tracking_uri() == before


# ------------------------------------------------------------------------------- slow
@pytest.fixture(scope="module")
def tracked_study(ray_session, tmp_path_factory) -> Path:
    """The quadratic study's folder after one run each of STRATEGIES (3 trials of 2
    epochs), with hpo's trackers and MLflow's default store."""
    from ray import tune

    from hpo.experiment import build_tuner
    from trainables.user_function import function_trial

    spec = copy.deepcopy(STUDY)
    spec["budget"] = {**spec["budget"], "max_epochs": 2, "total_epochs": 6}
    study = Study.from_dict(spec, trainable=train)
    folder = tmp_path_factory.mktemp("tracked") / study.name
    for strategy in STRATEGIES:  # as StudyRunner._run_one builds a new run
        trainable = tune.with_parameters(function_trial, function=train, metric="loss")
        callbacks = run_callbacks(study, strategy, 0, folder, mlflow=True)
        path = run_dir(folder, strategy, 0)
        build_tuner(study, strategy, 0, path, trainable, callbacks=callbacks).fit()
    return folder


def trial_epochs(folder: Path, strategy: str) -> dict[str, int]:
    """Epochs per trial id, as trials.csv lists them (one row per epoch)."""
    from hpo import results as res

    frame = res.trial_frame(
        run_dir(folder, strategy, 0), strategy, 0, 2, 0.0, True, [], any_metrics=True
    )
    return frame.groupby("trial_id").size().to_dict()


def trial_folders(folder: Path, strategy: str) -> dict[str, Path]:
    """The trial folders of a run that reported, by trial id."""
    found = {}
    for results in run_dir(folder, strategy, 0).glob("*/result.json"):
        lines = results.read_text().splitlines()
        if lines:
            found[json.loads(lines[0])["trial_id"]] = results.parent
    return found


@pytest.mark.slow
def test_tensorboard_has_every_epoch_and_the_hparams_of_every_trial(tracked_study):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    for strategy in STRATEGIES:
        epochs, folders = (
            trial_epochs(tracked_study, strategy),
            trial_folders(tracked_study, strategy),
        )
        assert len(epochs) == 3 and sorted(folders) == sorted(epochs)
        for trial_id, trial_folder in folders.items():
            events = EventAccumulator(str(trial_folder))
            events.Reload()
            assert len(events.Scalars("ray/tune/loss")) == epochs[trial_id], (strategy, trial_id)
            content = events.PluginTagToContent(metadata.PLUGIN_NAME)
            start = content[metadata.SESSION_START_INFO_TAG]
            hparams = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info
            assert set(SPACE) <= set(hparams.hparams), (strategy, trial_id)
            assert metadata.SESSION_END_INFO_TAG in content
        # One event file per trial: Tune added no TensorBoard logger beside hpo's, and a
        # PBT trial that restarts with a new config goes on in its own file.
        assert all(len(list(f.glob("events.out.tfevents.*"))) == 1 for f in folders.values())
    # `tensorboard --logdir results/<study>` finds every strategy's trials
    logdir = EventMultiplexer().AddRunsFromDirectory(str(tracked_study))
    runs = {Path(run).parts[0] for run in logdir.Runs()}
    assert runs == set(STRATEGIES)


@pytest.mark.slow
def test_mlflow_has_one_run_per_trial_with_its_epochs(tracked_study):
    uri = f"sqlite:///{tracked_study}/{MLFLOW_DB}"
    runs = runs_of(uri, "quadratic")  # one experiment: the study, every strategy's runs
    for strategy in STRATEGIES:
        epochs = trial_epochs(tracked_study, strategy)
        mine = {key: run for key, run in runs.items() if run.data.tags["strategy"] == strategy}
        assert sorted(mine) == sorted(epochs)
        for trial_id, run in mine.items():
            assert run.info.status == "FINISHED", (strategy, trial_id)
            assert len(history(uri, run)) == epochs[trial_id], (strategy, trial_id)
            assert set(SPACE) <= set(run.data.params)
            tags = run.data.tags
            assert (tags["seed"], tags["hpo_study"]) == ("0", "quadratic")
    assert len(runs) == 2 * 3
