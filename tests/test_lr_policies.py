"""Learning-rate policies, per-iteration records and full-batch descent in the one loop."""

from __future__ import annotations

import io
import math

import pytest
import torch

from tests.conftest import ListReporter
from tests.contracts import small
from trainables import LOOP_COMMON_DEFAULTS, LR_POLICIES, TRAINABLES
from trainables.data import load_dataset
from trainables.loop import make_scheduler, train

BATCHES = 8  # per epoch: 64 training samples in batches of 8


@pytest.fixture(scope="module")
def digits():
    return small(load_dataset("digits", 0.2, 0.2, seed=0), 64)


class SavingReporter(ListReporter):
    """Keeps each checkpoint as Tune does: saved when reported (torch.save), loaded back
    weights-only; a bare state_dict would follow the live model."""

    def report(self, metrics: dict, state: dict | None) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        buffer.seek(0)
        super().report(metrics, torch.load(buffer, weights_only=True))


def run(data, epochs: int, trainable: str = "cnn", state: dict | None = None, **config):
    reporter = SavingReporter(state)
    config = {"batch_size": 8, "record_iterations": True, "seed": 3, **config}
    train(trainable, config, data, reporter, max_epochs=epochs, threads=1)
    return reporter


def lrs(reporter: ListReporter) -> list[float]:
    return [lr for row in reporter.rows for lr in row["iteration_lr"]]


# Trainables trained by the one loop (not by a runner of their own, e.g. batched nets).
LOOP_TRAINABLES = [name for name, info in TRAINABLES.items() if info.runner is None]


@pytest.mark.parametrize("name", LOOP_TRAINABLES)
def test_every_trainable_has_the_loop_hyperparameters_and_their_choices(name):
    info = TRAINABLES[name]
    assert LOOP_COMMON_DEFAULTS.items() <= info.defaults.items()
    assert info.choices["lr_policy"] == LR_POLICIES and info.defaults["lr_policy"] == "constant"
    assert info.choices["record_iterations"] == (True, False)
    assert "init_from" in info.path_params


def test_triangular_policies_cycle_between_lr_min_and_the_peak(digits):
    config = {"lr": 1e-2, "lr_min": 1e-3, "cycle_epochs": 0.5}  # half a cycle: 4 batches
    triangular = lrs(run(digits, 2, lr_policy="triangular", **config))
    assert triangular[:9] == pytest.approx([1e-3, 3.25e-3, 5.5e-3, 7.75e-3, 1e-2, 7.75e-3,
                                            5.5e-3, 3.25e-3, 1e-3])  # fmt: skip
    assert max(triangular) == pytest.approx(1e-2) and min(triangular) == pytest.approx(1e-3)
    halving = lrs(run(digits, 2, lr_policy="triangular2", **config))
    assert halving[4] == pytest.approx(1e-2) and halving[12] == pytest.approx(5.5e-3)
    decaying = lrs(run(digits, 2, lr_policy="exp_range", lr_gamma=0.9, **config))
    assert decaying[4] == pytest.approx(1e-3 + 9e-3 * 0.9**4)


def test_range_test_grows_the_lr_exponentially_over_the_trial(digits):
    reporter = run(digits, 3, optimizer="sgd", lr=1e-3, lr_policy="range_test", range_factor=100)
    seen = lrs(reporter)
    assert len(seen) == 3 * BATCHES and seen[0] == pytest.approx(1e-3)
    ratios = [b / a for a, b in zip(seen[:-1], seen[1:], strict=True)]
    assert ratios == pytest.approx([100 ** (1 / 24)] * 23)
    assert reporter.rows[-1]["lr"] == pytest.approx(0.1)  # the lr after the last batch


def test_lr_min_must_be_below_a_cyclic_policys_peak(digits):
    message = r"^lr_min \(0\.01\) must be below lr \(0\.001\) for lr_policy triangular$"
    with pytest.raises(ValueError, match=message):
        run(digits, 1, lr=1e-3, lr_min=1e-2, lr_policy="triangular")


def test_cyclic_bounds_keep_each_param_groups_ratio_to_lr():
    weights = [torch.nn.Parameter(torch.zeros(1)) for _ in range(2)]
    optimizer = torch.optim.Adam([{"params": [weights[0]], "lr": 1e-2},
                                  {"params": [weights[1]], "lr": 1e-3}])  # fmt: skip
    config = {**LOOP_COMMON_DEFAULTS, "lr": 1e-2, "lr_min": 1e-4, "lr_policy": "triangular"}
    scheduler = make_scheduler(optimizer, config, batches=10, max_epochs=1)
    assert scheduler.base_lrs == pytest.approx([1e-4, 1e-5])
    assert scheduler.max_lrs == pytest.approx([1e-2, 1e-3])


