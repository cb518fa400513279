"""One strategy × seed run as a Ray Tune experiment: the Tuner, and Tune's saved state.

The runner decides what runs and records it; this module knows how Ray Tune is asked to
run it (trainable with resources, strategy plan, equal-epoch stopper, checkpoints,
failures) and the two workarounds its saved state needs.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hpo import results as res
from hpo.spec import Study

log = logging.getLogger(__name__)


def build_tuner(
    study: Study,
    strategy: str,
    seed: int,
    path: Path,
    trainable: Callable[..., Any],
    *,
    restoring: bool = False,
    reuse_actors: bool = True,
    callbacks: Sequence[Any] = (),
):
    """A `tune.Tuner` for the run in `path` (or `Tuner.restore` of it): `trainable` is a
    function trainable taking (config), given the study's resources per trial;
    `callbacks`: more Tune callbacks (live progress, trackers) beside hpo's own."""
    from ray import tune

    from hpo.strategies import STRATEGIES
    from hpo.strategies.budget import EpochBudget
    from hpo.strategies.decision import timed

    budget = study.budget
    resourced = tune.with_resources(
        trainable, {"cpu": study.resources.cpu, "gpu": study.resources.gpu}
    )
    # Each run's trainable under a name of its own: Tune looks trials' trainables up by
    # name in one registry per cluster, and runs side by side (--parallel-runs) must not
    # train with each other's data.
    name = f"{getattr(trainable, '__name__', 'trial')}-{strategy}-seed{seed}"
    if restoring:  # Tune keeps the run's RunConfig (callbacks included) and trainable name
        return _restore(path, resourced, name)
    trainable = register(resourced, name)
    plan = STRATEGIES[strategy].tuner(study, seed)
    # Driver seconds spent deciding: the runner reads decision.seconds(str(path)).
    search_alg, scheduler = timed(plan.search_alg, str(path)), timed(plan.scheduler, str(path))
    plan.param_space["seed"] = seed  # torch seeds of every trial in this run
    return tune.Tuner(
        trainable,
        param_space=plan.param_space,
        tune_config=tune.TuneConfig(
            metric=study.metric.name,
            mode=study.metric.mode,
            search_alg=search_alg,
            scheduler=scheduler,
            num_samples=plan.plan.num_samples,
            max_concurrent_trials=plan.max_concurrent_trials,
            time_budget_s=budget.time_limit_s,
            reuse_actors=reuse_actors,
        ),
        run_config=tune.RunConfig(
            name=path.name,
            storage_path=str(path.parent),
            stop=EpochBudget(budget.max_epochs, budget.total_epochs, str(path)),
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=plan.keep_checkpoints,
                checkpoint_score_attribute=study.metric.name,
                checkpoint_score_order=study.metric.mode,
            ),
            failure_config=tune.FailureConfig(max_failures=study.max_failures),
            callbacks=[_trial_dirs_callback(), *callbacks],
            verbose=0,
        ),
    )


_REGISTRY_LOCK = threading.Lock()


def register(trainable: Callable[..., Any], name: str) -> str:
    """`trainable` registered with Tune as `name`, for a Tuner to run by name. Tune's
    registry is not thread-safe (two runs registering at once: "dictionary changed size
    during iteration"), so runs register here, one at a time."""
    from ray import tune

    with _REGISTRY_LOCK:
        tune.register_trainable(name, trainable, warn=False)
    return name


def _restore(path: Path, trainable: Callable[..., Any], name: str):
    """`Tuner.restore` of the run in `path` with `trainable` under the name the run was
    started with: `name`, or the plain function name of runs started before runs had
    names of their own (Tune says which it expects)."""
    from ray import tune

    try:
        return tune.Tuner.restore(
            str(path), trainable=register(trainable, name), resume_unfinished=True
        )
    except ValueError as error:
        expected = re.search(r"but expected '([^']+)'", str(error))
        if expected is None or expected.group(1) == name:
            raise
        named = register(trainable, expected.group(1))
        return tune.Tuner.restore(str(path), trainable=named, resume_unfinished=True)


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


STATE_GLOB = "experiment_state-*.json"


def drop_never_started(experiment_dir: Path) -> int:
    """Remove the trials that never started from a finished run's saved Tune state, and
    their empty folders; returns how many.

    Ray's HyperBandScheduler fills whole brackets up front, and with a plain variant
    generator Tune creates up to 200 pending trials at once; the epoch budget ends the
    run long before most of them start, and Tune saves them as TERMINATED, so
    ExperimentAnalysis listed ~245 trials of which ~52 ever ran (and `Tuner.restore`
    would start those saved as PENDING). No Tune API removes a trial, so the saved
    state (Ray 2.60: {"trial_data": [[trial_json, metadata_json], …]}) is filtered
    here; a file in any other shape is left as it is.
    """
    dropped: dict[str, str] = {}  # trial id → its folder ("" where it has none)
    for state_file in sorted(experiment_dir.glob(STATE_GLOB)):
        dropped.update(_filter_state_file(state_file, experiment_dir))
    for folder in filter(None, dropped.values()):
        if (experiment_dir / folder).is_dir():
            (experiment_dir / folder).rmdir()  # empty: _never_started checked
    return len(dropped)


def _never_started(trial: dict[str, Any], metadata: dict[str, Any], experiment_dir: Path) -> bool:
    """No result and no file in its folder (if it has one at all), and not errored. Its
    saved status may be TERMINATED or a stale PENDING: Tune does not re-save the trials
    that the final stop-all ended."""
    if trial["status"] == "ERROR" or metadata.get("last_result"):
        return False
    folder = experiment_dir / (trial.get("relative_logdir") or "")
    return not trial.get("relative_logdir") or not folder.exists() or not any(folder.iterdir())


def _filter_state_file(state_file: Path, experiment_dir: Path) -> dict[str, str]:
    """Rewrite `state_file` without the trials that never started; returns their ids and
    folders."""
    from hpo.files import write_text

    try:
        state = json.loads(state_file.read_text())
        kept, dropped = [], {}
        for entry in state["trial_data"]:
            trial, metadata = json.loads(entry[0]), json.loads(entry[1])
            if _never_started(trial, metadata, experiment_dir):
                dropped[trial["trial_id"]] = trial.get("relative_logdir") or ""
            else:
                kept.append(entry)
    except (OSError, ValueError, KeyError, IndexError, TypeError) as error:
        log.warning("%s: left as it is (not the Tune state this hpo knows: %s)", state_file, error)
        return {}
    if len(kept) < len(state["trial_data"]):
        write_text(state_file, json.dumps({**state, "trial_data": kept}))
    return dropped
