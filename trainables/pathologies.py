"""Trainables of the gradient-pathology studies that are not one model trained by the loop,
and what the report shows of an mlp.

- `neuron`: one sigmoid neuron σ(w·x + b), evaluated (not trained) at the config's weight
  and bias: its output, L2 and cross-entropy losses and their derivatives in w.
- `batched_mlp`: many independent small nets trained at once as one batched model, each
  with its own seed, initialization and batch order, exactly as the `mlp` trainable would
  train it alone; reports the fraction that collapsed to a constant function (dying ReLU).
- `mlp_views`: per-layer gradient values at initialization and at the selected
  checkpoint, and a decision boundary for 2-D inputs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from trainables.data import DataBundle, Split
from trainables.loop import Reporter, build_model, epoch_seed, full_config, make_optimizer
from trainables.objectives import Objective

GRID = 100  # decision-boundary grid points per axis
MAX_GRADIENTS = 4096  # gradient values kept per layer for a distribution
CONFIDENCE = 0.95


# ------------------------------------------------------------------ one neuron
class Neuron(nn.Module):
    """σ(w·x + b) for one input feature."""

    def __init__(self, weight: float, bias: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([float(weight)]))
        self.bias = nn.Parameter(torch.tensor([float(bias)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x * self.weight + self.bias)


def build_neuron(config: Mapping, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    if tuple(input_shape) != (1,) or num_classes != 1:
        raise ValueError(f"neuron takes one input and one target, got {tuple(input_shape)}")
    return Neuron(float(config["weight"]), float(config["bias"]))


def neuron_quantities(neuron: Neuron, x: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Output, L2 loss ½(σ − t)², cross-entropy −t·log σ − (1 − t)·log(1 − σ) and both
    losses' derivatives in w, averaged over the samples (autograd, not a formula)."""
    quantities = {}
    for name, loss_of in (("l2", _l2), ("ce", _cross_entropy)):
        neuron.zero_grad()
        output = neuron(x)
        loss = loss_of(output, target).mean()
        loss.backward()
        quantities[f"{name}_loss"] = float(loss.detach())
        quantities[f"{name}_grad_w"] = float(neuron.weight.grad[0])
        quantities["output"] = float(output.detach().mean())
    return quantities


def _l2(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 0.5 * (output - target) ** 2


def _cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # −t·log σ − (1 − t)·log(1 − σ), written out: torch's BCE takes targets in [0, 1] only
    return -(target * torch.log(output) + (1 - target) * torch.log1p(-output))


def neuron_trial(
    trainable: str,
    config: Mapping[str, Any],
    data: DataBundle,
    reporter: Reporter,
    *,
    max_epochs: int,
    threads: int | None = None,
    device: torch.device | str = "cpu",
) -> None:
    """One report: the neuron's quantities on the training split (its loss and accuracy
    also on validation); nothing is trained, so one epoch says everything."""
    began = time.perf_counter()
    config = full_config(trainable, config)
    neuron = build_neuron(config, data.input_shape, data.num_classes)
    quantities = neuron_quantities(neuron, data.train.x, data.train.y)
    objective = Objective.of(config)
    with torch.no_grad():
        train = objective.score(neuron(data.train.x), data.train)
        val = objective.score(neuron(data.val.x), data.val)
    metrics = {
        "epoch": 1,
        "train_loss": float(train.loss),
        "train_accuracy": int(train.correct) / len(data.train),
        "val_loss": float(val.loss),
        "val_accuracy": int(val.correct) / len(data.val),
        "lr": 0.0,
        "epoch_time_s": time.perf_counter() - began,
        "report_time": time.time(),
        "diverged": False,
        "early_stopped": False,
        **quantities,
    }
    reporter.report(metrics, {"model": neuron.state_dict(), "epoch": 1})


# ------------------------------------------------------- many nets at once
def run_seeds(seed: int, runs: int) -> list[int]:
    """The seed of each of a trial's runs: run r of trial seed s has seed s·runs + r, so
    trials with different seeds never share a run."""
    return [int(seed) * runs + r for r in range(runs)]


class BatchedMLP(nn.Module):
    """`runs` independent fully connected nets of the same shape as one module: layer l's
    weights are a runs×in×out tensor. Input runs×batch×in (or batch×in, given to every
    run), output runs×batch×out."""

    def __init__(self, nets: Sequence[nn.Sequential], config: Mapping[str, Any]) -> None:
        super().__init__()
        from trainables.models import make_activation

        linears = [[m for m in net if isinstance(m, nn.Linear)] for net in nets]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.stack([run[i].weight.detach().T for run in linears]))
            for i in range(len(linears[0]))
        )
        self.biases = nn.ParameterList(
            nn.Parameter(torch.stack([run[i].bias.detach()[None, :] for run in linears]))
            for i in range(len(linears[0]))
        )
        self.activation = make_activation(config)

    @property
    def runs(self) -> int:
        return self.weights[0].shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # one batch for every run
            x = x.expand(self.runs, *x.shape)
        last = len(self.weights) - 1
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.baddbmm(bias, x, weight)
            if i < last:
                x = self.activation(x)
        return x


