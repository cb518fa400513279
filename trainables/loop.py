"""The one training loop, shared by every trainable; only the model builder and data differ.

It talks to the outside through a `Reporter` (Ray Tune in trials, a list in tests and
benchmarks), so the same code runs inside and outside Ray.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from trainables import resolve, trainable_info
from trainables.data import DataBundle, Split
from trainables.objectives import HEAD, Objective, check_fits

EVAL_BATCH = 2048
CYCLIC = ("triangular", "triangular2", "exp_range")  # torch CyclicLR's modes
MAX_RECORDED = 2000  # recorded iterations per epoch (record_iterations): every k-th beyond


class Reporter(Protocol):
    def restore(self) -> dict | None:
        """The state saved by the last `report` of this trial (pause/resume, retries)."""

    def report(self, metrics: dict[str, Any], state: dict | None) -> None:
        """Publish one epoch's metrics; `state` is the checkpoint (None when diverged)."""


def full_config(trainable: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The trainable's defaults overridden by the trial's config."""
    return {**trainable_info(trainable).defaults, **config}


def build_model(trainable: str, config: Mapping[str, Any], data: DataBundle) -> nn.Module:
    return build_model_for(trainable, config, data.input_shape, data.num_classes)


def build_model_for(
    trainable: str, config: Mapping[str, Any], input_shape: Sequence[int], num_classes: int
) -> nn.Module:
    """The trainable's model for inputs of `input_shape` (no batch dimension)."""
    builder = resolve(trainable_info(trainable).model_builder)
    return builder(full_config(trainable, config), tuple(input_shape), num_classes)


def make_optimizer(model: nn.Module, config: Mapping[str, Any]) -> torch.optim.Optimizer:
    name, lr, wd = config["optimizer"], float(config["lr"]), float(config["weight_decay"])
    # A model may give parts of itself their own learning rates (e.g. head vs backbone).
    groups = getattr(model, "param_groups", None)
    params = groups(config) if groups else model.parameters()
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=float(config["momentum"]), weight_decay=wd)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=wd)
    if name == "adam":
        betas = (float(config["beta1"]), float(config["beta2"]))
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=wd)
    raise ValueError(f"unknown optimizer {name!r}")


def batch_bounds(samples: int, config: Mapping[str, Any], model: nn.Module) -> list[int]:
    """Where an epoch's mini-batches begin, then `samples`. batch_size 0 means the whole
    split (full-batch gradient descent). A last batch of one sample joins the one before
    where the model has batch norm: batch statistics of one sample fail or mean nothing."""
    size = int(config["batch_size"]) or samples
    starts = list(range(0, samples, size))
    norms = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if norms and len(starts) > 1 and samples - starts[-1] == 1:
        starts.pop()
    return [*starts, samples]


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    config: Mapping[str, Any],
    batches: int,
    max_epochs: int,
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The config's lr policy, stepped once per mini-batch (`batches` per epoch); None for
    a constant lr. Every group keeps its ratio to `lr` (e.g. a backbone's lr_backbone)."""
    policy, lr = str(config["lr_policy"]), float(config["lr"])
    schedulers = torch.optim.lr_scheduler
    if policy == "constant":
        return None
    if policy in CYCLIC:
        lr_min = float(config["lr_min"])
        if lr_min >= lr:
            raise ValueError(
                f"lr_min ({lr_min:g}) must be below lr ({lr:g}) for lr_policy {policy}"
            )
        peaks = [group["lr"] for group in optimizer.param_groups]
        return schedulers.CyclicLR(
            optimizer,
            base_lr=[peak * lr_min / lr for peak in peaks],
            max_lr=peaks,
            step_size_up=max(1, round(float(config["cycle_epochs"]) * batches)),
            mode=policy,
            gamma=float(config["lr_gamma"]),
            cycle_momentum=False,  # Adam and Adagrad have no momentum to cycle
        )
    if policy == "range_test":
        gamma = float(config["range_factor"]) ** (1 / (max_epochs * batches))
        # LambdaLR's closed form (lr × gamma^t) lets a resumed trial recompute its lr.
        return schedulers.LambdaLR(optimizer, lambda iteration: gamma**iteration)
    raise ValueError(f"unknown lr_policy {policy!r}")


def load_scheduler_state(
    scheduler: torch.optim.lr_scheduler.LRScheduler, saved: Mapping[str, Any]
) -> None:
    """Continue the schedule at the saved iteration, with the bounds this config gives it
    (as load_optimizer_state: a PBT trial's perturbed lr is the peak from there on), and
    put the lr of that iteration in force."""
    position = {"last_epoch": saved["last_epoch"] - 1, "_step_count": saved["_step_count"]}
    scheduler.load_state_dict({**scheduler.state_dict(), **position})
    scheduler.step()  # both schedules are closed forms of the iteration: exact on resume


def warm_start(model: nn.Module, path: str) -> None:
    """Load `init_from` (an `hpo retrain` model folder, a state-dict file or a checkpoint
    with a "model" key) into the model, strictly; one-line errors name what does not fit."""
    source = Path(path).expanduser()
    if source.is_dir():
        from trainables.saved import WEIGHTS

        source = source / WEIGHTS
    if not source.is_file():
        raise FileNotFoundError(
            f"init_from: no such file or folder: {path} (expected an hpo retrain model "
            "folder or a torch state-dict file)"
        )
    state = torch.load(source, weights_only=True, map_location="cpu")
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]
    mismatch = first_mismatch(model.state_dict(), state)
    if mismatch:
        raise ValueError(f"init_from: {path} does not fit the model: {mismatch}")
    model.load_state_dict(state)


