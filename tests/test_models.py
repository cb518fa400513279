from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from trainables import CNN_DEFAULTS, LENET5_DEFAULTS, LOGISTIC_DEFAULTS
from trainables.data import DataBundle, Split
from trainables.models import batch_norm_views, build_cnn, build_lenet5, build_logistic


def cnn(**overrides):
    return {**CNN_DEFAULTS, **overrides}


def lenet5(**overrides):
    return {**LENET5_DEFAULTS, **overrides}


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


@pytest.mark.parametrize(
    ("shape", "features"), [((1, 8, 8), 16 * 2 * 2), ((1, 28, 28), 16 * 5 * 5), ((3, 32, 32), 576)]
)
def test_lenet5_is_two_convs_and_three_linear_layers_on_any_image_size(shape, features):
    model = build_lenet5(lenet5(), shape, 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(6, (5, 5)), (16, (5, 5))]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (features, 120),
        (120, 84),
        (84, 10),
    ]
    assert model(torch.zeros(2, *shape)).shape == (2, 10)


def test_lenet5_switches_add_named_layers():
    plain = build_lenet5(lenet5(), (1, 8, 8), 10)
    assert count(plain, nn.modules.batchnorm._BatchNorm) == 0 and count(plain, nn.Dropout) == 0
    model = build_lenet5(
        lenet5(
            input_batch_norm=True,
            batch_norm=True,
            input_dropout=0.1,
            dropout=0.3,
            activation="tanh",
        ),
        (1, 8, 8),
        10,
    )
    names = [name for name, _ in model.named_children()]
    assert names[:4] == ["input_bn", "input_dropout", "conv1", "bn1"]
    assert {"bn2", "fc1", "bn3", "fc2", "bn4", "fc3"} <= set(names)
    assert isinstance(model.bn3, nn.BatchNorm1d) and model.bn4.num_features == 84
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.1] + [0.3] * 4
    assert count(model, nn.Tanh) == 4 and count(model, nn.ReLU) == 0
    assert "input_bn.weight" in model.state_dict()


def test_logistic_is_one_linear_layer_for_signals_and_images():
    for shape in [(1, 40), (1, 8, 8)]:
        model = build_logistic(LOGISTIC_DEFAULTS, shape, 10)
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        assert len(linears) == 1 and linears[0].in_features == math.prod(shape)
        assert model(torch.zeros(3, *shape)).shape == (3, 10)


def tiny_images(shape=(1, 8, 8)) -> DataBundle:
    split = Split(torch.zeros(4, *shape), torch.arange(4) % 2)
    return DataBundle("tiny", split, split, split, 10)


def test_batch_norm_views_give_each_layers_gamma_and_beta_in_model_order():
    from trainables.loop import build_model

    config = {"input_batch_norm": True, "batch_norm": True}
    model = build_model("lenet5", config, tiny_images())
    state = model.state_dict()
    sizes = {"input_bn": 1, "bn1": 6, "bn2": 16, "bn3": 120, "bn4": 84}
    for i, (module, size) in enumerate(sizes.items()):
        state[f"{module}.weight"] = torch.full((size,), float(i + 1))
        state[f"{module}.bias"] = torch.arange(size, dtype=torch.float32) - i
    views = batch_norm_views("lenet5", config, {"model": state}, tiny_images())
    layers = ["input", "conv1", "conv2", "fc1", "fc2"]
    assert list(views) == [f"bn_{p}/{layer}" for layer in layers for p in ("gamma", "beta")]
    for i, (layer, size) in enumerate(zip(layers, sizes.values(), strict=True)):
        np.testing.assert_array_equal(views[f"bn_gamma/{layer}"], np.full(size, i + 1.0))
        np.testing.assert_array_equal(views[f"bn_beta/{layer}"], np.arange(size) - i)
        assert views[f"bn_gamma/{layer}"].dtype == np.float32


def test_batch_norm_views_of_cnn_and_of_models_without_batch_norm():
    from trainables.loop import build_model

    data = tiny_images()
    for trainable, config in [("cnn", {}), ("lenet5", {})]:
        state = {"model": build_model(trainable, config, data).state_dict()}
        assert batch_norm_views(trainable, config, state, data) == {}
    config = {"batch_norm": True, "conv_layers": 3, "channels": 2}
    state = {"model": build_model("cnn", config, data).state_dict()}
    views = batch_norm_views("cnn", config, state, data)
    assert [k for k in views if k.startswith("bn_gamma/")] == [
        "bn_gamma/conv1",
        "bn_gamma/conv2",
        "bn_gamma/conv3",
    ]
    assert [len(views[f"bn_beta/conv{i}"]) for i in (1, 2, 3)] == [2, 4, 8]