@pytest.mark.parametrize("policy", LR_POLICIES)
def test_a_resumed_trial_continues_its_schedule_exactly(digits, policy):
    # Paused after epoch 1 of 2 (its checkpoint as Tune keeps it), then resumed.
    config = {"lr": 1e-2, "lr_min": 1e-3, "cycle_epochs": 0.75, "lr_policy": policy}
    config |= {"dropout": 0.2, "optimizer": "momentum"}
    whole = run(digits, 2, **config)
    resumed = run(digits, 2, state=whole.states[0], **config)
    assert [r["epoch"] for r in resumed.rows] == [2]
    a, b = whole.rows[1], resumed.rows[0]
    assert a["iteration_lr"] == b["iteration_lr"] and a["lr"] == b["lr"]
    assert a["iteration_index"] == b["iteration_index"]
    assert a["iteration_loss"] == pytest.approx(b["iteration_loss"], rel=1e-6)
    assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
    assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-6)


def test_a_perturbed_lr_on_resume_is_the_cycles_new_peak(digits):
    config = {"lr": 1e-2, "lr_min": 1e-3, "cycle_epochs": 1.0, "lr_policy": "triangular"}
    first = run(digits, 1, **config)
    perturbed = run(digits, 2, state=first.states[-1], **{**config, "lr": 2e-2})
    assert perturbed.rows[0]["iteration_lr"][0] == pytest.approx(2e-2)  # at the top, iter 9


def test_iterations_are_numbered_over_the_trial_and_capped_per_epoch(digits, monkeypatch):
    monkeypatch.setattr("trainables.loop.MAX_RECORDED", 3)  # 8 batches: every 3rd
    reporter = run(digits, 2)
    assert [r["iteration_index"] for r in reporter.rows] == [[1, 4, 7], [9, 12, 15]]
    assert all(len(r["iteration_loss"]) == len(r["iteration_lr"]) == 3 for r in reporter.rows)
    assert all(math.isfinite(loss) for r in reporter.rows for loss in r["iteration_loss"])
    assert "iteration_loss" not in run(digits, 1, record_iterations=False).rows[0]


def test_batch_size_zero_is_one_full_batch_per_epoch(digits):
    reporter = run(digits, 3, "logistic", batch_size=0)
    assert [r["iteration_index"] for r in reporter.rows] == [[1], [2], [3]]
    assert reporter.rows[-1]["train_loss"] < reporter.rows[0]["train_loss"]


def test_a_last_batch_of_one_sample_joins_the_one_before_under_batch_norm(digits):
    odd = small(digits, 17)  # batches of 8: 8, 8 and 1
    normed = run(odd, 1, "lenet5", batch_norm=True)  # BatchNorm1d fails on one sample
    assert normed.rows[0]["iteration_index"] == [1, 2]
    assert run(odd, 1, "lenet5").rows[0]["iteration_index"] == [1, 2, 3]


def test_logistic_regression_learns_digits():
    data = load_dataset("digits", 0.2, 0.2, seed=0)
    reporter = ListReporter()
    train("logistic", {"seed": 0}, data, reporter, max_epochs=30, threads=1)
    assert reporter.rows[-1]["val_accuracy"] > 0.85


def test_adam_takes_its_betas_from_the_config():
    from trainables.loop import build_model_for, full_config, make_optimizer

    config = full_config("cnn", {"beta1": 0.5, "beta2": 0.9})
    optimizer = make_optimizer(build_model_for("cnn", config, (1, 8, 8), 10), config)
    assert optimizer.param_groups[0]["betas"] == (0.5, 0.9)


@pytest.mark.parametrize("policy", ["triangular2", "range_test"])
@pytest.mark.parametrize("name", LOOP_TRAINABLES)
def test_every_trainable_trains_under_a_schedule(name, policy):
    data = small(load_dataset("digits", 0.2, 0.2, 0, scale=TRAINABLES[name].input_scale), 16)
    reporter = run(data, 1, name, lr=1e-2, lr_min=1e-3, lr_policy=policy)
    assert math.isfinite(reporter.rows[0]["val_loss"]) and len(lrs(reporter)) == 2