def first_mismatch(expected: Mapping[str, torch.Tensor], state: Any) -> str | None:
    """What first keeps `state` from loading into a model with `expected` (None: fits)."""
    if not isinstance(state, Mapping):
        return f"holds a {type(state).__name__}, not a state dict"
    for key, tensor in expected.items():
        if key not in state:
            return f"no {key!r} (shape {tuple(tensor.shape)})"
        if tuple(state[key].shape) != tuple(tensor.shape):
            return f"{key!r} has shape {tuple(state[key].shape)}, the model's {tuple(tensor.shape)}"
    extra = [key for key in state if key not in expected]
    return f"unexpected {extra[0]!r}" if extra else None


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """Load a checkpoint's optimizer state (momentum, Adam's moments, step counts) but keep
    the hyperparameters the config gave this optimizer: a PBT trial that copied another
    trial's checkpoint continues its state with its own, perturbed, lr and weight decay
    (torch's load_state_dict would restore the saved ones)."""
    configured = [
        {key: value for key, value in group.items() if key != "params"}
        for group in optimizer.param_groups
    ]
    optimizer.load_state_dict(saved)
    for group, hyperparameters in zip(optimizer.param_groups, configured, strict=True):
        group.update(hyperparameters)


def epoch_seed(seed: int, epoch: int) -> int:
    # Shuffling and dropout depend only on (seed, epoch): a paused, resumed or retried
    # trial and one in a reused actor see exactly the same batches as an uninterrupted one.
    return (int(seed) * 1_000_003 + epoch) % (2**63)


def run(
    trainable: str,
    config: Mapping[str, Any],
    data: DataBundle,
    reporter: Reporter,
    *,
    max_epochs: int,
    threads: int | None = None,
    device: torch.device | str = "cpu",
) -> None:
    """Run one trial: the trainable's own runner where it has one (e.g. many small nets
    batched as one), else `train`."""
    info = trainable_info(trainable)
    runner = resolve(info.runner) if info.runner else train
    runner(trainable, config, data, reporter, max_epochs=max_epochs, threads=threads, device=device)


