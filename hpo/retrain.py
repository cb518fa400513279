"""Retrain an exported config and measure it once on the held-out test set (`hpo retrain`),
and re-measure a saved model (`hpo predict`).

Each seed trains through the same loop as a study trial, as a Ray task with a trial's
resources, so a retrain runs on a cluster exactly like a study does.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hpo.files import staged_folder
from hpo.records import ExportRecord, read_export
from hpo.spec import StudyError


def load_export(path: str | Path) -> ExportRecord:
    """Read an `hpo export` file whose trainable this process may run (a custom one only
    with --allow-custom); StudyError names what is wrong."""
    from trainables import CustomTrainableError, trainable_info

    document = read_export(path)
    try:
        trainable_info(document.trainable)
    except KeyError:
        raise StudyError(f"{path}: trainable: unknown trainable {document.trainable!r}") from None
    except CustomTrainableError as error:
        raise StudyError(f"{path}: trainable: {error}") from None
    return document


def apply_overrides(document: ExportRecord, overrides: dict[str, Any]) -> ExportRecord:
    """The export with some hyperparameters replaced; names are checked against the
    trainable's (`hpo retrain --set NAME=VALUE`)."""
    from trainables import trainable_info

    info = trainable_info(document.trainable, function=document.dataset is None)
    known = info.defaults
    for name in overrides:
        if name not in known and not info.function:  # a function's names are its own
            raise StudyError(
                f"--set {name}: trainable {document.trainable!r} has no hyperparameter "
                f"{name!r}; expected one of {sorted(known)}"
            )
    if not overrides:
        return document
    return document.model_copy(update={"config": {**document.config, **overrides}})


def training_bundle(data, train_only: bool):
    """Train+validation merged (the default: more data for the final model), or train only."""
    import torch

    from trainables.data import Split

    if train_only:
        return data
    merged = Split(torch.cat([data.train.x, data.val.x]), torch.cat([data.train.y, data.val.y]))
    return dataclasses.replace(data, train=merged)


class KeepingReporter:
    """Keeps every epoch's metrics and the state to evaluate: the last one, or (train-only
    mode) the one with the best validation metric — early stopping by checkpoint."""

    def __init__(self, metric: str | None, mode: str):
        self.metric, self.mode = metric, mode
        self.rows: list[dict[str, Any]] = []
        self.state: dict | None = None
        self.selected_epoch = 0
        self._best = -math.inf

    def restore(self) -> None:
        return None

    def report(self, metrics: dict[str, Any], state: dict | None) -> None:
        self.rows.append({k: v for k, v in metrics.items() if k != "report_time"})
        if state is None:
            return
        # A copy on the CPU: state_dict() tensors share storage with the live model, which
        # later epochs change (and a GPU copy would pin device memory).
        state = {
            "model": {k: v.detach().to("cpu", copy=True) for k, v in state["model"].items()},
            "epoch": state["epoch"],
        }
        if self.metric is None:
            self.state, self.selected_epoch = state, metrics["epoch"]
            return
        score = metrics[self.metric] if self.mode == "max" else -metrics[self.metric]
        if score > self._best:
            self._best, self.state, self.selected_epoch = score, state, metrics["epoch"]


def retrain_seed(
    document: ExportRecord,
    data,
    seed: int,
    epochs: int,
    train_only: bool,
    threads: int,
    gpu: float = 0.0,
    select: bool = True,
) -> dict[str, Any]:
    """Train one seed and evaluate its selected state on the test split (runs in Ray):
    with `train_only` and `select`, the best-validation epoch's; else the last epoch's."""
    import torch

    from trainables.loop import evaluate_state, run

    reporter = KeepingReporter(
        document.validation.metric if train_only and select else None, document.validation.mode
    )
    config = {**document.config, "seed": seed}
    began = time.perf_counter()
    run(
        document.trainable,
        config,
        training_bundle(data, train_only),
        reporter,
        max_epochs=epochs,
        threads=threads,
        device="cuda" if gpu > 0 and torch.cuda.is_available() else "cpu",
    )
    outcome: dict[str, Any] = {
        "seed": seed,
        "epochs": len(reporter.rows),
        "selected_epoch": reporter.selected_epoch,
        "wall_s": time.perf_counter() - began,
        "curve": reporter.rows,
        "state": None,
    }
    if reporter.rows and reporter.rows[-1]["diverged"]:
        return {**outcome, "status": "diverged", "test_accuracy": None, "test_loss": None}
    measured = evaluate_state(document.trainable, config, reporter.state, data)
    return {**outcome, "status": "finished", **measured, "state": reporter.state["model"]}


