"""A user's own Ray Tune function trainable, run as it is.

`train(config)` calls `ray.tune.report(metrics, checkpoint=…)` once per epoch and may
resume from `ray.tune.get_checkpoint()`: the shape of Ray Tune's quick-start. hpo calls it
unchanged inside its own function trainable (`function_trial`), which
- hands it the trial's searched and fixed hyperparameters only (hpo's `seed` and
  `proposed_by` keys are taken out; Python's, NumPy's and torch's generators are seeded
  with the study seed instead, so a run is reproducible);
- checks every report on its way to Tune: each value a number, the study's metric there
  (a `ReportError` naming the metric and the trial otherwise: the trial errors, and the
  runner marks the run failed), a non-finite metric flagged `diverged` (the budget
  stopper ends the trial: a diverged trial is a status, never a score);
- adds the hp/ columns and the Ray node, as the one loop's reporter does.

Ray's `tune.report` goes through the trial's session object, so the checks wrap that
object's `report` for the duration of the call, whatever name the user imported.
"""

from __future__ import annotations

import inspect
import math
import numbers
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from trainables import PROPOSED_BY, hyperparameter_columns, resolve

# Config keys hpo adds to every trial and a user's function never asked for.
HPO_KEYS: tuple[str, ...] = ("seed", PROPOSED_BY)
EVALUATE = "evaluate"  # the optional test-measurement function beside `train` in its module


class ReportError(ValueError):
    """A function trainable's report that hpo cannot use (one line: the trial and metric)."""


def user_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config a user's function sees: the study's hyperparameters, nothing of hpo's."""
    return {key: value for key, value in config.items() if key not in HPO_KEYS}


def load_function(function: Callable[..., Any] | str) -> Callable[..., Any]:
    return resolve(function) if isinstance(function, str) else function


def evaluator_of(
    function: Callable[..., Any] | str, evaluate: Callable[..., Any] | None = None
) -> Callable[..., Any] | None:
    """`evaluate(config, checkpoint) -> dict` given with the function, else the one
    defined beside it in its module, else None (no test measurement)."""
    if evaluate is not None:
        return evaluate
    module = inspect.getmodule(load_function(function))
    found = getattr(module, EVALUATE, None)
    return found if callable(found) else None


def signature_problem(function: Callable[..., Any]) -> str | None:
    """Why `function` is not a Ray Tune function trainable `train(config)`, or None."""
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return "is not a Python function"
    required = [
        p
        for p in parameters
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(required) != 1:
        names = ", ".join(p.name for p in required) or "nothing"
        return (
            f"takes ({names}); a Ray Tune function trainable takes one argument, the config "
            "(a model builder (config, input_shape, num_classes) needs a dataset section)"
        )
    return None


def function_trial(config: dict[str, Any], function: Callable[..., Any] | str, metric: str) -> None:
    """hpo's function trainable around the user's `function` (a callable, or its
    "module:function" reference imported here, in the worker)."""
    import ray
    from ray import tune
    from ray.train._internal.session import get_session

    train = load_function(function)
    seed_everything(int(config.get("seed", 0)))
    session = get_session()
    extra = {
        **hyperparameter_columns(config),
        "node_id": ray.get_runtime_context().get_node_id(),
    }
    checks = ReportChecks(session.report, metric, tune.get_context().get_trial_id(), extra)
    session.report = checks  # the instance attribute shadows the method while `train` runs
    try:
        train(user_config(config))
    finally:
        del session.report
    if checks.reports == 0:
        raise ReportError(
            f"trial {checks.trial_id}: the function returned without reporting anything "
            f"(expected ray.tune.report({{{metric!r}: …}}) once per epoch)"
        )


class ReportChecks:
    """Stands in for the session's `report(metrics, checkpoint=None)`: checks, then adds
    hpo's columns and passes the result on."""

    def __init__(
        self, report: Callable[..., None], metric: str, trial_id: str, extra: Mapping[str, Any]
    ):
        """`extra`: the columns hpo adds to every result (hp/…, node_id)."""
        self._report, self.metric, self.trial_id = report, metric, trial_id
        self.extra = dict(extra)
        self.reports = 0

    def __call__(self, metrics: dict, checkpoint: Any = None) -> None:
        self.reports += 1
        for name, value in metrics.items():
            if not is_number(value):
                raise ReportError(
                    f"trial {self.trial_id}: metric {name!r} is {value!r} "
                    f"({type(value).__name__}), not a number"
                )
        if self.metric not in metrics:
            raise ReportError(
                f"trial {self.trial_id}: the study's metric {self.metric!r} is not in the "
                f"function's report (it reported {sorted(metrics)})"
            )
        diverged = not math.isfinite(float(metrics[self.metric]))
        # report_time: when the epoch ended, as the one loop says it (trials.csv's clock)
        extra = {**self.extra, "diverged": diverged, "report_time": time.time()}
        self._report({**metrics, **extra}, checkpoint=checkpoint)


def is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real)  # bool, int, float and NumPy's scalars


def seed_everything(seed: int) -> None:
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch
    except ImportError:  # a function trainable need not use torch
        return
    torch.manual_seed(seed)


def measure(
    evaluate: Callable[..., Any], config: Mapping[str, Any], checkpoint_dir: str | None
) -> dict[str, float | None]:
    """The user's `evaluate(config, checkpoint)` of one checkpoint folder (a
    `ray.tune.Checkpoint`, or None where the trial kept none), its keys prefixed `test_`."""
    from ray import tune

    checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
    measured = evaluate(user_config(config), checkpoint)
    if not isinstance(measured, Mapping):
        raise ReportError(
            f"evaluate returned {type(measured).__name__}; expected a dict of test metrics"
        )
    bad = [name for name, value in measured.items() if not is_number(value)]
    if bad:
        raise ReportError(f"evaluate: metric {bad[0]!r} is {measured[bad[0]]!r}, not a number")
    return {
        name if name.startswith("test_") else f"test_{name}": float(value)
        for name, value in measured.items()
    }
