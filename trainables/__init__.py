"""Ray Tune trainables: models, datasets and the one training loop.

The registries below are plain data (no torch import), so that `hpo validate` can check a
study's names and hyperparameters instantly; the heavy modules are imported by the
functions that need them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

# Result keys of the config in force each epoch (hp/lr …): PBT changes configs mid-trial.
HYPERPARAMETER_PREFIX = "hp/"
# The config key through which hpo's searchers say how they proposed a trial's config; the
# models ignore it, every result carries it (hp/proposed_by, "" where the config has none).
PROPOSED_BY = "proposed_by"
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

# What the one loop reads for every trainable (trainables.loop): the learning-rate policy,
# Adam's betas, per-iteration records and a warm start.
LR_POLICIES: tuple[str, ...] = ("constant", "triangular", "triangular2", "exp_range", "range_test")
LOOP_COMMON_DEFAULTS: Mapping[str, object] = {
    # constant: `lr` throughout; triangular, triangular2, exp_range: cyclic between lr_min
    # and the peak `lr` (torch's CyclicLR); range_test: from `lr` up to lr × range_factor
    "lr_policy": "constant",
    "lr_min": 1e-4,
    "cycle_epochs": 2.0,  # half a cycle, in epochs
    "lr_gamma": 0.999,  # exp_range: the cycle's amplitude decays by this per iteration
    "range_factor": 10.0,  # range_test: the lr's growth over the trial's max_epochs
    "beta1": 0.9,  # Adam's betas
    "beta2": 0.999,
    "record_iterations": False,  # each mini-batch's loss and lr in the epoch's metrics
    "init_from": "",  # warm start: an `hpo retrain` model folder or a torch state-dict file
}

# What the training loop itself reads; a custom trainable gets these defaults.
LOOP_DEFAULTS: Mapping[str, object] = {
    "optimizer": "adam",
    "lr": 1e-3,
    "momentum": 0.9,
    "weight_decay": 0.0,
    "l1": 0.0,
    "batch_size": 64,
    "patience": 0,
    **LOOP_COMMON_DEFAULTS,
}

LOOP_COMMON_CHOICES: Mapping[str, tuple[object, ...]] = {
    "lr_policy": LR_POLICIES,
    "record_iterations": (True, False),
}

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
    "patience": 0,  # early stopping: epochs without a better validation loss (0: off)
    **LOOP_COMMON_DEFAULTS,
}

# Allowed values of the categorical hyperparameters, checked when a study is validated.
CNN_CHOICES: Mapping[str, tuple[object, ...]] = {
    "activation": ("relu", "leaky_relu", "sigmoid", "tanh"),
    "init": ("default", "xavier", "normal"),
    "optimizer": ("sgd", "momentum", "adagrad", "adam"),
    "batch_norm": (True, False),
    **LOOP_COMMON_CHOICES,
}


RESNET_TRANSFER_DEFAULTS: Mapping[str, object] = {
    "backbone": "resnet18",
    "weights": "none",  # none | imagenet | path to a state_dict or an `hpo retrain` model folder
    "freeze": "head",
    "unfreeze_blocks": 1,  # k of last_k_blocks
    "head": "linear",
    "head_hidden": 32,
    "dropout": 0.0,
    "image_size": 0,  # resize inputs to this square size (0: keep their size)
    "crop_padding": 0,  # augmentation: random crop after this much zero padding (0: off)
    "hflip": False,
    "blur": False,
    "cache_features": True,  # head-only training: compute backbone features once per trial
    "optimizer": "adam",
    "lr": 1e-3,  # the head's learning rate
    "lr_backbone": 1e-4,
    "momentum": 0.9,
    "weight_decay": 0.0,
    "l1": 0.0,
    "batch_size": 64,
    "patience": 0,
    **LOOP_COMMON_DEFAULTS,
}

RESNET_TRANSFER_CHOICES: Mapping[str, tuple[object, ...]] = {
    "backbone": ("resnet18", "resnet50"),
    "freeze": ("head", "head+conv1+layer1.0.conv1", "all", "last_k_blocks"),
    "head": ("linear", "mlp"),
    "optimizer": CNN_CHOICES["optimizer"],
    "hflip": (True, False),
    "blur": (True, False),
    "cache_features": (True, False),
    **LOOP_COMMON_CHOICES,
}

# LeNet-5 (LeCun et al. 1998) with the switches of a batch-norm/dropout ablation. Inputs are
# always standardized by the data pipeline (input_scale "standardize"); `input_batch_norm`
# is the learned alternative.
LENET5_DEFAULTS: Mapping[str, object] = {
    "activation": "relu",  # the original used tanh
    "input_batch_norm": False,  # batch norm on the input channels, before conv1
    "batch_norm": False,  # after each hidden conv and fully connected layer
    "input_dropout": 0.0,
    "dropout": 0.0,  # after each hidden layer
    "init": "default",
    "init_std": 0.05,
    **LOOP_DEFAULTS,
}

LENET5_CHOICES: Mapping[str, tuple[object, ...]] = {
    "activation": CNN_CHOICES["activation"],
    "init": CNN_CHOICES["init"],
    "optimizer": CNN_CHOICES["optimizer"],
    "input_batch_norm": (True, False),
    "batch_norm": (True, False),
    **LOOP_COMMON_CHOICES,
}

# Multinomial logistic regression, by default full-batch gradient descent (batch_size 0:
# the whole training split is one batch); SGD is optimizer sgd with batch_size 1 or k.
LOGISTIC_DEFAULTS: Mapping[str, object] = {
    "optimizer": "sgd",
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 0.0,
    "l1": 0.0,
    "batch_size": 0,
    "patience": 0,
    **LOOP_COMMON_DEFAULTS,
}

LOGISTIC_CHOICES: Mapping[str, tuple[object, ...]] = {
    "optimizer": CNN_CHOICES["optimizer"],
    **LOOP_COMMON_CHOICES,
}


class WeightsError(ValueError):
    """Pretrained weights that are not where the study says (the message says where)."""


class DatasetError(ValueError):
    """A dataset that cannot be loaded as the study says (one line: which files go where)."""


@dataclass(frozen=True)
class TrainableInfo:
    """What the study validator and the runner need to know about a trainable."""

    name: str
    model_builder: str  # "module:function" building the torch module from (config, data info)
    defaults: Mapping[str, object]
    choices: Mapping[str, tuple[object, ...]] = field(default_factory=dict)
    metrics: tuple[str, ...] = EPOCH_METRICS
    # "standardize": inputs standardized with the training split's statistics;
    # "unit": pixels left in [0, 1] for a model that normalizes them itself.
    input_scale: str = "standardize"
    # "module:function" checking a study's fixed/searched values before any trial starts
    # (e.g. that pretrained weights exist); raises with a one-line message.
    check: str | None = None
    # hyperparameters holding file paths: made absolute before trials run in other folders
    path_params: tuple[str, ...] = ()
    # "module:function" (trainable, config, checkpoint state, data) -> named arrays that the
    # report shows for the selected trial, e.g. conv1 filters before and after training
    views: str | None = None
    # a user's "module:function" model builder: any hyperparameter name is passed to it
    custom: bool = False
    # Input ranks (without the batch dimension) the model takes: 2 for C×L signals, 3 for
    # C×H×W images; None: not declared (a custom builder), nothing is checked.
    input_ranks: tuple[int, ...] | None = None


TRAINABLES: dict[str, TrainableInfo] = {
    "cnn": TrainableInfo(
        "cnn",
        "trainables.models:build_cnn",
        CNN_DEFAULTS,
        CNN_CHOICES,
        input_ranks=(2, 3),
        path_params=("init_from",),
        views="trainables.models:batch_norm_views",
    ),
    "resnet_transfer": TrainableInfo(
        "resnet_transfer",
        "trainables.transfer:build_resnet_transfer",
        RESNET_TRANSFER_DEFAULTS,
        RESNET_TRANSFER_CHOICES,
        input_ranks=(3,),
        input_scale="unit",
        check="trainables.transfer:check_values",
        path_params=("weights", "init_from"),
        views="trainables.transfer:conv1_views",
    ),
    "lenet5": TrainableInfo(
        "lenet5",
        "trainables.models:build_lenet5",
        LENET5_DEFAULTS,
        LENET5_CHOICES,
        input_ranks=(3,),
        path_params=("init_from",),
        views="trainables.models:batch_norm_views",
    ),
    "logistic": TrainableInfo(
        "logistic",
        "trainables.models:build_logistic",
        LOGISTIC_DEFAULTS,
        LOGISTIC_CHOICES,
        input_ranks=(2, 3),
        path_params=("init_from",),
    ),
}

# Options of a dataset section besides name, fractions and split seed, in the order of
# `trainables.data.load_dataset`'s keywords: those a dataset declares it takes
# (DatasetInfo.options), then `classes`, which applies to every dataset.
DATASET_OPTIONS: tuple[str, ...] = ("data_dir", "download", "path", "image_size")
LOADER_OPTIONS: tuple[str, ...] = (*DATASET_OPTIONS, "classes")


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset: its loader, which of DATASET_OPTIONS that loader takes, and
    the rank of one sample (2: C×L signals, 3: C×H×W images)."""

    loader: str  # "module:function" returning trainables.data.RawData (all samples, unsplit)
    input_rank: int
    options: tuple[str, ...] = ()
    required: tuple[str, ...] = ()


