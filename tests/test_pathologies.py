"""The gradient-pathology pieces: toy data, objectives, gradient norms, fitting, one
neuron, and many small nets batched as one (trainables.toy/objectives/pathologies)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import ListReporter
from trainables import data_conflict, toy
from trainables.data import Split, load_dataset
from trainables.loop import GradNorms, full_config, run, train_epoch
from trainables.objectives import Objective
from trainables.pathologies import (
    batched_views,
    build_batched_mlp,
    build_neuron,
    collapsed,
    mlp_config,
    mlp_views,
    neuron_quantities,
    run_seeds,
    wilson_interval,
)

GENERATORS = [
    toy.moons_arrays,
    toy.spirals_arrays,
    toy.random4x4_arrays,
    toy.lines_arrays,
    toy.detection_arrays,
    toy.abs_arrays,
    toy.xsin_arrays,
    toy.step_sine_arrays,
]


@pytest.mark.parametrize("generate", GENERATORS, ids=lambda g: g.__name__)
def test_toy_sets_are_the_same_on_every_call(generate):
    first, second = generate(), generate()
    assert np.array_equal(first.x, second.x) and np.array_equal(first.y, second.y)
    assert first.x.dtype == np.float32 and np.isfinite(first.x).all()


def test_toy_sets_have_their_documented_shapes():
    assert toy.random4x4_arrays().x.shape == (64, 1, 4, 4)
    assert set(np.unique(toy.random4x4_arrays().x)) == {0.0, 1.0}
    lines = toy.lines_arrays()
    horizontal = lines.x[lines.y == 0][:, 0]  # one full row of ones in each
    assert ((horizontal > 0.99).sum(axis=2) == 8).any(axis=1).all()
    detection = toy.detection_arrays()
    assert detection.x.shape == (64, 1, 8, 8) and detection.targets.shape == (64, 1)
    assert (detection.targets[detection.y == 0] == 0).all()
    assert set(detection.targets[detection.y == 1, 0]) <= {2.0, 3.0, 4.0, 5.0, 6.0}
    abs_set = toy.abs_arrays()
    assert np.abs(abs_set.x).max() <= math.sqrt(7) and np.allclose(abs_set.y, np.abs(abs_set.x))


def test_fractions_of_zero_make_every_split_the_whole_set():
    data = load_dataset("random4x4", 0.0, 0.0, 0, scale="unit")
    assert data.sizes() == {"train": 64, "val": 64, "test": 64}
    assert torch.equal(data.train.x, data.val.x)


def test_a_regression_dataset_splits_without_classes():
    data = load_dataset("fn_abs", 0.2, 0.2, 0, scale="unit")
    assert data.regression and data.num_classes == 1
    assert data.train.y.dtype == torch.float32 and data.sizes()["train"] == 3000


def test_squared_error_is_half_the_squared_distance_to_one_hot():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    batch = Split(torch.zeros(2, 1), torch.tensor([0, 0]))
    p = torch.softmax(logits, 1)
    expected = 0.5 * ((p - torch.tensor([[1.0, 0.0], [1.0, 0.0]])) ** 2).sum(1)
    score = Objective("squared_error", "softmax").score(logits, batch)
    assert torch.allclose(score.loss, expected.mean()) and int(score.correct) == 1
    sigmoid = Objective("squared_error", "sigmoid").score(logits, batch)
    expected = 0.5 * ((torch.sigmoid(logits) - torch.tensor([[1.0, 0.0], [1.0, 0.0]])) ** 2)
    assert torch.allclose(sigmoid.loss, expected.sum(1).mean())


def test_regression_and_a_second_head_count_predictions_within_the_tolerance():
    batch = Split(torch.zeros(3, 1), torch.tensor([0, 1, 1]), torch.tensor([[2.0], [3.0], [4.0]]))
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    widths = torch.tensor([[2.4], [3.6], [4.0]])
    score = Objective(tolerance=0.5).score((logits, widths), batch)
    assert int(score.correct) == 2 and int(score.extra["regression_correct"]) == 2
    assert float(score.extra["regression_loss"]) == pytest.approx(0.5 * (0.16 + 0.36))
    regression = Split(torch.zeros(2, 1), torch.tensor([[1.0], [2.0]]))
    plain = Objective("squared_error", tolerance=0.1).score(
        torch.tensor([[1.05], [2.5]]), regression
    )
    assert int(plain.correct) == 1


def test_gradient_norms_per_layer_equal_a_hand_computation():
    """y = w2·relu(W1·x): ∂L/∂W1 and ∂L/∂w2 by hand, for L = ½(y − t)²."""
    model = nn.Sequential(nn.Linear(2, 2, bias=True), nn.ReLU(), nn.Linear(2, 1, bias=True))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 2.0], [-1.0, 0.5]]))
        model[0].bias.zero_()
        model[2].weight.copy_(torch.tensor([[3.0, -2.0]]))
        model[2].bias.zero_()
    x, t = torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0]])
    norms = GradNorms(model, every=1)
    loss = 0.5 * (model(x) - t).pow(2).sum()
    loss.backward()
    norms.after_backward()
    hidden = torch.tensor([3.0, 0.0])  # relu([3, -0.5])
    error = float(3.0 * 3.0 - 1.0)  # y − t = 9 − 1
    grad_w2 = error * hidden
    grad_w1 = error * torch.outer(torch.tensor([3.0, 0.0]), x[0])  # w2 masked by relu'
    metrics = norms.metrics()
    assert metrics["grad_norm/fc1"] == pytest.approx(float(grad_w1.norm()))
    assert metrics["grad_norm/fc2"] == pytest.approx(float(grad_w2.norm()))
    assert norms.metrics() == {}  # a new epoch starts empty


def test_the_loop_reports_gradient_norms_and_iterations_to_fit():
    data = load_dataset("random4x4", 0.0, 0.0, 0, scale="unit")
    reporter = ListReporter()
    config = {"stop_at_fit": True, "passes": 50, "batch_size": 0, "lr": 0.5, "grad_norm_every": 5}
    run("mlp", {**config, "width": 64, "activation": "relu"}, data, reporter, max_epochs=20)
    last = reporter.rows[-1]
    assert last["fitted"] and last["train_accuracy"] == 1.0 and last["early_stopped"]
    assert 0 < last["iterations_to_fit"] <= len(reporter.rows) * 50
    assert {"grad_norm/fc1", "grad_norm/fc4"} <= set(last)
    unfit = ListReporter()
    run("mlp", {**config, "lr": 0.0}, data, unfit, max_epochs=2)
    assert not unfit.rows[-1]["fitted"] and unfit.rows[-1]["iterations_to_fit"] == 100


def test_a_two_head_cnn_learns_the_width_with_its_own_learning_rate():
    data = load_dataset("detection", 0.0, 0.0, 0, scale="unit")
    reporter = ListReporter()
    config = {"regression_head": True, "lr_regression": 0.01, "lr": 0.01, "batch_size": 16}
    run("cnn", config, data, reporter, max_epochs=30)
    first, last = reporter.rows[0], reporter.rows[-1]
    assert last["train_regression_loss"] < first["train_regression_loss"] / 2
    assert {"val_regression_accuracy", "val_regression_loss"} <= set(last)


def test_one_neuron_matches_the_formulas():
    w, b, t = 2.0, -1.0, 0.5
    neuron = build_neuron({"weight": w, "bias": b}, (1,), 1)
    q = neuron_quantities(neuron, torch.ones(1, 1), torch.full((1, 1), t))
    s = 1 / (1 + math.exp(-(w + b)))
    assert q["output"] == pytest.approx(s)
    assert q["l2_loss"] == pytest.approx(0.5 * (s - t) ** 2)
    assert q["l2_grad_w"] == pytest.approx((s - t) * s * (1 - s), rel=1e-5)
    assert q["ce_loss"] == pytest.approx(-(t * math.log(s) + (1 - t) * math.log(1 - s)), rel=1e-5)
    assert q["ce_grad_w"] == pytest.approx(s - t, rel=1e-5)


def test_collapse_is_a_constant_function_over_the_inputs():
    x = torch.linspace(-1, 1, 50)[None, :, None].expand(3, 50, 1)
    outputs = torch.stack([torch.full((50, 1), 0.7), x[1] * 2, x[2] * 1e-5])
    assert collapsed(outputs, 1e-3).tolist() == [True, False, True]
    assert collapsed(outputs, 1e-7).tolist() == [True, False, False]
    low, high = wilson_interval(95, 100)
    assert low < 0.95 < high and low > 0.88 and high < 0.98


def test_batched_runs_match_single_runs_with_the_same_seeds():
    """Run r of a batched trial trains exactly as the mlp trainable alone with its seed."""
    data = load_dataset("fn_abs", 0.2, 0.2, 0, scale="unit")
    data = type(data)(
        data.name, *(Split(s.x[:256], s.y[:256]) for s in (data.train, data.val, data.test)), 1
    )
    config = {"runs": 4, "depth": 3, "width": 3, "batch_size": 64, "lr": 0.01, "seed": 2}
    batched = ListReporter()
    run("batched_mlp", config, data, batched, max_epochs=2)
    model = build_batched_mlp(full_config("batched_mlp", config), (1,), 1, 2)
    model.load_state_dict(batched.states[-1]["model"])
    for r, seed in enumerate(run_seeds(2, 4)):
        single = ListReporter()
        run(
            "mlp",
            {**mlp_config(full_config("batched_mlp", config)), "seed": seed},
            data,
            single,
            max_epochs=2,
        )
        weights = single.states[-1]["model"]
        assert torch.allclose(weights["fc1.weight"].T, model.weights[0][r], atol=1e-6)
        assert torch.allclose(weights["fc4.weight"].T, model.weights[3][r], atol=1e-6)
    losses = [row["train_loss"] for row in batched.rows]
    assert all(math.isfinite(v) for v in losses)


def test_deep_narrow_relu_nets_mostly_collapse_and_views_give_each_runs_std():
    data = load_dataset("fn_abs", 0.2, 0.2, 0, scale="unit")
    config = {"runs": 200, "batch_size": 256}
    reporter = ListReporter()
    run("batched_mlp", config, data, reporter, max_epochs=1)
    row = reporter.rows[-1]
    assert (
        row["runs"] == 200
        and row["collapse_low"] <= row["collapse_fraction"] <= row["collapse_high"]
    )
    assert row["collapse_fraction"] > 0.7  # Lu et al.: over 90 % at depth 10, width 2
    views = batched_views("batched_mlp", config, reporter.states[-1], data)
    stds = views["runs/output_std"]
    assert stds.shape == (200,) and (stds < 1e-3).sum() == row["collapsed_runs"]


def test_mlp_views_give_layer_gradients_and_a_decision_boundary():
    data = load_dataset("moons", 0.2, 0.2, 0, scale="unit")
    reporter = ListReporter()
    run("mlp", {"depth": 2, "width": 8}, data, reporter, max_epochs=1)
    views = mlp_views("mlp", {"depth": 2, "width": 8}, reporter.states[-1], data)
    assert {"grad_init/fc1", "grad_init/fc3", "grad_trained/fc2"} <= set(views)
    assert views["grad_init/fc1"].shape == (16,)
    assert views["boundary/probability"].shape == (100, 100)
    assert ((views["boundary/probability"] >= 0) & (views["boundary/probability"] <= 1)).all()


def test_pairs_that_cannot_train_say_why():
    assert data_conflict("mlp", "fn_abs", {}).startswith("loss:")
    assert data_conflict("mlp", "fn_abs", {"loss": "squared_error"}) is None
    assert data_conflict("cnn", "digits", {"regression_head": True}).startswith("regression_head:")
    assert data_conflict("cnn", "detection", {"regression_head": [True, False]}) is None
    assert data_conflict("neuron", "digits", {}).startswith("dataset.name:")
    assert data_conflict("cnn", "fn_abs", {}).startswith("dataset.name:")


def test_train_epoch_still_returns_loss_and_accuracy_for_classification():
    data = load_dataset("moons", 0.2, 0.2, 0, scale="unit")
    from trainables.loop import build_model, make_optimizer

    config = full_config("mlp", {})
    model = build_model("mlp", config, data)
    loss, accuracy = train_epoch(model, make_optimizer(model, config), data.train, config)
    assert math.isfinite(loss) and 0 <= accuracy <= 1