def retrain(
    export_file: str | Path,
    epochs: int | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    out: str | Path | None = None,
    train_only: bool = False,
    address: str | None = None,
    echo: Callable[[str], None] = print,
    overrides: dict[str, Any] | None = None,
    last_epoch: bool = False,
    dataset: dict[str, Any] | None = None,
) -> Path:
    """Retrain every seed, then write metrics.json, model.pt/model.json and curve.png.

    `overrides` replace hyperparameters of the exported config (`hpo retrain --set`), e.g.
    weights=none to train the same model from scratch as a baseline; `dataset` replaces
    options of its dataset section, e.g. labels_per_class. `last_epoch`: measure the last
    epoch's model, not (with `train_only`) the best-validation one. With labels_per_class
    each seed draws its own labelled examples (the seed is the subset's seed) and trains
    on them only: merging the validation split would add its every label."""
    import ray

    from hpo.ray_session import init_ray

    overrides = overrides or {}
    document = apply_overrides(load_export(export_file), overrides)
    if dataset and document.dataset is not None:
        merged = {**document.dataset.model_dump(), **dataset}
        try:
            spec = type(document.dataset).model_validate(merged)
        except ValueError as error:
            raise StudyError(f"{export_file}: dataset: {_first_error(error)}") from None
        document = document.model_copy(update={"dataset": spec})
    epochs = int(epochs or document.validation.epoch)
    if epochs < 1:
        raise StudyError("--epochs: expected a positive number of epochs")
    out = Path(out) if out else Path(export_file).parent / f"retrain-{Path(export_file).stem}"
    if document.dataset is None:  # a user's function trainable, with its own data
        from hpo.retrain_function import retrain_function

        return retrain_function(document, export_file, epochs, seeds, out, address, echo)
    few_labels = document.dataset.labels_per_class is not None
    train_only = train_only or few_labels
    if few_labels:  # each seed its own labelled subset
        datasets = {seed: _dataset(document, seed) for seed in seeds}
    else:  # one copy: CIFAR-10 is 0.7 GB
        datasets = dict.fromkeys(seeds, _dataset(document, None))
    resources = document.resources
    init_ray(address)
    task = ray.remote(retrain_seed).options(num_cpus=resources.cpu, num_gpus=resources.gpu)
    shared = {id(data): ray.put(data) for data in datasets.values()}
    data_refs = {seed: shared[id(data)] for seed, data in datasets.items()}
    threads = max(1, int(resources.cpu))
    on = "train only" if train_only else "train+validation"
    if few_labels:
        on += f", {document.dataset.labels_per_class} labels per class drawn by each seed"
    echo(
        f"retraining {document.strategy} seed {document.seed} config on {on}: "
        f"{len(seeds)} seeds × {epochs} epochs"
    )
    gpu = resources.gpu
    select = not last_epoch
    pending = {
        task.remote(document, data_refs[seed], seed, epochs, train_only, threads, gpu, select): seed
        for seed in seeds
    }
    outcomes = []
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        outcome = ray.get(done[0])
        pending.pop(done[0])
        outcome["train_examples"] = len(datasets[outcome["seed"]].train)
        outcomes.append(outcome)
        accuracy = outcome["test_accuracy"]
        echo(
            f"  seed {outcome['seed']}: {outcome['status']}, test accuracy "
            f"{'n/a' if accuracy is None else f'{accuracy:.4f}'} ({outcome['epochs']} epochs, "
            f"{outcome['wall_s']:.1f} s)"
        )
    outcomes.sort(key=lambda o: list(seeds).index(o["seed"]))
    data = datasets[seeds[0]]
    return write_outputs(out, document, outcomes, data, epochs, train_only, export_file, overrides)


def _dataset(document: ExportRecord, subset_seed: int | None):
    """The export's dataset, split as its study split it (labelled subset: `subset_seed`)."""
    from trainables import trainable_info
    from trainables.data import load_dataset

    spec = document.dataset
    return load_dataset(
        spec.name,
        spec.val_fraction,
        spec.test_fraction,
        spec.split_seed,
        scale=trainable_info(document.trainable).input_scale,
        subset_seed=subset_seed,
        **spec.loader_options(),
    )


def _first_error(error: ValueError) -> str:
    errors = getattr(error, "errors", None)
    if callable(errors):
        first = errors()[0]
        return f"{'.'.join(map(str, first['loc']))}: {first['msg']}"
    return str(error).splitlines()[0]


def provenance(document: ExportRecord, export_file: str | Path) -> dict[str, Any]:
    """What a retrain's metrics.json says it retrained: the export and its trial."""
    return {
        "export": str(export_file),
        "study": document.study,
        "strategy": document.strategy,
        "trial_id": document.trial_id,
        "trainable": document.trainable,
    }


