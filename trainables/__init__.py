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
    # trainables.objectives: cross-entropy, or ½‖output − one-hot‖² on softmax/sigmoid
    # outputs (regression datasets: squared error); a prediction within `tolerance` of
    # its target counts as correct (regression accuracy)
    "loss": "cross_entropy",
    "output": "softmax",
    "tolerance": 0.5,
    "passes": 1,  # passes over the training split per reported epoch (toy sets: many)
    "stop_at_fit": False,  # stop once a pass classifies every training sample right
    "grad_norm_every": 0,  # per-layer gradient norms every k-th iteration (0: off)
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
    "loss": ("cross_entropy", "squared_error"),
    "output": ("softmax", "sigmoid"),
    "stop_at_fit": (True, False),
}
# What a trial reports besides EPOCH_METRICS when its config asks (trainables.loop):
# stop_at_fit, and a second (regression) head; grad_norm/<layer> columns come with them.
FIT_METRICS: tuple[str, ...] = ("iterations_to_fit", "fitted")
HEAD_METRICS: tuple[str, ...] = (
    "train_regression_loss",
    "train_regression_accuracy",
    "val_regression_loss",
    "val_regression_accuracy",
)
GRAD_NORM_PREFIX = "grad_norm/"

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
    # a second, linear head regressing the dataset's targets (detection: the width) from
    # the conv features, with its own learning rate
    "regression_head": False,
    "lr_regression": 1e-3,
    **LOOP_COMMON_DEFAULTS,
}