def mlp_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The `mlp` config that trains one of a batched trial's runs alone, identically."""
    from trainables import MLP_DEFAULTS

    keys = set(MLP_DEFAULTS) - {"loss"}
    return {
        **{k: v for k, v in config.items() if k in keys},
        "loss": "squared_error",
    }


def build_batched_mlp(
    config: Mapping[str, Any], input_shape: Sequence[int], num_classes: int, seed: int = 0
) -> BatchedMLP:
    """Each run's net built as the `mlp` trainable builds it under the run's seed."""
    from trainables.loop import build_model_for

    single = mlp_config(config)
    nets = []
    for run_seed in run_seeds(seed, int(config["runs"])):
        torch.manual_seed(run_seed)
        nets.append(build_model_for("mlp", single, input_shape, num_classes))
    return BatchedMLP(nets, config)


def batch_orders(seeds: Sequence[int], epoch: int, samples: int) -> torch.Tensor:
    """Each run's shuffled order of the training split this epoch (runs×samples), the one
    the loop draws for a single run with that seed."""
    orders = []
    for seed in seeds:
        torch.manual_seed(epoch_seed(seed, epoch))
        orders.append(torch.randperm(samples))
    return torch.stack(orders)


def collapsed(outputs: torch.Tensor, threshold: float) -> torch.Tensor:
    """Which runs compute a constant function: the population std of their outputs over
    the inputs (runs×samples×out) is below `threshold` for every output (one input:
    always; any function is constant on one point)."""
    return (outputs.std(dim=1, correction=0) < threshold).all(dim=1)


