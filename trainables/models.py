"""Model builders. They know nothing of training: config in, torch module out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
}


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
    initialize(model, str(config["init"]), float(config["init_std"]))
    return model


def initialize(model: nn.Module, scheme: str, std: float) -> None:
    """`default` keeps PyTorch's own initialization; the others reset weights, zero biases."""
    if scheme == "default":
        return
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            if scheme == "xavier":
                nn.init.xavier_uniform_(module.weight)
            elif scheme == "normal":
                nn.init.normal_(module.weight, mean=0.0, std=std)
            else:
                raise ValueError(f"unknown init {scheme!r}")
            nn.init.zeros_(module.bias)
