"""`hpo to-optuna`: a study's saved results as Optuna studies, for optuna-dashboard and
Optuna's own analysis (plots, importances) of trials that Ray Tune ran.

Every strategy × seed run becomes one Optuna study named `<strategy>/seed-<k>` (the run's
key in study.json), direction from the study's metric mode, in one storage: by default
the journal file `<results>/<study>/optuna.journal` (`optuna-dashboard <file>` opens
it), or any Optuna storage URL. A study of that name already in the storage is deleted
first, so running the command again replaces the runs' studies, never duplicates them.

Each Ray Tune trial becomes one Optuna trial, in the order they first reported:

- params: the trial's `config/<name>` values of the study's space, as the distributions
  of `hpo.space.optuna_distribution`; a conditional parameter with an empty cell (inactive
  under its `when:`) is absent, as in `hpo.results.best_config`. A value the space does
  not hold (a value a compared level overrides for the run, kept as the Optuna study's
  user attr `overrides`; any other, as the trial's user attr `config/<name>`) is not a param.
  PBT changes configs while trials run: the params are those in force at the value's epoch.
- intermediate values: the study metric at each epoch (step = epoch), NaN or inf as
  reported.
- value: the trial's best metric over its epochs by the study's mode, the earliest epoch
  on ties: what hpo ranks trials by (`hpo.results.best_row`).
- state, from trials.csv's status: finished → COMPLETE; early_stopped (a scheduler, or
  the run's epoch budget, ended it before max_epochs) → PRUNED, keeping its value as
  Optuna's own pruned trials keep one; diverged or errored → FAIL, without a value
  (Optuna allows none), as hpo's TPE searcher tells Optuna (`hpo.strategies.tpe_search`);
  running (its run was interrupted) → RUNNING, without a value. A finished trial with no
  finite metric is FAIL.

Optuna's best trial is the best COMPLETE one, so where hpo's selected trial-epoch (study.json's
`best`) belongs to a trial that was stopped early, the Optuna study's best value differs.
User attrs name the Ray Tune trial (`trial_id`), its `strategy`, `seed`, hpo `status`,
the `epochs` it reached, the `best_epoch` of its value and, where recorded, `proposed_by`.

The default journal is written whole or not at all: a copy of the existing file is
extended beside it and renamed over it once every study is written. A storage URL is the
user's database, written in place: a failure may leave some runs replaced, others not.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import shlex
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from hpo.records import run_key
from hpo.results import DIVERGED, EARLY_STOPPED, ERRORED, FINISHED, RUNNING, Results, load_results
from hpo.space import optuna_distribution, quantize
from hpo.spec import IntRange, Param, QRange, StudyError
from trainables import PROPOSED_BY

if TYPE_CHECKING:
    from optuna.storages import BaseStorage
    from optuna.trial import FrozenTrial

JOURNAL_FILE = "optuna.journal"
_STATES = {
    FINISHED: "COMPLETE",
    EARLY_STOPPED: "PRUNED",
    DIVERGED: "FAIL",
    ERRORED: "FAIL",
    RUNNING: "RUNNING",
}
_OUTSIDE = object()  # a config value the study's space does not hold


@dataclass
class ToOptunaResult:
    """Where the studies went, and how many trials each holds."""

    storage: str  # the journal file's path, or the storage URL as given
    studies: dict[str, int] = field(default_factory=dict)  # `<strategy>/seed-<k>` → trials


def to_optuna(results_dir: str | Path, storage: str | None = None) -> ToOptunaResult:
    """Write every run of the results folder as an Optuna study (see the module's doc).

    `storage`: an Optuna storage URL (e.g. sqlite:///optuna.db) or a journal file's path;
    None: `<results_dir>/optuna.journal`. StudyError (one line) for a folder that is not
    a results folder of `hpo run` or a storage that cannot be opened."""
    results = load_results(results_dir)
    target = storage or str(Path(results_dir) / JOURNAL_FILE)
    with _quiet_optuna(), _opened(target) as opened:
        studies = {run_key(s, k): _write_run(opened, results, s, k) for s, k in _runs(results)}
    return ToOptunaResult(target, studies)


# ------------------------------------------------------------------ storage
@contextmanager
def _opened(target: str) -> Iterator[BaseStorage]:
    if "://" in target:
        yield _database(target)
    else:
        with _staged_journal(Path(target)) as storage:
            yield storage


def _database(url: str) -> BaseStorage:
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return optuna.storages.RDBStorage(url)
    except (SQLAlchemyError, ValueError, ImportError) as error:
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        raise StudyError(f"storage {_shown(url)}: cannot open it ({reason})") from None


@contextmanager
def _staged_journal(path: Path) -> Iterator[BaseStorage]:
    """An Optuna journal that replaces `path` only once the block ends without an error.
    It starts as a copy of `path`: other studies there stay, and an optuna-dashboard
    reading `path` follows the appended changes (the log before them is unchanged)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if not path.parent.is_dir():
        raise StudyError(f"{path}: no such folder {path.parent} for the journal file")
    staged = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    if path.exists():
        _check_journal(path)
    try:
        if path.exists():
            shutil.copyfile(path, staged)
        yield JournalStorage(JournalFileBackend(str(staged)))
        os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)


def _check_journal(path: Path) -> None:
    """Refuse a file that is not an Optuna journal before appending to it: Optuna replays
    a journal lazily and takes a bad last line for one still being written."""
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            try:
                json.loads(line)["op_code"]
            except (ValueError, KeyError, TypeError):
                raise StudyError(
                    f"{path}: line {number} is not an Optuna journal record "
                    "(expected a journal file written by Optuna)"
                ) from None


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna logs every study it creates; the command prints its own summary."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


# ------------------------------------------------------------------ runs
def _runs(results: Results) -> list[tuple[str, int]]:
    """Every run study.json records, then any other that trials.csv has rows of."""
    recorded = [(run.strategy, run.seed) for run in results.record.runs.values()]
    reported = results.trials[["strategy", "seed"]].drop_duplicates()
    return list(dict.fromkeys(recorded + [(str(s), int(k)) for s, k in reported.to_numpy()]))


def _write_run(storage: BaseStorage, results: Results, strategy: str, seed: int) -> int:
    import optuna

    name = run_key(strategy, seed)
    if name in optuna.get_all_study_names(storage):
        optuna.delete_study(study_name=name, storage=storage)  # replace, never duplicate
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        direction="maximize" if results.mode == "max" else "minimize",
        load_if_exists=False,
    )
    run = results.record.run(strategy, seed)
    overrides = dict(run.overrides) if run is not None else {}
    _describe(study, results, strategy, seed, overrides)
    trials = results.trials
    frame = trials[(trials["strategy"].astype(str) == strategy) & (trials["seed"] == seed)]
    space = {n: p for n, p in results.study.space.items() if n not in overrides}
    made = [
        _trial(rows, space, results, strategy, seed)
        for _, rows in frame.groupby("trial_id", sort=False)  # in the order they reported
    ]
    study.add_trials(made)
    return len(made)


