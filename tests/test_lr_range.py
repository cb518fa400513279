"""The learning-rate range test's curve and bounds, on curves whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from hpo.lr_range import LrBounds, pick_lr_bounds, range_curve, usable_points

LOW, HIGH = 1e-4, 1e-1  # where the synthetic loss starts and stops falling


def known_loss(lr: np.ndarray) -> np.ndarray:
    """Flat at 2.3 below 1e-4, falling log-linearly to 0.1 at 1e-1, rising after it and
    diverged (NaN) above 1."""
    decades = np.log10(lr)
    falling = 2.3 - 2.2 * (decades - math.log10(LOW)) / 3
    rising = 0.1 + 3.0 * (decades - math.log10(HIGH))
    loss = np.where(lr < LOW, 2.3, np.where(lr <= HIGH, falling, rising))
    return np.where(lr > 1.0, np.nan, loss)


LR = np.logspace(-6, 0.5, 79)  # 12 points a decade


def within(value: float, target: float, factor: float) -> bool:
    return target / factor <= value <= target * factor


def test_bounds_of_a_known_curve():
    bounds = pick_lr_bounds(LR, known_loss(LR))
    assert isinstance(bounds, LrBounds)
    # lr_min: the first point 10 % of the fall (2.2) below the plateau; on this curve the
    # loss is 10 % down at 10^(-4 + 0.3) = 2e-4 and the next grid point is 2.15e-4
    assert LOW <= bounds.lr_min <= 2.2 * LOW
    assert within(bounds.lr_max, HIGH, 1.25)


def test_bounds_of_a_noisy_curve():
    rng = np.random.default_rng(7)
    loss = known_loss(LR) + rng.normal(0.0, 0.08, len(LR))
    shuffled = rng.permutation(len(LR))  # order does not matter: points are sorted by lr
    bounds = pick_lr_bounds(LR[shuffled], loss[shuffled])
    assert within(bounds.lr_min, LOW, 2.5)
    assert within(bounds.lr_max, HIGH, 2.0)


def test_points_after_divergence_are_ignored():
    loss = known_loss(LR)
    loss[LR > 0.5] = 0.0  # "better" than the minimum, but after a NaN
    loss[np.argmin(np.abs(LR - 0.4))] = np.nan
    lr, kept = usable_points(LR, loss)
    assert lr.max() < 0.4 and np.isfinite(kept).all()
    assert within(pick_lr_bounds(LR, loss).lr_max, HIGH, 1.25)


def test_lr_min_falls_back_to_a_decade_below_lr_max():
    lr = np.logspace(-3, 0, 20)
    falling = np.concatenate([np.linspace(2.0, 0.5, 16), [0.7, 1.0, 1.5, 2.5]])
    bounds = pick_lr_bounds(lr, falling)  # falls from the first point: no plateau
    assert bounds.lr_max == pytest.approx(lr[15])
    assert bounds.lr_min < bounds.lr_max

    rising = pick_lr_bounds(lr, np.linspace(0.5, 2.0, 20))  # lowest at the first point
    assert rising.lr_max == pytest.approx(lr[0])
    assert rising.lr_min == pytest.approx(rising.lr_max / 10)


def test_too_few_points_is_a_one_line_error():
    lr = np.array([1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0])
    loss = np.array([2.3, 2.0, 1.0, 0.5, np.nan, 0.1])
    with pytest.raises(ValueError, match=r"4 finite points .* at least 5") as error:
        pick_lr_bounds(lr, loss)
    assert "\n" not in str(error.value)


def trials_csv_rows() -> pd.DataFrame:
    """Two range-test trials of one decade each (3 epochs, lr × 10^(1/3) per epoch) and a
    constant-lr trial, as trials.csv has them."""
    rows = []
    for trial_id, start in (("t1", 1e-3), ("t2", 1e-2)):
        for epoch in (1, 2, 3):
            rows.append(
                {
                    "strategy": "grid", "seed": 0, "trial_id": trial_id, "epoch": epoch,
                    "lr": start * 10 ** (epoch / 3), "train_loss": 2.0 - epoch / 10 - start,
                    "diverged": trial_id == "t2" and epoch == 3,
                    "config/lr": start, "config/lr_policy": "range_test",
                }
            )  # fmt: skip
    rows.append(
        {
            "strategy": "grid", "seed": 0, "trial_id": "c", "epoch": 1, "lr": 0.5,
            "train_loss": 0.3, "diverged": False, "config/lr": 0.5,
            "config/lr_policy": "constant",
        }
    )  # fmt: skip
    return pd.DataFrame(rows)


def test_range_curve_points_are_geometric_means_of_each_epoch():
    curve = range_curve(trials_csv_rows())
    assert list(curve.columns) == ["strategy", "seed", "trial_id", "epoch", "lr", "loss"]
    assert set(curve["trial_id"]) == {"t1", "t2"}  # the constant trial is not a range test
    assert curve["lr"].is_monotonic_increasing
    first = curve[(curve["trial_id"] == "t1") & (curve["epoch"] == 1)].iloc[0]
    assert first["lr"] == pytest.approx(math.sqrt(1e-3 * 1e-3 * 10 ** (1 / 3)))
    second = curve[(curve["trial_id"] == "t1") & (curve["epoch"] == 2)].iloc[0]
    assert second["lr"] == pytest.approx(1e-3 * 10 ** (1.5 / 3))
    assert second["loss"] == pytest.approx(2.0 - 0.2 - 1e-3)
    diverged = curve[(curve["trial_id"] == "t2") & (curve["epoch"] == 3)].iloc[0]
    assert math.isnan(diverged["loss"])


def test_range_curve_of_trials_without_range_tests_is_empty():
    rows = trials_csv_rows().drop(columns="config/lr_policy")
    assert range_curve(rows).empty
    assert range_curve(pd.DataFrame()).empty
