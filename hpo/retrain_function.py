"""`hpo retrain` of a user's function trainable: the exported config trained once more per
seed, as a one-trial-per-seed Ray Tune run (the function calls `tune.report`, so it runs
in Tune), each seed's last checkpoint measured by the module's `evaluate(config,
checkpoint)`. The function loads its own data, so there is no train+validation merge:
it trains on what it always trains on.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hpo.files import staged_folder
from hpo.records import ExportRecord
from hpo.retrain import mean_std, provenance
from hpo.spec import StudyError


def retrain_function(
    document: ExportRecord,
    export_file: str | Path,
    epochs: int,
    seeds: Sequence[int],
    out: Path,
    address: str | None = None,
    echo: Callable[[str], None] = print,
    function: Callable[..., Any] | None = None,
    evaluate: Callable[..., Any] | None = None,
) -> Path:
    """Train every seed for `epochs` reports, measure each on test, write metrics.json,
    curves.csv and each seed's last checkpoint into `out` (replaced whole)."""
    from hpo.spec import function_problem
    from trainables.user_function import evaluator_of

    train = function or document.trainable
    problem = function_problem(document.trainable, function)
    if problem:
        raise StudyError(f"{export_file}: trainable: {problem}")
    evaluate = evaluator_of(train, evaluate)
    if evaluate is None:
        raise StudyError(
            f"{export_file}: trainable {document.trainable} defines no evaluate(config, "
            "checkpoint) beside it: hpo retrain has nothing to measure on test data"
        )
    echo(
        f"retraining {document.strategy} seed {document.seed} config of the function "
        f"trainable: {len(seeds)} seeds × {epochs} epochs"
    )
    with tempfile.TemporaryDirectory(prefix="hpo-retrain-") as storage:
        grid = _fit(document, train, epochs, seeds, Path(storage), address)
        outcomes = sorted(
            (_outcome(result, evaluate, echo) for result in grid),
            key=lambda outcome: list(seeds).index(outcome["seed"]),
        )
        return _write(out, document, outcomes, epochs, export_file)


def _fit(document: ExportRecord, train: Any, epochs: int, seeds: Sequence[int], storage, address):
    from ray import tune

    from hpo.ray_session import init_ray
    from trainables.user_function import function_trial

    init_ray(address)
    resources = document.resources
    trainable = tune.with_resources(
        tune.with_parameters(function_trial, function=train, metric=document.validation.metric),
        {"cpu": resources.cpu, "gpu": resources.gpu},
    )
    tuner = tune.Tuner(
        trainable,
        param_space={**document.config, "seed": tune.grid_search(list(seeds))},
        run_config=tune.RunConfig(
            name="retrain",
            storage_path=str(storage),
            stop={"training_iteration": epochs},
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),  # the last one
            verbose=0,
        ),
    )
    return tuner.fit()


def _outcome(result, evaluate: Callable[..., Any], echo: Callable[[str], None]) -> dict[str, Any]:
    from hpo.results import metric_columns
    from trainables.user_function import measure

    seed = int(result.config["seed"])
    rows = result.metrics_dataframe
    curve = [] if rows is None else rows[metric_columns(rows.columns, any_metrics=True)]
    outcome: dict[str, Any] = {
        "seed": seed,
        "epochs": 0 if rows is None else len(rows),
        "curve": [] if rows is None else curve.to_dict("records"),
        "checkpoint": result.checkpoint.path if result.checkpoint else None,
        "test": {},
    }
    if result.error is not None:
        outcome["status"] = "errored"
    elif rows is not None and bool(rows.get("diverged", False).any()):
        outcome["status"] = "diverged"  # no score for a diverged model
    else:
        outcome["status"] = "finished"
        outcome["test"] = measure(evaluate, result.config, outcome["checkpoint"])
    measured = ", ".join(f"{k} {v:.4f}" for k, v in outcome["test"].items()) or "not measured"
    echo(f"  seed {seed}: {outcome['status']}, {measured} ({outcome['epochs']} epochs)")
    return outcome


def _write(
    out: Path,
    document: ExportRecord,
    outcomes: list[dict[str, Any]],
    epochs: int,
    export_file: str | Path,
) -> Path:
    import pandas as pd

    finished = [o for o in outcomes if o["status"] == "finished"]
    names = list(dict.fromkeys(name for o in finished for name in o["test"]))
    with staged_folder(out) as staging:
        for outcome in outcomes:
            if outcome["checkpoint"]:
                shutil.copytree(outcome["checkpoint"], staging / f"seed-{outcome['seed']}")
        metrics = {
            **provenance(document, export_file),
            "config": document.config,
            "trained_on": "the function trainable's own training data",
            "epochs": epochs,
            "seeds": [
                {k: v for k, v in o.items() if k not in ("curve", "checkpoint")} for o in outcomes
            ],
            "test": {name: mean_std([o["test"][name] for o in finished]) for name in names},
            "study_test": document.test.metrics,
        }
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        curves = [{"seed": o["seed"], **row} for o in outcomes for row in o["curve"]]
        pd.DataFrame(curves).to_csv(staging / "curves.csv", index=False)
    return out