# Allowed values of the categorical hyperparameters, checked when a study is validated.
CNN_CHOICES: Mapping[str, tuple[object, ...]] = {
    "activation": ("relu", "leaky_relu", "sigmoid", "scaled_sigmoid", "tanh"),
    "init": ("default", "xavier", "normal", "truncated_normal", "he"),
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


# A fully connected net for the gradient-pathology experiments (vanishing gradients, dying
# ReLU, toy convergence): plain gradient descent on the data as generated by default.
MLP_DEFAULTS: Mapping[str, object] = {
    **LOOP_DEFAULTS,
    "depth": 3,  # hidden layers
    "width": 32,
    "activation": "relu",
    "leaky_slope": 0.01,
    "init": "default",  # or normal / truncated_normal (init_std), xavier, he
    "init_std": 0.1,
    "bias_init": 0.0,  # every bias, for every init but default
    "optimizer": "sgd",
    "lr": 0.1,
}

MLP_CHOICES: Mapping[str, tuple[object, ...]] = {
    "activation": CNN_CHOICES["activation"],
    "init": CNN_CHOICES["init"],
    "optimizer": CNN_CHOICES["optimizer"],
    **LOOP_COMMON_CHOICES,
}

# One sigmoid neuron σ(w·x + b) evaluated, not trained, at the config's weight and bias:
# the coursework's loss-landscape exercise (trainables.pathologies.neuron_trial).
NEURON_DEFAULTS: Mapping[str, object] = {
    "weight": 0.0,
    "bias": 0.0,
    "loss": "squared_error",  # train/val loss and accuracy as for any regression
    "tolerance": 0.1,
}
NEURON_METRICS: tuple[str, ...] = ("output", "l2_loss", "l2_grad_w", "ce_loss", "ce_grad_w")

# Many independent small nets trained at once as one batched model, one seed each: the
# dying-ReLU experiment's 1,000 runs in one trial (trainables.pathologies.batched_trial).
BATCHED_MLP_DEFAULTS: Mapping[str, object] = {
    "runs": 1000,
    "depth": 10,
    "width": 2,
    "activation": "relu",
    "leaky_slope": 0.01,
    "init": "he",
    "init_std": 0.1,
    "bias_init": 0.0,
    "optimizer": "adam",
    "lr": 1e-3,
    "beta1": 0.9,
    "beta2": 0.999,
    "batch_size": 64,
    "collapse_std": 1e-3,  # a run collapsed: its outputs' std over the inputs is below this
    "tolerance": 0.5,
    "loss": "squared_error",
}
BATCHED_MLP_CHOICES: Mapping[str, tuple[object, ...]] = {
    "activation": ("relu", "leaky_relu", "tanh", "sigmoid"),
    "init": ("he", "xavier", "normal"),
    "optimizer": ("sgd", "adam"),
}
COLLAPSE_METRICS: tuple[str, ...] = (
    "collapse_fraction",
    "collapse_low",
    "collapse_high",
    "collapsed_runs",
    "runs",
    "runs_wall_s",
)


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
    # Input ranks (without the batch dimension) the model takes: 1 for feature vectors, 2
    # for C×L signals, 3 for C×H×W images; None: not declared (a custom builder).
    input_ranks: tuple[int, ...] | None = None
    # "module:function" running a trial instead of the one loop (trainables.loop.train),
    # with the same signature: for trainables that are not one model trained by SGD
    runner: str | None = None
    # "module:function" measuring a checkpoint on a split instead of the loop's evaluate
    # (trainable, config, state, data, split) -> {"<split>_loss", "<split>_accuracy"}
    evaluator: str | None = None
    # which kinds of data it takes: "classification" (int labels), "regression" (float)
    tasks: tuple[str, ...] = ("classification",)
    # a user's own Ray Tune function trainable `train(config)` (trainables.user_function):
    # it loads its own data and reports any metrics; hpo runs it as it is
    function: bool = False


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
        input_ranks=(1, 2, 3),
        path_params=("init_from",),
    ),
    "mlp": TrainableInfo(
        "mlp",
        "trainables.models:build_mlp",
        MLP_DEFAULTS,
        MLP_CHOICES,
        metrics=(*EPOCH_METRICS, *FIT_METRICS),
        input_ranks=(1, 2, 3),
        path_params=("init_from",),
        views="trainables.pathologies:mlp_views",
        tasks=("classification", "regression"),
    ),
    "neuron": TrainableInfo(
        "neuron",
        "trainables.pathologies:build_neuron",
        NEURON_DEFAULTS,
        metrics=(*EPOCH_METRICS, *NEURON_METRICS),
        input_ranks=(1,),
        input_scale="unit",
        runner="trainables.pathologies:neuron_trial",
        tasks=("regression",),
    ),
    "batched_mlp": TrainableInfo(
        "batched_mlp",
        "trainables.pathologies:build_batched_mlp",
        BATCHED_MLP_DEFAULTS,
        BATCHED_MLP_CHOICES,
        metrics=(*EPOCH_METRICS, *COLLAPSE_METRICS),
        input_ranks=(1,),
        input_scale="unit",
        runner="trainables.pathologies:batched_trial",
        evaluator="trainables.pathologies:evaluate_batched",
        views="trainables.pathologies:batched_views",
        tasks=("regression",),
    ),
}