_FILES = ("data_dir", "download")  # torchvision's files under a root folder
DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo("trainables.data:digits_arrays", 3),
    "mnist1d": DatasetInfo("trainables.data:mnist1d_arrays", 2),
    "mnist": DatasetInfo("trainables.formats:mnist_arrays", 3, _FILES),
    "fashion_mnist": DatasetInfo("trainables.formats:fashion_mnist_arrays", 3, _FILES),
    "cifar10": DatasetInfo("trainables.formats:cifar10_arrays", 3, _FILES),
    "image_folder": DatasetInfo(
        "trainables.formats:image_folder_arrays",
        3,
        ("path", "image_size"),
        required=("path", "image_size"),
    ),
}

RANK_NAMES = {2: "C×L signals", 3: "C×H×W images"}


def load_model(directory):
    """The model saved by `hpo retrain` in `directory`, in eval mode (see trainables.saved)."""
    from trainables.saved import load_model as load

    return load(directory)


# A study may name its own model builder as "package.module:function" (called with
# (config, input_shape, num_classes) and returning a torch module that the same loop
# trains). That imports and runs code, which a study file alone must never do: the user
# opts in with `--allow-custom`, which sets this variable for the driver and its workers.
ALLOW_CUSTOM_ENV = "HPO_ALLOW_CUSTOM"
CUSTOM_REFERENCE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class CustomTrainableError(ValueError):
    """A custom "module:function" trainable without the user's explicit opt-in."""


