"""Model builders. They know nothing of training: config in, torch module out."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn


class ScaledSigmoid(nn.Module):
    """1 / (1 + e^(−2z)): a sigmoid as steep as tanh at 0 (tanh(z) = 2σ(2z) − 1)."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(2 * z)


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "sigmoid": nn.Sigmoid,
    "scaled_sigmoid": ScaledSigmoid,
    "tanh": nn.Tanh,
}


def make_activation(config: Mapping) -> nn.Module:
    """The config's activation; leaky_relu takes its negative slope from `leaky_slope`."""
    name = str(config["activation"])
    if name == "leaky_relu":
        return nn.LeakyReLU(float(config.get("leaky_slope", 0.01)))
    return ACTIVATIONS[name]()


def build_cnn(config: Mapping, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """Conv blocks (conv → [batch norm] → activation → max-pool) then a two-layer head.

    Conv1d for 1-D signals (input C×L), Conv2d for images (C×H×W). Channels double with
    each block; pooling stops once the spatial size would drop below 1.
    """
    spatial_dims = len(input_shape) - 1
    if spatial_dims not in (1, 2):
        raise ValueError(f"cnn expects C×L or C×H×W inputs, got shape {tuple(input_shape)}")
    conv = nn.Conv1d if spatial_dims == 1 else nn.Conv2d
    norm = nn.BatchNorm1d if spatial_dims == 1 else nn.BatchNorm2d
    pool = nn.MaxPool1d if spatial_dims == 1 else nn.MaxPool2d
    activation = ACTIVATIONS[str(config["activation"])]
    kernel = int(config["kernel_size"])

    layers: list[nn.Module] = []
    in_channels, size = int(input_shape[0]), min(input_shape[1:])
    for i in range(int(config["conv_layers"])):
        out_channels = int(config["channels"]) * 2**i
        layers.append(conv(in_channels, out_channels, kernel, padding=kernel // 2))
        if config["batch_norm"]:
            layers.append(norm(out_channels))
        layers.append(activation())
        if size >= 2:
            layers.append(pool(2))
            size //= 2
        in_channels = out_channels
    features = nn.Sequential(*layers)
    with torch.no_grad():
        flat = features(torch.zeros(1, *input_shape)).numel()
    hidden = int(config["hidden_units"])
    model = nn.Sequential(
        features,
        nn.Flatten(),
        nn.Dropout(float(config["dropout"])),
        nn.Linear(flat, hidden),
        activation(),
        nn.Dropout(float(config["dropout"])),
        nn.Linear(hidden, num_classes),
    )
    if config.get("regression_head"):
        model = TwoHeads(model, nn.Linear(flat, 1), float(config["lr_regression"]))
    initialize(model, str(config["init"]), float(config["init_std"]))
    return model


class TwoHeads(nn.Module):
    """A classifier plus a linear regression head on its flattened features (e.g. an
    object's width), trained with its own learning rate; returns (logits, regression)."""

    def __init__(self, classifier: nn.Sequential, head: nn.Linear, lr_head: float) -> None:
        super().__init__()
        self.classifier, self.head, self.lr_head = classifier, head, lr_head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.classifier[1](self.classifier[0](x))  # conv blocks, flatten
        return self.classifier[2:](features), self.head(features)

    def param_groups(self, config: Mapping) -> list[dict]:
        """The loop's optimizer takes the head's own lr from here (make_optimizer)."""
        return [
            {"params": list(self.classifier.parameters())},
            {"params": list(self.head.parameters()), "lr": self.lr_head},
        ]


def initialize(model: nn.Module, scheme: str, std: float, bias: float = 0.0) -> None:
    """`default` keeps PyTorch's own initialization; the others reset every weight
    (normal or truncated normal with `std`, truncated at 2 std; Glorot's xavier uniform;
    He's normal for ReLUs) and set every bias to `bias`."""
    if scheme == "default":
        return
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            if scheme == "xavier":
                nn.init.xavier_uniform_(module.weight)
            elif scheme == "normal":
                nn.init.normal_(module.weight, mean=0.0, std=std)
            elif scheme == "truncated_normal":
                nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
            elif scheme == "he":
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            else:
                raise ValueError(f"unknown init {scheme!r}")
            nn.init.constant_(module.bias, bias)


def build_mlp(config: Mapping, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """A fully connected net on the flattened input: `depth` hidden layers of `width`
    units ("fc1", "act1", …), then the output layer ("fc<depth+1>")."""
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    features = math.prod(input_shape)
    depth, width = int(config["depth"]), int(config["width"])
    for i in range(1, depth + 1):
        layers[f"fc{i}"] = nn.Linear(features, width)
        layers[f"act{i}"] = make_activation(config)
        features = width
    layers[f"fc{depth + 1}"] = nn.Linear(features, num_classes)
    model = nn.Sequential(layers)
    initialize(model, str(config["init"]), float(config["init_std"]), float(config["bias_init"]))
    return model


def build_lenet5(config: Mapping, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """LeNet-5: conv(6, 5×5) → pool → conv(16, 5×5) → pool → fc 120 → fc 84 → classes.

    conv1 pads by 2 (28×28 MNIST as the original's 32×32); conv2 pads only where the map
    is smaller than its kernel (8×8 digits), and pooling stops at 1×1. Layers have stable
    names ("input_bn", "conv1", "bn1", …, "fc1", "bn3", …) so that a layer's parameters are
    found by name in a state dict.
    """
    if len(input_shape) != 3:
        raise ValueError(f"lenet5 expects C×H×W images, got shape {tuple(input_shape)}")
    activation = ACTIVATIONS[str(config["activation"])]
    batch_norm, dropout = bool(config["batch_norm"]), float(config["dropout"])
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    channels, sizes = int(input_shape[0]), [int(n) for n in input_shape[1:]]
    if config["input_batch_norm"]:
        layers["input_bn"] = nn.BatchNorm2d(channels)
    if float(config["input_dropout"]) > 0:
        layers["input_dropout"] = nn.Dropout(float(config["input_dropout"]))
    for i, out_channels in enumerate((6, 16), start=1):
        padding = 2 if i == 1 or min(sizes) < 5 else 0
        layers[f"conv{i}"] = nn.Conv2d(channels, out_channels, 5, padding=padding)
        sizes = [n + 2 * padding - 4 for n in sizes]
        hidden_layer(layers, i, nn.BatchNorm2d(out_channels) if batch_norm else None, activation)
        if min(sizes) >= 2:
            layers[f"pool{i}"] = nn.MaxPool2d(2)
            sizes = [n // 2 for n in sizes]
        if dropout > 0:
            layers[f"dropout{i}"] = nn.Dropout(dropout)
        channels = out_channels
    layers["flatten"] = nn.Flatten()
    features = channels * math.prod(sizes)
    for i, units in enumerate((120, 84), start=3):
        layers[f"fc{i - 2}"] = nn.Linear(features, units)
        hidden_layer(layers, i, nn.BatchNorm1d(units) if batch_norm else None, activation)
        if dropout > 0:
            layers[f"dropout{i}"] = nn.Dropout(dropout)
        features = units
    layers["fc3"] = nn.Linear(features, num_classes)
    model = nn.Sequential(layers)
    initialize(model, str(config["init"]), float(config["init_std"]))
    return model


def hidden_layer(
    layers: OrderedDict[str, nn.Module],
    i: int,
    norm: nn.Module | None,
    activation: type[nn.Module],
) -> None:
    """The i-th hidden layer's optional batch norm ("bn<i>") and activation ("act<i>")."""
    if norm is not None:
        layers[f"bn{i}"] = norm
    layers[f"act{i}"] = activation()


def build_logistic(config: Mapping, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """Multinomial logistic regression: one linear layer on the flattened input, whose
    cross-entropy loss (the loop's) is the mean negative log-likelihood."""
    return nn.Sequential(
        OrderedDict(flatten=nn.Flatten(), linear=nn.Linear(math.prod(input_shape), num_classes))
    )


def batch_norm_views(
    trainable: str, config: Mapping, state: Mapping, data
) -> dict[str, np.ndarray]:
    """Every batch-norm layer's learned scale and shift, in model order, as arrays
    `bn_gamma/<layer>` and `bn_beta/<layer>`; empty without batch norm.

    A layer is named after the layer it normalizes: "input" (the input channels), "conv<k>"
    or "fc<k>" (the k-th convolution or linear layer), so plots read the same for any model.
    """
    from trainables.loop import build_model

    model = build_model(trainable, config, data)
    model.load_state_dict(state["model"])
    views: dict[str, np.ndarray] = {}
    for name, norm in batch_norm_layers(model):
        views[f"bn_gamma/{name}"] = norm.weight.detach().cpu().numpy().astype(np.float32)
        views[f"bn_beta/{name}"] = norm.bias.detach().cpu().numpy().astype(np.float32)
    return views


def batch_norm_layers(model: nn.Module) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    """The model's affine batch-norm layers in order, each named after the layer before it
    (its module path where two follow the same layer)."""
    found: list[tuple[str, nn.modules.batchnorm._BatchNorm]] = []
    after, counts = "input", {"conv": 0, "fc": 0}
    for path, module in model.named_modules():
        kind = layer_kind(module)
        if kind:
            counts[kind] += 1
            after = f"{kind}{counts[kind]}"
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
            taken = any(name == after for name, _ in found)
            found.append((path if taken else after, module))
    return found


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Each convolution's and linear layer's weight in model order, named conv1…, fc1…"""
    found, counts = [], {"conv": 0, "fc": 0}
    for module in model.modules():
        kind = layer_kind(module)
        if kind:
            counts[kind] += 1
            found.append((f"{kind}{counts[kind]}", module.weight))
    return found


def layer_kind(module: nn.Module) -> str | None:
    if isinstance(module, nn.modules.conv._ConvNd):
        return "conv"
    return "fc" if isinstance(module, nn.Linear) else None