# Options of a dataset section besides name, fractions and split seed, in the order of
# `trainables.data.load_dataset`'s keywords: those a dataset declares it takes
# (DatasetInfo.options), then `classes` and `labels_per_class`, which apply to every
# classification dataset.
DATASET_OPTIONS: tuple[str, ...] = ("data_dir", "download", "path", "image_size")
LOADER_OPTIONS: tuple[str, ...] = (*DATASET_OPTIONS, "classes", "labels_per_class")


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset: its loader, which of DATASET_OPTIONS that loader takes, and
    the rank of one sample (2: C×L signals, 3: C×H×W images)."""

    loader: str  # "module:function" returning trainables.data.RawData (all samples, unsplit)
    input_rank: int
    options: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    task: str = "classification"  # or "regression": float targets, squared error
    head_targets: bool = False  # carries targets for a second, regression head (width)
    splittable: bool = True  # False: too few samples; studies set both fractions to 0


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
    # toy sets of the gradient-pathology studies (trainables.toy), generated locally
    "moons": DatasetInfo("trainables.toy:moons_arrays", 1),
    "spirals": DatasetInfo("trainables.toy:spirals_arrays", 1),
    "random4x4": DatasetInfo("trainables.toy:random4x4_arrays", 3),
    "lines": DatasetInfo("trainables.toy:lines_arrays", 3),
    "detection": DatasetInfo("trainables.toy:detection_arrays", 3, head_targets=True),
    "fn_abs": DatasetInfo("trainables.toy:abs_arrays", 1, task="regression"),
    "fn_xsin": DatasetInfo("trainables.toy:xsin_arrays", 1, task="regression"),
    "fn_step_sine": DatasetInfo("trainables.toy:step_sine_arrays", 1, task="regression"),
    "neuron_point": DatasetInfo(
        "trainables.toy:neuron_point_arrays", 1, task="regression", splittable=False
    ),
}

RANK_NAMES = {1: "feature vectors", 2: "C×L signals", 3: "C×H×W images"}


def data_conflict(trainable: str, dataset: str, values: Mapping[str, object]) -> str | None:
    """Why `trainable` with hyperparameter `values` (the config, or every value a study may
    give) cannot train on `dataset`, as "<field>: what", or None. Plain data: the study
    validator calls it before any trial starts."""
    info, data = trainable_info(trainable, trusted=True), DATASETS[dataset]
    if data.task not in info.tasks:
        takes = " or ".join(info.tasks)
        return f"dataset.name: {dataset} is a {data.task} dataset; {trainable} takes {takes}"
    losses = values.get("loss", info.defaults.get("loss"))
    losses = losses if isinstance(losses, (list, tuple)) else [losses]
    if data.task == "regression" and "loss" in info.defaults and "cross_entropy" in losses:
        return f"loss: {dataset} is a regression dataset: set loss: squared_error"
    heads = values.get("regression_head", False)
    heads = heads if isinstance(heads, (list, tuple)) else [heads]
    if any(heads) and not data.head_targets:
        return f"regression_head: {dataset} has no regression targets (detection has)"
    return None


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


def trainable_info(name: str, *, trusted: bool = False, function: bool = False) -> TrainableInfo:
    """The registered trainable `name`, or a custom "module:function" one when allowed
    (`trusted`: reading saved results, which runs none of its code): a model builder that
    the one loop trains, or (`function`: a study without a dataset) a Ray Tune function
    trainable run as it is."""
    if name in TRAINABLES:
        return TRAINABLES[name]
    if not is_custom(name):
        raise KeyError(name)
    if not (trusted or custom_allowed()):
        raise CustomTrainableError(
            f"custom trainable {name!r} runs your code: pass --allow-custom to opt in"
        )
    if function:
        return TrainableInfo(name, "", {}, metrics=(), custom=True, function=True)
    return TrainableInfo(name, name, LOOP_DEFAULTS, custom=True, path_params=("init_from",))


def hyperparameter_columns(config: Mapping[str, object]) -> dict[str, object]:
    """The hp/<name> result columns of a config's plain values: the hyperparameters in
    force at each epoch (PBT changes a trial's config while it runs, and Tune's
    progress.csv keeps no config). `proposed_by` is always there: progress.csv takes its
    columns from a trial's first result, and PBT's label only comes later."""
    config = {PROPOSED_BY: "", **config}
    return {
        f"{HYPERPARAMETER_PREFIX}{key}": value
        for key, value in config.items()
        if isinstance(value, (bool, int, float, str))
    }


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
    "hyperparameter_columns",
    "trainable_info",
    "DatasetError",
    "DatasetInfo",
    "WeightsError",
    "DATASETS",
    "RANK_NAMES",
    "data_conflict",
    "DATASET_OPTIONS",
    "LOADER_OPTIONS",
    "EPOCH_METRICS",
    "TRAINABLES",
    "TrainableInfo",
    "load_model",
    "resolve",
]
