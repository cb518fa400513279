"""The contracts every registered component keeps, as checks in the spirit of
scikit-learn's `check_estimator`: tests/test_contracts.py runs them over every entry of the
trainable, dataset and strategy registries, so a newcomer that breaks one fails there with
its name in the test id and in the message.

Each check raises ContractError ("<component>: what is wrong") and returns nothing useful.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from hpo.spec import Study
from hpo.strategies import STRATEGIES
from hpo.strategies.plan import OVER_BUDGET
from tests.conftest import ListReporter
from trainables import DATASETS, FIT_METRICS, trainable_info
from trainables.data import DataBundle, Split, load_dataset


class ContractError(AssertionError):
    """A registered component breaks a contract; the message starts with its name."""


def require(condition: bool, component: str, message: str) -> None:
    if not condition:
        raise ContractError(f"{component}: {message}")


# ------------------------------------------------------------------- datasets
def check_dataset(name: str, options: Mapping[str, Any]) -> DataBundle:
    """Loads with the study's options into finite float32 inputs of the declared rank
    (images in [0, 1]), labels 0..k-1 in every split (finite float targets for a
    regression dataset), the same split for the same seed, and `classes` works."""
    info = DATASETS[name]
    fraction = 0.2 if info.splittable else 0.0
    data = load_dataset(name, fraction, fraction, 0, scale="unit", **options)
    require(
        len(data.input_shape) == info.input_rank,
        name,
        f"samples of shape {data.input_shape}, but the registry declares rank {info.input_rank}",
    )
    require(
        data.regression == (info.task == "regression"),
        name,
        f"the registry says {info.task}, the labels are {data.train.y.dtype}",
    )
    require(
        (data.train.t is not None) == info.head_targets,
        name,
        f"head_targets is {info.head_targets}, the splits say otherwise",
    )
    for part, split in (("train", data.train), ("val", data.val), ("test", data.test)):
        x = split.x
        require(x.dtype == torch.float32, name, f"{part} inputs are {x.dtype}, not float32")
        require(bool(torch.isfinite(x).all()), name, f"{part} inputs are not all finite")
        require(
            info.input_rank != 3 or (float(x.min()) >= 0.0 and float(x.max()) <= 1.0),
            name,
            f"{part} inputs span [{float(x.min()):g}, {float(x.max()):g}], images take [0, 1]",
        )
        (_check_targets if data.regression else _check_labels)(name, part, split, data)
    again = load_dataset(name, fraction, fraction, 0, scale="unit", **options)
    require(_same(data, again), name, "two loads with the same seed differ")
    if not info.splittable:
        return data
    other = load_dataset(name, 0.2, 0.2, 1, scale="unit", **options)
    require(not _same(data, other), name, "seeds 0 and 1 give the same split")
    if data.regression:
        return data
    kept = load_dataset(name, 0.2, 0.2, 0, scale="unit", classes=[1, 0], **options)
    total = sum(int((part.y <= 1).sum()) for part in (data.train, data.val, data.test))
    require(
        kept.num_classes == 2 and sum(kept.sizes().values()) == total,
        name,
        f"classes=[1, 0] kept {sum(kept.sizes().values())} samples of "
        f"{kept.num_classes} classes, expected {total} of 2",
    )
    return data


def _check_labels(name: str, part: str, split: Split, data: DataBundle) -> None:
    k, y = data.num_classes, split.y
    require(k >= 2, name, f"{k} classes: a classifier needs at least 2")
    require(
        not data.class_names or len(data.class_names) == k,
        name,
        f"{len(data.class_names)} class names for {k} classes",
    )
    require(y.dtype == torch.long, name, f"{part} labels are {y.dtype}, not int64")
    require(
        set(y.unique().tolist()) == set(range(k)),
        name,
        f"{part} split has labels {sorted(set(y.unique().tolist()))}, not all of 0..{k - 1}",
    )


def _check_targets(name: str, part: str, split: Split, data: DataBundle) -> None:
    y = split.y
    require(y.dtype == torch.float32, name, f"{part} targets are {y.dtype}, not float32")
    require(
        y.dim() == 2 and y.shape[1] == data.num_classes,
        name,
        f"{part} targets of shape {tuple(y.shape)}, expected N×{data.num_classes}",
    )
    require(bool(torch.isfinite(y).all()), name, f"{part} targets are not all finite")


def _same(a: DataBundle, b: DataBundle) -> bool:
    parts = ("train", "val", "test")
    return all(
        torch.equal(getattr(a, p).x, getattr(b, p).x)
        and torch.equal(getattr(a, p).y, getattr(b, p).y)
        for p in parts
    )


def small(data: DataBundle, samples: int = 64) -> DataBundle:
    """The first `samples` of every split: enough to train an epoch in a fraction of a second."""
    from dataclasses import replace

    def head(split: Split) -> Split:
        return split.take(slice(0, samples))

    return replace(data, train=head(data.train), val=head(data.val), test=head(data.test))


# ----------------------------------------------------------------- trainables
def check_trainable_registration(name: str) -> None:
    """Every categorical hyperparameter has a default among its allowed values, and the
    trainable declares the input ranks it takes."""
    info = trainable_info(name)
    for param, allowed in info.choices.items():
        require(param in info.defaults, name, f"choices name {param!r}, which has no default")
        require(
            info.defaults[param] in allowed,
            name,
            f"default {param}={info.defaults[param]!r} is not one of {list(allowed)}",
        )
    require(info.input_ranks, name, "declares no input_ranks (the data shapes it takes)")


def check_trainable_builds(name: str, data: DataBundle, config: Mapping[str, Any] = ()) -> None:
    """The model builds for the dataset's shapes and maps a batch to one finite logit per
    class (per target of a regression dataset; the first of a two-head model's outputs;
    for a trainable with its own runner, e.g. many nets batched, just finite outputs)."""
    from trainables.loop import build_model

    config = dict(config)
    model = build_model(name, config, data).eval()
    with torch.no_grad():
        logits = model(data.train.x[:4])
    logits = logits[0] if isinstance(logits, tuple) else logits
    expected = (min(4, len(data.train)), data.num_classes)
    require(
        trainable_info(name).runner is not None or tuple(logits.shape) == expected,
        name,
        f"{config or 'defaults'} on {data.name} {data.input_shape}: logits of shape "
        f"{tuple(logits.shape)}, expected {expected}",
    )
    require(bool(torch.isfinite(logits).all()), name, f"{config} gives non-finite logits")


def check_trainable_choices(name: str, data: DataBundle, config: Mapping[str, Any] = ()) -> None:
    """Every allowed value of every categorical hyperparameter builds and trains an epoch
    to a finite loss (what a study may search, the code must run)."""
    from trainables.loop import run

    tiny = small(data, 8)
    for param, allowed in trainable_info(name).choices.items():
        for value in allowed:
            values = {**config, param: value, "batch_size": 8}
            check_trainable_builds(name, data, values)
            reporter = ListReporter()
            run(name, values, tiny, reporter, max_epochs=1, threads=1)
            loss = reporter.rows[-1]["train_loss"]
            require(math.isfinite(loss), name, f"{param}={value!r}: loss {loss} after one epoch")


def check_trainable_epoch(
    name: str, data: DataBundle, config: Mapping[str, Any] = ()
) -> dict[str, Any]:
    """One epoch trains (through the one loop, or the trainable's runner) and reports
    every declared metric (finite), with a checkpoint of that epoch; returns the
    checkpoint state. Metrics a config asks for (FIT_METRICS) are checked with it on."""
    from trainables.loop import run

    reporter = ListReporter()
    config = {"seed": 0, **dict(config)}
    if set(FIT_METRICS) <= set(trainable_info(name).metrics):
        config["stop_at_fit"] = True
    run(name, config, data, reporter, max_epochs=1, threads=1)
    require(len(reporter.rows) == 1, name, f"{len(reporter.rows)} reports for one epoch")
    metrics, state = reporter.rows[0], reporter.states[0]
    missing = [m for m in trainable_info(name).metrics if m not in metrics]
    require(not missing, name, f"never reported the declared metrics {missing}")
    numbers = {m: metrics[m] for m in trainable_info(name).metrics}
    require(
        all(isinstance(v, (int, float)) and math.isfinite(v) for v in numbers.values()),
        name,
        f"non-finite metrics after one epoch: {numbers}",
    )
    require(state is not None and state.get("epoch") == 1, name, "no checkpoint of epoch 1")
    return state


def check_trainable_round_trip(
    name: str, data: DataBundle, state: Mapping[str, Any], config: Mapping[str, Any] = ()
) -> None:
    """A trained model saved with trainables.saved loads back bit for bit: the same
    tensors and the same outputs."""
    from trainables.loop import build_model
    from trainables.saved import load_model, save_model

    config = {"seed": 0, **dict(config)}
    model = build_model(name, config, data)
    model.load_state_dict(state["model"])
    model.eval()
    with tempfile.TemporaryDirectory() as folder:
        save_model(
            Path(folder),
            model,
            trainable=name,
            config=config,
            input_shape=data.input_shape,
            num_classes=data.num_classes,
            dataset={"name": data.name},
        )
        loaded = load_model(folder)
    saved, back = model.state_dict(), loaded.state_dict()
    require(saved.keys() == back.keys(), name, "loaded model has other parameters")
    differ = [k for k in saved if not torch.equal(saved[k], back[k])]
    require(not differ, name, f"tensors changed by save/load: {differ[:3]}")
    batch = data.test.x[:8]
    with torch.no_grad():
        same = _equal(model(batch), loaded(batch))
    require(same, name, "the loaded model's outputs differ from the saved model's")


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, tuple):
        return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    return torch.equal(a, b)


# ----------------------------------------------------------------- strategies
def check_strategy_plan(name: str, study: Study, seed: int = 0) -> None:
    """The plan is pure and reproducible, fits the run's epoch budget (or says in its
    notes that it does not), and is what the strategy hands to Ray Tune (with every
    searched and fixed hyperparameter)."""
    strategy = STRATEGIES[name]
    plan = strategy.plan(study, seed)
    require(plan == strategy.plan(study, seed), name, "two plans for the same seed differ")
    require(plan.num_samples >= 1 and plan.planned_trials >= 1, name, f"empty plan {plan}")
    if plan.planned_epochs is not None and OVER_BUDGET not in plan.notes:
        require(
            plan.planned_epochs <= study.budget.total_epochs,
            name,
            f"plans {plan.planned_epochs} epochs, the budget is {study.budget.total_epochs}",
        )
    tuner = strategy.tuner(study, seed)
    require(tuner.plan == plan, name, "Ray Tune is given another plan than hpo validate shows")
    # A conditional parameter is not in param_space: the searcher adds it where active.
    every_trial = [name for name, param in study.space.items() if not param.when]
    missing = [p for p in (*every_trial, *study.fixed) if p not in tuner.param_space]
    require(not missing, name, f"param_space lacks {missing}")
    changed = [k for k, v in study.fixed.items() if tuner.param_space[k] != v]
    require(not changed, name, f"fixed values changed in param_space: {changed}")


def curve_trainable(config: dict[str, Any], max_epochs: int) -> None:
    """A Ray Tune function trainable with no training: a deterministic learning curve of
    its config, checkpointed every epoch (so pausing schedulers can resume it)."""
    from ray import tune

    start, segment_start = 0, time.time()  # this (re)start of the trial
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            start = json.loads((Path(folder) / "epoch.json").read_text())["epoch"]
    quality = 0.9 - 0.1 * abs(math.log10(config["lr"]) + 2.0)
    quality += 0.05 if config["optimizer"] == "adam" else 0.0
    for epoch in range(start + 1, max_epochs + 1):
        value = quality * (1.0 - math.exp(-epoch / 2.0))
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "epoch.json").write_text(json.dumps({"epoch": epoch}))
            tune.report(
                {
                    "epoch": epoch,
                    "val_accuracy": value,
                    "report_time": time.time(),
                    "segment_start": segment_start,
                },
                checkpoint=tune.Checkpoint.from_directory(folder),
            )


def run_strategy(name: str, study: Study, seed: int, path: Path) -> list[tuple]:
    """Run the strategy for real (Ray Tune, the runner's Tuner) on `curve_trainable`;
    returns what happened, in order: (report time, config, epoch, value, segment start)
    per report, where a segment is one (re)start of a trial."""
    from ray import tune

    from hpo.experiment import build_tuner, drop_never_started
    from hpo.results import load_analysis, reported_rows

    trainable = tune.with_parameters(curve_trainable, max_epochs=study.budget.max_epochs)
    build_tuner(study, name, seed, path, trainable).fit()
    drop_never_started(path)
    analysis = load_analysis(path)
    happened = []
    for trial in analysis.trials:
        rows = reported_rows(trial, analysis)
        require(rows is not None and not rows.empty, name, f"trial {trial} never reported")
        config = tuple(sorted((k, trial.config.get(k)) for k in study.space))
        for row in rows.itertuples():
            happened.append(
                (row.report_time, config, row.epoch, row.val_accuracy, row.segment_start)
            )
    return sorted(happened)


def check_strategy_run(name: str, study: Study, folder: Path, seed: int = 0) -> None:
    """Run for real with one trial at a time: the run spends at most its epoch budget, no
    trial more than R epochs, and the saved Tune state lists only trials that ran; where
    the registry says the strategy is reproducible, a second run of the same seed tries
    the same configs for the same epochs with the same results (in any order)."""
    require(study.max_concurrent_trials == 1, name, "needs a study running one trial at a time")
    first = sorted(h[1:4] for h in run_strategy(name, study, seed, folder / "first"))
    if STRATEGIES[name].reproducible:
        second = sorted(h[1:4] for h in run_strategy(name, study, seed, folder / "second"))
        require(first == second, name, f"seed {seed} gave two histories:\n{first}\n{second}")
    epochs: dict[tuple, int] = {}
    for config, epoch, _ in first:
        epochs[config] = max(epochs.get(config, 0), epoch)
    spent, budget = sum(epochs.values()), study.budget
    require(spent <= budget.total_epochs, name, f"spent {spent} of {budget.total_epochs} epochs")
    plan = STRATEGIES[name].plan(study, seed)
    if plan.planned_epochs is not None:
        require(
            spent <= plan.planned_epochs, name, f"spent {spent} > planned {plan.planned_epochs}"
        )
    require(max(epochs.values()) <= budget.max_epochs, name, "a trial ran past max_epochs")


def check_strategy_cap(name: str, study: Study, folder: Path) -> None:
    """Never more than `max_concurrent_trials` trials training at once, where the cluster
    could run more: a trial runs from each (re)start to its last report after it."""
    happened = run_strategy(name, study, 0, folder)
    segments: dict[tuple, list[float]] = {}
    for report_time, config, *_, segment_start in happened:
        span = segments.setdefault((config, segment_start), [segment_start, report_time])
        span[1] = max(span[1], report_time)
    events = sorted(
        [(start, 1) for start, _ in segments.values()] + [(end, -1) for _, end in segments.values()]
    )
    running = most = 0
    for _, change in events:  # at equal times an end (-1) sorts before a start
        running += change
        most = max(most, running)
    cap = study.max_concurrent_trials
    require(most <= cap, name, f"{most} trials trained at once, the study allows {cap}")
