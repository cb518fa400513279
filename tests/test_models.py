from __future__ import annotations

import pytest
import torch
from torch import nn

from trainables import CNN_DEFAULTS
from trainables.models import build_cnn


def cnn(**overrides):
    return {**CNN_DEFAULTS, **overrides}


def count(model: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def test_images_get_conv2d_and_signals_conv1d():
    image_model = build_cnn(cnn(), (1, 8, 8), 10)
    signal_model = build_cnn(cnn(), (1, 40), 10)
    assert count(image_model, nn.Conv2d) == 2 and count(image_model, nn.Conv1d) == 0
    assert count(signal_model, nn.Conv1d) == 2 and count(signal_model, nn.Conv2d) == 0
    assert image_model(torch.zeros(5, 1, 8, 8)).shape == (5, 10)
    assert signal_model(torch.zeros(5, 1, 40)).shape == (5, 10)


@pytest.mark.parametrize("layers", [1, 2, 3, 4])
def test_conv_layers_each_followed_by_pooling_while_possible(layers):
    model = build_cnn(cnn(conv_layers=layers, channels=4), (1, 8, 8), 10)
    assert count(model, nn.Conv2d) == layers
    assert count(model, nn.MaxPool2d) == min(layers, 3)  # 8 -> 4 -> 2 -> 1, then no room
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4 * 2**i for i in range(layers)]
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_batch_norm_dropout_and_activation_switches():
    model = build_cnn(cnn(batch_norm=True, dropout=0.3, activation="tanh"), (1, 8, 8), 10)
    assert count(model, nn.BatchNorm2d) == 2
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.3, 0.3]
    assert count(model, nn.Tanh) == 3 and count(model, nn.ReLU) == 0
    assert count(build_cnn(cnn(), (1, 8, 8), 10), nn.BatchNorm2d) == 0


def test_initialization_schemes():
    torch.manual_seed(0)
    normal = build_cnn(cnn(init="normal", init_std=0.01, channels=32), (1, 8, 8), 10)
    weights = torch.cat(
        [m.weight.detach().flatten() for m in normal.modules() if isinstance(m, nn.Linear)]
    )
    assert abs(float(weights.std()) - 0.01) < 0.002
    convs = [m for m in normal.modules() if isinstance(m, nn.Conv2d)]
    assert all(float(m.bias.detach().abs().sum()) == 0 for m in convs)
    xavier = build_cnn(cnn(init="xavier"), (1, 8, 8), 10)
    head = [m for m in xavier.modules() if isinstance(m, nn.Linear)][-1]
    bound = (6 / (head.in_features + head.out_features)) ** 0.5
    assert float(head.weight.detach().abs().max()) <= bound
