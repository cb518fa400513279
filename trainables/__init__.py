"""Ray Tune trainables: models, datasets and the one training loop.

The registries below are plain data (no torch import), so that `hpo validate` can check a
study's names and hyperparameters instantly; the heavy modules are imported by the
functions that need them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# What every trainable reports each epoch through `ray.tune.report` (see trainables.loop).
EPOCH_METRICS: tuple[str, ...] = (
    "epoch",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "lr",
    "epoch_time_s",
)

CNN_DEFAULTS: Mapping[str, object] = {
    "conv_layers": 2,
    "channels": 16,
    "kernel_size": 3,
    "hidden_units": 64,
    "activation": "relu",
    "dropout": 0.0,
    "batch_norm": False,
    "weight_decay": 0.0,
    "l1": 0.0,
    "init": "default",
    "init_std": 0.05,
    "optimizer": "adam",
    "lr": 1e-3,
    "momentum": 0.9,
    "batch_size": 64,
}

# Allowed values of the categorical hyperparameters, checked when a study is validated.
CNN_CHOICES: Mapping[str, tuple[object, ...]] = {
    "activation": ("relu", "leaky_relu", "sigmoid", "tanh"),
    "init": ("default", "xavier", "normal"),
    "optimizer": ("sgd", "momentum", "adagrad", "adam"),
    "batch_norm": (True, False),
}


@dataclass(frozen=True)
class TrainableInfo:
    """What the study validator and the runner need to know about a trainable."""

    name: str
    model_builder: str  # "module:function" building the torch module from (config, data info)
    defaults: Mapping[str, object]
    choices: Mapping[str, tuple[object, ...]] = field(default_factory=dict)
    metrics: tuple[str, ...] = EPOCH_METRICS


TRAINABLES: dict[str, TrainableInfo] = {
    "cnn": TrainableInfo("cnn", "trainables.models:build_cnn", CNN_DEFAULTS, CNN_CHOICES),
}

# name -> "module:function" returning a trainables.data.DataBundle
DATASETS: dict[str, str] = {
    "digits": "trainables.data:load_digits_bundle",
    "mnist1d": "trainables.data:load_mnist1d_bundle",
}


def load_model(directory):
    """The model saved by `hpo retrain` in `directory`, in eval mode (see trainables.saved)."""
    from trainables.saved import load_model as load

    return load(directory)


def resolve(reference: str):
    """Import "module:function" lazily (heavy imports happen only when used)."""
    import importlib

    module_name, _, attr = reference.partition(":")
    return getattr(importlib.import_module(module_name), attr)


__all__ = ["DATASETS", "EPOCH_METRICS", "TRAINABLES", "TrainableInfo", "load_model", "resolve"]