def _describe(
    study: Any, results: Results, strategy: str, seed: int, overrides: dict[str, Any]
) -> None:
    import warnings

    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings():  # the dashboard names the objective by it
        warnings.simplefilter("ignore", ExperimentalWarning)
        study.set_metric_names([results.metric])
    attrs = {
        "hpo_study": results.study.name,
        "strategy": strategy,
        "seed": seed,
        "metric": results.metric,
        "max_epochs": results.study.budget.max_epochs,
        "fixed": dict(results.study.fixed),
        "overrides": overrides,
    }
    for key, value in attrs.items():
        if value != {}:
            study.set_user_attr(key, value)


# ------------------------------------------------------------------ trials
def _trial(
    rows: pd.DataFrame, space: Mapping[str, Param], results: Results, strategy: str, seed: int
) -> FrozenTrial:
    from optuna.trial import TrialState, create_trial

    rows = rows.sort_values("epoch", kind="stable")
    metric = pd.to_numeric(rows[results.metric], errors="coerce").astype(float)
    finite = metric[metric.map(math.isfinite)]
    best = None if finite.empty else finite.idxmax() if results.mode == "max" else finite.idxmin()
    status, reached = str(rows["status"].iloc[0]), int(rows["epoch"].max())
    state = TrialState[  # a status this hpo does not know: judged by the epochs reached
        _STATES.get(status, "COMPLETE" if reached >= results.study.budget.max_epochs else "PRUNED")
    ]
    if state == TrialState.COMPLETE and best is None:
        state = TrialState.FAIL  # Optuna has no complete trial without a value
    keeps_value = best is not None and state in (TrialState.COMPLETE, TrialState.PRUNED)
    source = rows.loc[best] if best is not None else rows.iloc[-1]
    params, outside = _params(source, space)
    attrs = {"trial_id": str(rows["trial_id"].iloc[0]), "strategy": strategy, "seed": seed}
    attrs |= {"status": status, "epochs": reached, **outside}
    if best is not None:
        attrs["best_epoch"] = int(rows.at[best, "epoch"])
    if PROPOSED_BY in rows and pd.notna(rows[PROPOSED_BY].iloc[0]):
        attrs[PROPOSED_BY] = str(rows[PROPOSED_BY].iloc[0])
    return create_trial(
        state=state,
        value=float(metric[best]) if keeps_value else None,
        params=params,
        distributions={name: optuna_distribution(space[name]) for name in params},
        intermediate_values={int(e): float(v) for e, v in zip(rows["epoch"], metric, strict=True)},
        user_attrs=attrs,
    )


