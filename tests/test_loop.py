"""The one training loop, outside Ray: learning, divergence, and pause/resume."""

from __future__ import annotations

import math

import pytest

from tests.conftest import ListReporter
from trainables import EPOCH_METRICS
from trainables.data import load_dataset
from trainables.loop import train


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", 0.2, 0.2, seed=0)


def test_learns_digits_and_reports_every_metric(digits):
    reporter = ListReporter()
    train("cnn", {"lr": 3e-3, "seed": 0}, digits, reporter, max_epochs=6, threads=1)
    assert [r["epoch"] for r in reporter.rows] == [1, 2, 3, 4, 5, 6]
    assert set(EPOCH_METRICS) <= set(reporter.rows[0])
    assert reporter.rows[-1]["val_accuracy"] > 0.9
    assert reporter.rows[-1]["train_loss"] < reporter.rows[0]["train_loss"]
    assert all(not r["diverged"] for r in reporter.rows)
    assert all(
        s["epoch"] == r["epoch"] for r, s in zip(reporter.rows, reporter.states, strict=True)
    )


def test_divergence_is_a_status_not_a_score(digits):
    reporter = ListReporter()
    config = {"optimizer": "sgd", "lr": 1e6, "seed": 0}
    train("cnn", config, digits, reporter, max_epochs=10, threads=1)
    last = reporter.rows[-1]
    assert last["diverged"] is True and len(reporter.rows) < 10
    assert math.isnan(last["val_accuracy"]) and math.isnan(last["val_loss"])
    assert reporter.states[-1] is None  # no checkpoint of a diverged model


def test_resumed_run_matches_uninterrupted_run(digits):
    config = {"lr": 3e-3, "dropout": 0.2, "seed": 5}
    whole = ListReporter()
    train("cnn", config, digits, whole, max_epochs=4, threads=1)
    first = ListReporter()
    train("cnn", config, digits, first, max_epochs=2, threads=1)
    second = ListReporter(state=first.states[-1])
    train("cnn", config, digits, second, max_epochs=4, threads=1)
    resumed = first.rows + second.rows
    assert [r["epoch"] for r in resumed] == [1, 2, 3, 4]
    for a, b in zip(whole.rows, resumed, strict=True):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)


def test_l1_penalty_shrinks_weights(digits):
    import torch

    from trainables.loop import build_model

    def weight_norm(l1: float) -> float:
        reporter = ListReporter()
        config = {"lr": 3e-3, "l1": l1, "seed": 0}
        train("cnn", config, digits, reporter, max_epochs=3, threads=1)
        model = build_model("cnn", config, digits)
        model.load_state_dict(reporter.states[-1]["model"])
        return float(sum(p.detach().abs().sum() for p in model.parameters() if p.dim() > 1))

    assert weight_norm(1e-3) < 0.7 * weight_norm(0.0)
    assert torch.get_num_threads() == 1
