"""The one training loop, shared by every trainable; only the model builder and data differ.

It talks to the outside through a `Reporter` (Ray Tune in trials, a list in tests and
benchmarks), so the same code runs inside and outside Ray.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch
from torch import nn

from trainables import resolve, trainable_info
from trainables.data import DataBundle, Split

EVAL_BATCH = 2048


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
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    raise ValueError(f"unknown optimizer {name!r}")


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
    optimizer = make_optimizer(model, config)
    start, best_val_loss, stale = 0, math.inf, 0
    state = reporter.restore()
    if state is not None:
        model.load_state_dict(state["model"])
        load_optimizer_state(optimizer, state["optimizer"])
        start = int(state["epoch"])
        best_val_loss, stale = state.get("best_val_loss", math.inf), state.get("stale_epochs", 0)
    prepare = getattr(model, "prepare_data", None)  # e.g. features cached once per trial
    data = prepare(data) if prepare else data
    patience = int(config.get("patience", 0))

    for epoch in range(start + 1, max_epochs + 1):
        began = time.perf_counter()
        torch.manual_seed(epoch_seed(seed, epoch))
        train_loss, train_accuracy = train_epoch(model, optimizer, data.train, config)
        val_loss, val_accuracy = (
            evaluate(model, data.val) if math.isfinite(train_loss) else (math.nan, math.nan)
        )
        diverged = not (math.isfinite(train_loss) and math.isfinite(val_loss))
        if not diverged:
            best_val_loss, stale = (
                (val_loss, 0) if val_loss < best_val_loss else (best_val_loss, stale + 1)
            )
        early_stopped = bool(patience) and stale >= patience and epoch < max_epochs
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
        }
        if diverged:
            # A diverged model has no meaningful accuracy: report NaN and the status,
            # with no checkpoint, and end the trial.
            reporter.report(metrics, None)
            return
        checkpoint = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
            "best_val_loss": best_val_loss,
            "stale_epochs": stale,
        }
        reporter.report(metrics, checkpoint)
        if early_stopped:  # `patience` epochs without a better validation loss
            return


def train_epoch(
    model: nn.Module, optimizer: torch.optim.Optimizer, split: Split, config: Mapping[str, Any]
) -> tuple[float, float]:
    """One pass over shuffled mini-batches; returns mean cross-entropy and accuracy.

    The reported loss is the data loss; the L1 penalty only shapes the gradient. Sums stay
    tensors until the epoch ends (no per-batch host sync): a non-finite loss anywhere makes
    the epoch's loss non-finite, which the caller reports as divergence.
    """
    model.train()
    batch_size, l1 = int(config["batch_size"]), float(config["l1"])
    weights = [p for p in model.parameters() if p.dim() > 1] if l1 > 0 else []
    order = torch.randperm(len(split)).to(split.x.device)  # same order on every device
    total_loss = torch.zeros((), device=split.x.device)
    correct = torch.zeros((), dtype=torch.long, device=split.x.device)
    for begin in range(0, len(split), batch_size):
        index = order[begin : begin + batch_size]
        inputs, targets = split.x[index], split.y[index]
        logits = model(inputs)
        loss = nn.functional.cross_entropy(logits, targets)
        objective = loss + l1 * sum(w.abs().sum() for w in weights) if weights else loss
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        optimizer.step()
        with torch.no_grad():
            total_loss += loss.detach() * len(index)
            correct += (logits.argmax(1) == targets).sum()
    mean_loss = float(total_loss) / len(split)
    if not math.isfinite(mean_loss):
        return math.nan, math.nan
    return mean_loss, int(correct) / len(split)


@torch.no_grad()
def evaluate(model: nn.Module, split: Split) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `model` on `split` (eval mode)."""
    model.eval()
    total_loss, correct = 0.0, 0
    for begin in range(0, len(split), EVAL_BATCH):
        inputs = split.x[begin : begin + EVAL_BATCH]
        targets = split.y[begin : begin + EVAL_BATCH]
        logits = model(inputs)
        total_loss += float(nn.functional.cross_entropy(logits, targets, reduction="sum"))
        correct += int((logits.argmax(1) == targets).sum())
    return total_loss / len(split), correct / len(split)


def evaluate_state(
    trainable: str,
    config: Mapping[str, Any],
    state: Mapping[str, Any],
    data: DataBundle,
    split: str = "test",
) -> dict[str, float]:
    """Rebuild a trial's model from a checkpoint state and measure it on one split."""
    model = build_model(trainable, config, data)
    model.load_state_dict(state["model"])
    loss, accuracy = evaluate(model, getattr(data, split))
    return {f"{split}_loss": loss, f"{split}_accuracy": accuracy}
