"""Learning-rate range test: from the trials that raised the lr exponentially while they
trained (`lr_policy: range_test`) to the bounds a cyclical policy uses (`lr_from`).

Pure numpy/pandas: the runner picks a source run's bounds with it, and the report draws
the same curve and marks. Smith's recipe ("Cyclical Learning Rates for Training Neural
Networks", 2017, section 3.3): the lower bound is where the loss starts to fall, the
upper one where it stops falling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

RANGE_TEST = "range_test"  # the lr_policy value of a range-test trial
MIN_POINTS = 5  # finite points below which no bounds are picked
FALL_FRACTION = 0.1  # lr_min: the loss has fallen by this share of its whole fall
CURVE_COLUMNS = ["strategy", "seed", "trial_id", "epoch", "lr", "loss"]


@dataclass(frozen=True)
class LrBounds:
    lr_min: float
    lr_max: float


def range_test_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """The rows of trials.csv that belong to range-test trials."""
    if trials.empty or "config/lr_policy" not in trials:
        return trials.iloc[0:0]
    return trials[trials["config/lr_policy"] == RANGE_TEST]


def range_curve(trials: pd.DataFrame) -> pd.DataFrame:
    """One point per range-test trial-epoch, sorted by lr: `lr` is the geometric mean of
    the lr the epoch started at (the previous epoch's end lr; the trial's config/lr for
    epoch 1) and the lr it ended at (trials.csv's `lr`), since the loss of an epoch is
    averaged over the whole exponential sweep; `loss` is train_loss, NaN where the epoch
    diverged. Rows of other trials are ignored."""
    rows = range_test_trials(trials)
    if rows.empty:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    rows = rows.sort_values(["strategy", "seed", "trial_id", "epoch"], kind="stable")
    end = pd.to_numeric(rows["lr"], errors="coerce").astype(float)
    trial = rows.groupby(["strategy", "seed", "trial_id"], sort=False)
    previous_end = end.groupby([rows["strategy"], rows["seed"], rows["trial_id"]]).shift(1)
    follows = trial["epoch"].diff().eq(1)  # the previous row is the epoch before
    configured = rows["config/lr"] if "config/lr" in rows else pd.Series(np.nan, rows.index)
    start_lr = pd.to_numeric(configured, errors="coerce").astype(float)
    start = previous_end.where(follows, start_lr.where(rows["epoch"] == 1))
    start = start.fillna(end)  # an epoch missing before it: only its end lr is known
    loss = pd.to_numeric(rows["train_loss"], errors="coerce").astype(float)
    if "diverged" in rows:
        loss = loss.mask(rows["diverged"].astype(str).str.lower().eq("true"))
    curve = rows[["strategy", "seed", "trial_id", "epoch"]].assign(
        lr=np.sqrt(start * end), loss=loss
    )
    return curve.sort_values("lr", kind="stable", ignore_index=True)[CURVE_COLUMNS]


def usable_points(lr: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points in lr order up to the first non-finite loss: once the loss diverges,
    what comes after says nothing about where it fell."""
    lr, loss = np.asarray(lr, float), np.asarray(loss, float)
    keep = np.isfinite(lr) & (lr > 0)
    lr, loss = lr[keep], loss[keep]
    order = np.argsort(lr, kind="stable")
    lr, loss = lr[order], loss[order]
    broken = np.flatnonzero(~np.isfinite(loss))
    end = int(broken[0]) if broken.size else len(loss)
    return lr[:end], loss[:end]


def smooth_loss(loss: np.ndarray) -> np.ndarray:
    """A centred rolling median (5 points, 3 for curves under 15): robust to the single noisy
    epochs a range test has, and it keeps a monotone curve's values."""
    series = pd.Series(loss)
    return series.rolling(_window(len(loss)), center=True, min_periods=1).median().to_numpy()


def _window(points: int) -> int:
    return 5 if points >= 15 else 3


def pick_lr_bounds(lr: np.ndarray, loss: np.ndarray) -> LrBounds:
    """lr_max: the lr where the smoothed loss is lowest (its minimum raw point within one
    smoothing window); lr_min: the lowest lr at which the
    smoothed loss has fallen below its starting plateau (median of the first points) by
    FALL_FRACTION of the whole fall, or lr_max / 10 when that is not below lr_max."""
    lr, loss = usable_points(lr, loss)
    if len(lr) < MIN_POINTS:
        raise ValueError(
            f"lr range test: {len(lr)} finite points before the loss diverged, "
            f"need at least {MIN_POINTS}"
        )
    smooth, window = smooth_loss(loss), _window(len(loss))
    # The median finds the valley despite noise but flattens its bottom into a run of
    # equal values; the lowest raw point within one window of it places the minimum.
    valley = int(np.argmin(smooth))
    near = slice(max(0, valley - window // 2), valley + window // 2 + 1)
    lowest = near.start + int(np.argmin(loss[near]))
    lr_max = float(lr[lowest])
    plateau = float(np.median(loss[: max(3, len(loss) // 10)]))
    fall = plateau - float(smooth[valley])
    fallen = np.flatnonzero(smooth[:lowest] < plateau - FALL_FRACTION * fall)
    lr_min = float(lr[fallen[0]]) if fall > 0 and fallen.size else lr_max
    if lr_min >= lr_max:
        lr_min = lr_max / 10
    return LrBounds(lr_min, lr_max)


__all__ = [
    "CURVE_COLUMNS",
    "FALL_FRACTION",
    "MIN_POINTS",
    "RANGE_TEST",
    "LrBounds",
    "pick_lr_bounds",
    "range_curve",
    "range_test_trials",
    "smooth_loss",
    "usable_points",
]