def mean_std(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "std": None}
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def write_outputs(
    out: Path,
    document: ExportRecord,
    outcomes: list[dict[str, Any]],
    data,
    epochs: int,
    train_only: bool,
    export_file: str | Path,
    overrides: dict[str, Any] | None = None,
) -> Path:
    """Everything goes to a staged folder first, which replaces `out` in one rename."""
    import pandas as pd

    from trainables.saved import save_model

    dataset = document.dataset.model_dump(mode="json")
    with staged_folder(out) as staging:
        finished = [o for o in outcomes if o["status"] == "finished"]
        for outcome in finished:
            model = _model_from_state(document, outcome["state"], data)
            save_model(
                staging / f"seed-{outcome['seed']}",
                model,
                trainable=document.trainable,
                config={**document.config, "seed": outcome["seed"]},
                input_shape=data.input_shape,
                num_classes=data.num_classes,
                dataset=dataset,
                extra={"test_accuracy": outcome["test_accuracy"], "seed": outcome["seed"]},
            )
        if finished:  # the first finished seed is also the folder's own model
            for name in ("model.pt", "model.json"):
                shutil.copy(staging / f"seed-{finished[0]['seed']}" / name, staging / name)
        metrics = {
            **provenance(document, export_file),
            "dataset": dataset,
            "config": document.config,
            "overrides": overrides or {},
            "trained_on": "train" if train_only else "train+val",
            "epochs": epochs,
            "seeds": [
                {k: v for k, v in o.items() if k not in ("curve", "state")} for o in outcomes
            ],
            "test_accuracy": mean_std([o["test_accuracy"] for o in finished]),
            "test_loss": mean_std([o["test_loss"] for o in finished]),
            "wall_s": sum(o["wall_s"] for o in outcomes),
            "model": {"seed": finished[0]["seed"], "weights": "model.pt"} if finished else None,
            "study_test_accuracy": document.test.accuracy,
        }
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        plot_curves(outcomes, staging / "curve.png", train_only)
        curves = [{"seed": o["seed"], **row} for o in outcomes for row in o["curve"]]
        pd.DataFrame(curves).to_csv(staging / "curves.csv", index=False)
    return out


def _model_from_state(document: ExportRecord, state: dict, data):
    from trainables.loop import build_model

    model = build_model(document.trainable, document.config, data)
    model.load_state_dict(state)
    return model


def plot_curves(outcomes: list[dict[str, Any]], path: Path, train_only: bool) -> None:
    """Training loss and accuracy per epoch, one line per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for outcome in outcomes:
        epochs = [row["epoch"] for row in outcome["curve"]]
        loss_ax.plot(
            epochs,
            [row["train_loss"] for row in outcome["curve"]],
            label=f"seed {outcome['seed']} train",
        )
        acc_ax.plot(
            epochs,
            [row["train_accuracy"] for row in outcome["curve"]],
            label=f"seed {outcome['seed']} train",
        )
        if train_only:
            acc_ax.plot(
                epochs,
                [row["val_accuracy"] for row in outcome["curve"]],
                "--",
                label=f"seed {outcome['seed']} validation",
            )
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss", title="Training loss")
    title = "Training and validation accuracy" if train_only else "Training accuracy"
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title=title)
    for ax in (loss_ax, acc_ax):
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def predict(directory: str | Path, dataset: str | None = None) -> dict[str, Any]:
    """Load a retrained model and measure it on its dataset's held-out test split."""
    from trainables import DATASETS, trainable_info
    from trainables.data import load_dataset, options_from
    from trainables.loop import evaluate
    from trainables.saved import describe_model, load_model

    try:
        description = describe_model(directory)
    except FileNotFoundError as error:
        raise StudyError(str(error)) from None
    spec = dict(description["dataset"])
    name = dataset or spec["name"]
    if name not in DATASETS:
        raise StudyError(f"--dataset: unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    data = load_dataset(
        name,
        spec["val_fraction"],
        spec["test_fraction"],
        spec["split_seed"],
        scale=trainable_info(description["trainable"]).input_scale,
        **(options_from(spec) if name == spec["name"] else {}),  # --dataset: not its options
    )
    if list(data.input_shape) != list(description["input_shape"]):
        raise StudyError(
            f"--dataset: {name} inputs have shape {list(data.input_shape)}, the model expects "
            f"{description['input_shape']}"
        )
    loss, accuracy = evaluate(load_model(directory), data.test)
    return {
        "dataset": name,
        "split_seed": spec["split_seed"],
        "samples": len(data.test),
        "test_accuracy": accuracy,
        "test_loss": loss,
    }