def custom_allowed() -> bool:
    return os.environ.get(ALLOW_CUSTOM_ENV) == "1"


def is_custom(name: str) -> bool:
    return name not in TRAINABLES and bool(CUSTOM_REFERENCE.match(name))


def trainable_info(name: str, *, trusted: bool = False) -> TrainableInfo:
    """The registered trainable `name`, or a custom "module:function" one when allowed
    (`trusted`: reading saved results, which runs none of its code)."""
    if name in TRAINABLES:
        return TRAINABLES[name]
    if not is_custom(name):
        raise KeyError(name)
    if not (trusted or custom_allowed()):
        raise CustomTrainableError(
            f"custom trainable {name!r} runs your code: pass --allow-custom to opt in"
        )
    return TrainableInfo(name, name, LOOP_DEFAULTS, custom=True, path_params=("init_from",))


def resolve(reference: str):
    """Import "module:function" lazily (heavy imports happen only when used)."""
    import importlib

    module_name, _, attr = reference.partition(":")
    return getattr(importlib.import_module(module_name), attr)


__all__ = [
    "ALLOW_CUSTOM_ENV",
    "CustomTrainableError",
    "LOOP_DEFAULTS",
    "LOOP_COMMON_DEFAULTS",
    "LR_POLICIES",
    "custom_allowed",
    "is_custom",
    "trainable_info",
    "DatasetError",
    "DatasetInfo",
    "WeightsError",
    "DATASETS",
    "RANK_NAMES",
    "DATASET_OPTIONS",
    "LOADER_OPTIONS",
    "EPOCH_METRICS",
    "TRAINABLES",
    "TrainableInfo",
    "load_model",
    "resolve",
]
