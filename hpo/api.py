"""The Python API: the functions the `hpo` command line calls, for a notebook or a script.

    import hpo
    study = hpo.Study.from_dict({...}, trainable=train)   # or Study.from_yaml(path)
    results = hpo.run(study, strategies=["random", "optuna"], seeds=[0, 1])
    results.leaderboard()          # one row per strategy (pandas DataFrame)
    results.best_config            # the exported configuration (validation only)
    results.trials                 # trials.csv
    results.report()               # the HTML report's path
    results.export()               # best-<strategy>-seed<k>.yaml's path

Passing your function is your consent to run it (the CLI asks for --allow-custom).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hpo.results import Results, load_results
from hpo.spec import Study, StudyError


def run(
    study: Study | Mapping[str, Any] | str | Path,
    *,
    strategies: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    trainable: Callable[..., Any] | None = None,
    evaluate: Callable[..., Any] | None = None,
    results_dir: str | Path = "results",
    address: str | None = None,
    fresh: bool = False,
    allow_custom: bool = False,
    echo: Callable[[str], None] = print,
    parallel_runs: int | None = None,
    progress: str | None = None,
    mlflow: str | bool = False,
) -> Results | dict[str, Results]:
    """Run a study as `hpo run` does and return its results (a compared study: one
    Results per variant, by label). `trainable`/`evaluate`: your function trainable and
    its test measurement, as callables; `allow_custom`: import the "module:function" the
    study names (the CLI's --allow-custom); `parallel_runs`, `mlflow`: as the CLI's
    --parallel-runs and --mlflow; `progress`: "live", "plain" or "quiet" for hpo run's
    display (default: one `echo` line as each run starts and ends)."""
    if allow_custom:
        from trainables import ALLOW_CUSTOM_ENV

        os.environ[ALLOW_CUSTOM_ENV] = "1"
    study = as_study(study, trainable)
    trainable = trainable or study.trainable_function
    board = None
    if progress is not None:
        from hpo.progress import StudyProgress

        board = StudyProgress(progress)
    options = {"progress": board, "parallel_runs": parallel_runs, "mlflow": mlflow}
    with board or contextlib.nullcontext():
        if study.compare:
            from hpo.compare_run import CompareRunner

            runner = CompareRunner(
                study, results_dir, strategies, seeds, echo, True, trainable, evaluate, **options
            )
            runner.run(address=address, fresh=fresh)
            return {label: load_results(r.directory) for label, r in runner.runners.items()}
        from hpo.runner import StudyRunner

        runner = StudyRunner(
            study, results_dir, strategies, seeds, echo,
            function=trainable, evaluate=evaluate, **options,
        )  # fmt: skip
        runner.run(address=address, fresh=fresh)
    return load_results(runner.directory)


def as_study(
    study: Study | Mapping[str, Any] | str | Path, trainable: Callable[..., Any] | None = None
) -> Study:
    """A Study from a Study, plain data or a study file."""
    if isinstance(study, Study):
        if trainable is not None and study.runs_function:  # check the callable given now
            return Study.from_dict(study.model_dump(mode="python"), trainable)
        return study
    if isinstance(study, Mapping):
        return Study.from_dict(dict(study), trainable)
    if isinstance(study, (str, Path)):
        return Study.from_yaml(study, trainable)
    raise StudyError(f"study: expected a Study, a dict or a study file, got {type(study).__name__}")


__all__ = ["Results", "Study", "StudyError", "as_study", "load_results", "run"]