def train(
    trainable: str,
    config: Mapping[str, Any],
    data: DataBundle,
    reporter: Reporter,
    *,
    max_epochs: int,
    threads: int | None = None,
    device: torch.device | str = "cpu",
) -> None:
    """Train for up to `max_epochs`, reporting every epoch; stop early on divergence, or
    after `patience` epochs without a better validation loss when the config sets one.
    Model and data live on `device` (a GPU when the trial was given one)."""
    if threads:
        torch.set_num_threads(threads)
    config = full_config(trainable, config)
    seed = int(config.get("seed", 0))
    torch.manual_seed(seed)
    data = data.to(device)
    model = build_model(trainable, config, data).to(device)
    objective = Objective.of(config)
    check_fits(objective, data.regression)
    optimizer = make_optimizer(model, config)
    passes = int(config.get("passes", 1))  # passes over the training split per epoch
    batches = (len(batch_bounds(len(data.train), config, model)) - 1) * passes
    scheduler = make_scheduler(optimizer, config, batches, max_epochs)
    start, best_val_loss, stale = 0, math.inf, 0
    state = reporter.restore()
    if state is not None:  # a restored checkpoint wins over a warm start
        model.load_state_dict(state["model"])
        load_optimizer_state(optimizer, state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            load_scheduler_state(scheduler, state["scheduler"])
        start = int(state["epoch"])
        best_val_loss, stale = state.get("best_val_loss", math.inf), state.get("stale_epochs", 0)
    elif config.get("init_from"):
        warm_start(model, str(config["init_from"]))
    prepare = getattr(model, "prepare_data", None)  # e.g. features cached once per trial
    data = prepare(data) if prepare else data
    patience = int(config.get("patience", 0))
    norms = GradNorms(model, int(config.get("grad_norm_every", 0)))
    stop_at_fit = bool(config.get("stop_at_fit", False))

    for epoch in range(start + 1, max_epochs + 1):
        began = time.perf_counter()
        torch.manual_seed(epoch_seed(seed, epoch))
        record = Iterations.for_epoch(epoch, batches) if config["record_iterations"] else None
        train_extra: dict[str, float] = {}
        fitted_after = None  # iterations when a pass first classified the training set right
        for done in range(passes):
            train_loss, train_accuracy = train_epoch(
                model, optimizer, data.train, config, scheduler, record, train_extra, norms
            )
            if stop_at_fit and train_accuracy == 1.0:
                fitted_after = (epoch - 1) * batches + (done + 1) * (batches // passes)
                break
            if not math.isfinite(train_loss):
                break
        val_extra: dict[str, float] = {}
        val_loss, val_accuracy = (
            evaluate(model, data.val, objective, val_extra)
            if math.isfinite(train_loss)
            else (math.nan, math.nan)
        )
        diverged = not (math.isfinite(train_loss) and math.isfinite(val_loss))
        if not diverged:
            best_val_loss, stale = (
                (val_loss, 0) if val_loss < best_val_loss else (best_val_loss, stale + 1)
            )
        early_stopped = bool(patience) and stale >= patience and epoch < max_epochs
        early_stopped = early_stopped or (fitted_after is not None and epoch < max_epochs)
        metrics = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_accuracy": train_accuracy if not diverged else math.nan,
            "val_loss": val_loss if not diverged else math.nan,
            "val_accuracy": val_accuracy if not diverged else math.nan,
            "lr": optimizer.param_groups[0]["lr"],
            "epoch_time_s": time.perf_counter() - began,
            "report_time": time.time(),
            "diverged": diverged,
            "early_stopped": early_stopped,
            **(record.metrics() if record is not None else {}),
            **{f"train_{name}": value for name, value in train_extra.items()},
            **{f"val_{name}": value for name, value in val_extra.items()},
            **norms.metrics(),
        }
        if stop_at_fit:  # capped at the iterations trained so far when it never fit
            metrics["fitted"] = fitted_after is not None
            metrics["iterations_to_fit"] = fitted_after or epoch * batches
        if diverged:
            # A diverged model has no meaningful accuracy: report NaN and the status,
            # with no checkpoint, and end the trial.
            reporter.report(metrics, None)
            return
        checkpoint = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "epoch": epoch,
            "best_val_loss": best_val_loss,
            "stale_epochs": stale,
        }
        reporter.report(metrics, checkpoint)
        if early_stopped:  # `patience` epochs without a better validation loss, or fit
            return


@dataclass
class Iterations:
    """One epoch's per-iteration record (record_iterations): the training loss and the lr
    of every `every`-th mini-batch, numbered from 1 over the whole trial."""

    first: int  # the trial-wide number of the epoch's first iteration
    every: int
    index: list[int] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    loss: list[torch.Tensor] = field(default_factory=list)

    @classmethod
    def for_epoch(cls, epoch: int, batches: int) -> Iterations:
        # Every epoch has the same batches, so numbering survives pause and resume.
        return cls((epoch - 1) * batches + 1, math.ceil(batches / MAX_RECORDED))

    def add(self, batch: int, lr: float, loss: torch.Tensor) -> None:
        if batch % self.every == 0:
            self.index.append(self.first + batch)
            self.lr.append(float(lr))
            self.loss.append(loss.detach())  # a tensor: synced once, in metrics()

    def metrics(self) -> dict[str, list]:
        losses = torch.stack(self.loss).tolist() if self.loss else []
        return {"iteration_index": self.index, "iteration_loss": losses, "iteration_lr": self.lr}


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    split: Split,
    config: Mapping[str, Any],
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    record: Iterations | None = None,
    extra: dict[str, float] | None = None,
    norms: GradNorms | None = None,
) -> tuple[float, float]:
    """One pass over shuffled mini-batches; returns the mean loss and accuracy (of the
    config's `Objective`). The scheduler, if any, steps after every batch; `record`
    collects per-batch loss and lr, `norms` per-layer gradient norms; `extra` receives a
    second head's loss and accuracy.

    The reported loss is the data loss; the L1 penalty only shapes the gradient. Sums stay
    tensors until the epoch ends (no per-batch host sync): a non-finite loss anywhere makes
    the epoch's loss non-finite, which the caller reports as divergence.
    """
    model.train()
    objective = Objective.of(config)
    bounds, l1 = batch_bounds(len(split), config, model), float(config["l1"])
    weights = [p for p in model.parameters() if p.dim() > 1] if l1 > 0 else []
    order = torch.randperm(len(split)).to(split.x.device)  # same order on every device
    sums = Sums(split.x.device)
    full = len(bounds) == 2  # one batch of the whole split: no shuffled copy of it
    for batch, (begin, end) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        inputs = split if full else split.take(order[begin:end])
        lr = optimizer.param_groups[0]["lr"]  # the lr this batch trains with
        score = objective.score(model(inputs.x), inputs)
        loss = score.loss
        objective_value = loss + l1 * sum(w.abs().sum() for w in weights) if weights else loss
        optimizer.zero_grad(set_to_none=True)
        objective_value.backward()
        if norms is not None:
            norms.after_backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if record is not None:
            record.add(batch, lr, loss)
        sums.add(score)
    if record is not None:
        record.first += len(bounds) - 1  # the next pass of a multi-pass epoch continues
    return sums.means(len(split), extra)