def _params(row: pd.Series, space: Mapping[str, Param]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A trials.csv row's values of the space as Optuna holds them, and those the space
    does not hold (by `config/<name>`)."""
    params: dict[str, Any] = {}
    outside: dict[str, Any] = {}
    for name, param in space.items():
        cell = _plain(row.get(f"config/{name}"))
        if pd.api.types.is_scalar(cell) and pd.isna(cell):
            continue  # inactive under its `when:`, or not searched in this run
        value = _optuna_value(param, cell)
        if value is _OUTSIDE:
            outside[f"config/{name}"] = cell
        else:
            params[name] = value
    return params, outside


def _optuna_value(param: Param, cell: Any) -> Any:
    """A trials.csv cell as `param`'s Optuna distribution holds it: the choice itself (CSV
    reads 32 as 32.0 where a column has empty cells, a text choice as text), an int for
    integer domains, a quantized value as the grid's short float; _OUTSIDE if none fits."""
    if param.choice is not None:
        return next((option for option in param.choice if _same(option, cell)), _OUTSIDE)
    number = _number(cell)
    if number is None or not param.contains(number):
        return _OUTSIDE
    bounds = param.bounds
    if isinstance(bounds, IntRange):
        return int(number)
    if isinstance(bounds, QRange):
        return quantize(number, bounds.q, bounds.low, bounds.high)
    return number


def _same(option: Any, cell: Any) -> bool:
    if isinstance(option, (int, float)) and not isinstance(option, bool):
        return _number(cell) == option
    return str(option) == str(cell)  # text, booleans ("True" or True) and other choices


def _number(cell: Any) -> float | None:
    try:
        return float(cell)
    except (TypeError, ValueError):
        return None


def _plain(value: Any) -> Any:
    """A pandas/numpy cell as a plain Python value (JSON-ready for Optuna's storages)."""
    return value.item() if hasattr(value, "item") else value


# ------------------------------------------------------------------ command
def _shown(storage: str) -> str:
    """The storage as printed: a URL's password hidden."""
    if "://" not in storage:
        return storage
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(storage).render_as_string(hide_password=True)
    except ArgumentError:
        return storage


def cmd_to_optuna(args: argparse.Namespace) -> int:
    """`hpo to-optuna`: one line per Optuna study written, then how to open them."""
    result = to_optuna(args.results_dir, storage=args.storage)
    for name, count in result.studies.items():
        print(f"{name}: {count} trials")
    print(f"open with: optuna-dashboard {shlex.quote(_shown(result.storage))}")
    return 0


def add_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "results_dir",
        help="a study's results folder (study.json, trials.csv), e.g. results/digits_cnn",
    )
    command.add_argument(
        "--storage",
        metavar="URL",
        help="an Optuna storage URL (e.g. sqlite:///optuna.db) or a journal file's path "
        f"(default: RESULTS_DIR/{JOURNAL_FILE}, which `optuna-dashboard FILE` opens); "
        "studies of the same names there are replaced",
    )


__all__ = ["JOURNAL_FILE", "ToOptunaResult", "add_arguments", "cmd_to_optuna", "to_optuna"]