def wilson_interval(successes: int, trials: int, level: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (scipy's)."""
    from scipy.stats import binomtest

    interval = binomtest(successes, trials).proportion_ci(level, method="wilson")
    return float(interval.low), float(interval.high)


def batched_trial(
    trainable: str,
    config: Mapping[str, Any],
    data: DataBundle,
    reporter: Reporter,
    *,
    max_epochs: int,
    threads: int | None = None,
    device: torch.device | str = "cpu",
) -> None:
    """Train every run for `max_epochs` epochs of mini-batches and report, each epoch, the
    runs' mean losses and the fraction collapsed to a constant function, with its Wilson
    95 % interval; the state is the batched model (resumable)."""
    if threads:
        torch.set_num_threads(threads)
    began = time.perf_counter()
    config = full_config(trainable, config)
    seed = int(config.get("seed", 0))
    seeds = run_seeds(seed, int(config["runs"]))
    data = data.to(device)
    model = build_batched_mlp(config, data.input_shape, data.num_classes, seed).to(device)
    optimizer = make_optimizer(model, mlp_config({**config, "weight_decay": 0.0}))
    start = 0
    state = reporter.restore()
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = int(state["epoch"])
    size = int(config["batch_size"]) or len(data.train)
    for epoch in range(start + 1, max_epochs + 1):
        epoch_began = time.perf_counter()
        orders = batch_orders(seeds, epoch, len(data.train)).to(device)
        model.train()
        loss_sum = torch.zeros((), device=device)  # the runs' batch losses, summed
        correct = torch.zeros((), device=device)  # outputs within tolerance while training
        for begin in range(0, len(data.train), size):
            index = orders[:, begin : begin + size]
            outputs, targets = model(data.train.x[index]), data.train.y[index]
            losses = _run_losses(outputs, targets)
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
            optimizer.step()
            with torch.no_grad():
                loss_sum += losses.sum() * index.shape[1]
                correct += _within(outputs, targets, float(config["tolerance"])).sum()
        samples = len(data.train) * model.runs
        metrics = {
            "epoch": epoch,
            "lr": float(config["lr"]),
            # as the loop reports them: over the batches as they trained
            "train_loss": float(loss_sum) / samples,
            "train_accuracy": float(correct) / samples,
            **held_out_metrics(model, data.val, config),
        }
        metrics["epoch_time_s"] = time.perf_counter() - epoch_began
        metrics["runs_wall_s"] = time.perf_counter() - began
        diverged = not math.isfinite(metrics["train_loss"])
        metrics.update(diverged=diverged, early_stopped=False, report_time=time.time())
        checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
        reporter.report(metrics, None if diverged else {**checkpoint, "epoch": epoch})
        if diverged:
            return


def _run_losses(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each run's mean squared error ½‖output − target‖² over its batch (runs)."""
    return 0.5 * (outputs - targets).pow(2).sum(-1).mean(-1)


def _within(outputs: torch.Tensor, targets: torch.Tensor, tolerance: float) -> torch.Tensor:
    """Per run and sample: every output within `tolerance` of its target."""
    return ((outputs - targets).abs() < tolerance).all(-1).float()


@torch.no_grad()
def held_out_metrics(
    model: BatchedMLP, split: Split, config: Mapping[str, Any], prefix: str = "val"
) -> dict[str, Any]:
    """The runs' mean loss and accuracy on `split`, and how many collapsed there to a
    constant function (judged on held-out inputs), with a Wilson 95 % interval."""
    model.eval()
    runs = model.runs
    outputs = model(split.x.expand(runs, *split.x.shape))
    targets = split.y.expand(runs, *split.y.shape)
    dead = int(collapsed(outputs, float(config["collapse_std"])).sum())
    low, high = wilson_interval(dead, runs)
    return {
        f"{prefix}_loss": float(_run_losses(outputs, targets).mean()),
        f"{prefix}_accuracy": float(_within(outputs, targets, float(config["tolerance"])).mean()),
        "runs": runs,
        "collapsed_runs": dead,
        "collapse_fraction": dead / runs,
        "collapse_low": low,
        "collapse_high": high,
    }


def evaluate_batched(
    trainable: str,
    config: Mapping[str, Any],
    state: Mapping[str, Any],
    data: DataBundle,
    split: str = "test",
) -> dict[str, float]:
    """A batched trial's checkpoint on one split: the runs' mean loss and accuracy, and
    the fraction of runs collapsed there."""
    config = full_config(trainable, config)
    seed = int(config.get("seed", 0))
    model = build_batched_mlp(config, data.input_shape, data.num_classes, seed)
    model.load_state_dict(state["model"])
    measured = held_out_metrics(model, getattr(data, split), config, split)
    return {
        f"{split}_loss": measured[f"{split}_loss"],
        f"{split}_accuracy": measured[f"{split}_accuracy"],
        f"{split}_collapse_fraction": measured["collapse_fraction"],
    }


# ------------------------------------------------------------ what the report shows
def mlp_views(
    trainable: str, config: Mapping[str, Any], state: Mapping[str, Any], data: DataBundle
) -> dict[str, np.ndarray]:
    """Arrays for the report: every layer's weight gradients on the training split at
    initialization (`grad_init/<layer>`) and at the selected checkpoint
    (`grad_trained/<layer>`), at most MAX_GRADIENTS values each; for 2-D inputs with two
    classes, the selected model's probability of class 1 on a grid (`boundary/…`)."""
    config = full_config(trainable, config)
    torch.manual_seed(int(config.get("seed", 0)))  # as the loop does before building
    initial = build_model(trainable, config, data)
    trained = build_model(trainable, config, data)
    trained.load_state_dict(state["model"])
    views = {}
    for name, model in (("grad_init", initial), ("grad_trained", trained)):
        for layer, values in layer_gradients(model, data, config).items():
            views[f"{name}/{layer}"] = values
    if data.input_shape == (2,) and data.num_classes == 2 and not data.regression:
        views.update(decision_boundary(trained, data))
    return views


def layer_gradients(
    model: nn.Module, data: DataBundle, config: Mapping[str, Any]
) -> dict[str, np.ndarray]:
    """Each layer's weight gradient of the loss on the whole training split, flattened
    (an evenly spaced subset where a layer has more than MAX_GRADIENTS weights)."""
    from trainables.models import weight_layers

    model.train()
    model.zero_grad()
    objective = Objective.of(config)
    objective.score(model(data.train.x), data.train).loss.backward()
    found = {}
    for layer, weight in weight_layers(model):
        values = weight.grad.detach().flatten().cpu().numpy().astype(np.float32)
        if values.size > MAX_GRADIENTS:
            values = values[np.linspace(0, values.size - 1, MAX_GRADIENTS).astype(int)]
        found[layer] = values
    return found


@torch.no_grad()
def decision_boundary(model: nn.Module, data: DataBundle) -> dict[str, np.ndarray]:
    """P(class 1) on a GRID×GRID grid spanning the training points (with a margin), and
    the training points themselves."""
    points, labels = data.train.x, data.train.y
    low, high = points.min(0).values, points.max(0).values
    margin = 0.1 * (high - low)
    xs = torch.linspace(float(low[0] - margin[0]), float(high[0] + margin[0]), GRID)
    ys = torch.linspace(float(low[1] - margin[1]), float(high[1] + margin[1]), GRID)
    grid_x, grid_y = torch.meshgrid(xs, ys, indexing="xy")
    model.eval()
    logits = model(torch.stack([grid_x.flatten(), grid_y.flatten()], 1))
    probability = torch.softmax(logits, 1)[:, 1].reshape(GRID, GRID)
    return {
        "boundary/x": xs.numpy(),
        "boundary/y": ys.numpy(),
        "boundary/probability": probability.numpy().astype(np.float32),
        "boundary/points": points.cpu().numpy().astype(np.float32),
        "boundary/labels": labels.cpu().numpy().astype(np.int64),
    }


@torch.no_grad()
def batched_views(
    trainable: str, config: Mapping[str, Any], state: Mapping[str, Any], data: DataBundle
) -> dict[str, np.ndarray]:
    """Each run's output std over the validation inputs at the selected checkpoint
    (`runs/output_std`): the report counts collapse at several thresholds from it."""
    config = full_config(trainable, config)
    model = build_batched_mlp(
        config, data.input_shape, data.num_classes, int(config.get("seed", 0))
    )
    model.load_state_dict(state["model"])
    model.eval()
    outputs = model(data.val.x.expand(model.runs, *data.val.x.shape))
    return {
        "runs/output_std": outputs.std(dim=1, correction=0).amax(dim=1).numpy().astype(np.float64)
    }