class Sums:
    """Running sums of a pass's scores, kept as tensors (synced once, at the end)."""

    def __init__(self, device: torch.device | str) -> None:
        self.loss = torch.zeros((), device=device)
        self.correct = torch.zeros((), dtype=torch.long, device=device)
        self.extra: dict[str, torch.Tensor] = {}

    def add(self, score: Any) -> None:
        with torch.no_grad():
            self.loss += score.loss_sum.detach()
            self.correct += score.correct
            for name, value in score.extra.items():
                self.extra[name] = self.extra.get(name, 0) + value.detach()

    def means(self, samples: int, extra: dict[str, float] | None) -> tuple[float, float]:
        mean_loss = float(self.loss) / samples
        if extra is not None and self.extra:
            extra[f"{HEAD}_loss"] = float(self.extra[f"{HEAD}_loss"]) / samples
            extra[f"{HEAD}_accuracy"] = int(self.extra[f"{HEAD}_correct"]) / samples
        if not math.isfinite(mean_loss):
            return math.nan, math.nan
        return mean_loss, int(self.correct) / samples


class GradNorms:
    """Per-layer L2 norms of the weight gradients at every `every`-th iteration (0: off),
    averaged over an epoch as metrics `grad_norm/<layer>`; layers are named conv1…, fc1…
    in model order (as `trainables.models.layer_kind` counts them)."""

    def __init__(self, model: nn.Module, every: int) -> None:
        from trainables.models import weight_layers

        self.every, self.iteration, self.samples = every, 0, 0
        self.layers = weight_layers(model) if every > 0 else []
        self.sums: dict[str, torch.Tensor] = {}

    def after_backward(self) -> None:
        self.iteration += 1
        if not self.layers or self.iteration % self.every:
            return
        with torch.no_grad():
            for name, weight in self.layers:
                norm = weight.grad.norm() if weight.grad is not None else weight.new_zeros(())
                self.sums[name] = self.sums.get(name, 0) + norm
        self.samples += 1

    def metrics(self) -> dict[str, float]:
        """The epoch's means (none where no iteration was sampled); starts a new epoch."""
        means = {f"grad_norm/{n}": float(v) / self.samples for n, v in self.sums.items()}
        self.sums, self.samples = {}, 0
        return means


@torch.no_grad()
def evaluate(
    model: nn.Module,
    split: Split,
    objective: Objective | None = None,
    extra: dict[str, float] | None = None,
) -> tuple[float, float]:
    """Mean loss and accuracy of `model` on `split` (eval mode); cross-entropy unless an
    objective says otherwise; `extra` receives a second head's loss and accuracy."""
    model.eval()
    objective = objective or Objective()
    sums = Sums(split.x.device)
    for begin in range(0, len(split), EVAL_BATCH):
        batch = split.take(slice(begin, begin + EVAL_BATCH))
        sums.add(objective.score(model(batch.x), batch))
    return sums.means(len(split), extra)


def evaluate_state(
    trainable: str,
    config: Mapping[str, Any],
    state: Mapping[str, Any],
    data: DataBundle,
    split: str = "test",
) -> dict[str, float]:
    """Rebuild a trial's model from a checkpoint state and measure it on one split."""
    evaluator = trainable_info(trainable).evaluator
    if evaluator:
        return resolve(evaluator)(trainable, config, state, data, split)
    model = build_model(trainable, config, data)
    model.load_state_dict(state["model"])
    extra: dict[str, float] = {}
    loss, accuracy = evaluate(
        model, getattr(data, split), Objective.of(full_config(trainable, config)), extra
    )
    heads = {f"{split}_{name}": value for name, value in extra.items()}
    return {f"{split}_loss": loss, f"{split}_accuracy": accuracy, **heads}
