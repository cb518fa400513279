"""Toy datasets of the coursework's gradient-pathology experiments, generated locally.

Each generator takes no argument and always draws with the same seed (GENERATOR_SEED): a
toy set is one fixed dataset, like a file on disk; the study's seed only splits it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from trainables.data import RawData

GENERATOR_SEED = 0
TWO_D_SAMPLES = 600  # moons, spirals
IMAGE_SET_SAMPLES = 64  # random 4×4, lines, detection
FUNCTION_SAMPLES = 5000  # 3,000 for training at the default 0.2/0.2 split
FUNCTION_BOUND = math.sqrt(7.0)  # inputs uniform on [−√7, √7] (Lu et al. 2019)
NOISE = 0.05  # grey-level noise on the 8×8 line and detection images


def _rng() -> np.random.Generator:
    return np.random.default_rng(GENERATOR_SEED)


def moons_arrays() -> RawData:
    """scikit-learn's two interleaving half circles, 600 points with noise 0.2."""
    from sklearn.datasets import make_moons

    x, y = make_moons(TWO_D_SAMPLES, noise=0.2, random_state=GENERATOR_SEED)
    return RawData(x.astype(np.float32), y.astype(np.int64), ("upper", "lower"))


def spirals_arrays() -> RawData:
    """Two interleaved spirals of 300 points each (1.5 turns, radius up to 1, noise 0.05)."""
    rng = _rng()
    half = TWO_D_SAMPLES // 2
    t = np.sqrt(rng.uniform(0.0, 1.0, half)) * 3 * math.pi  # denser towards the centre
    arms = []
    for arm in (0, 1):
        angle = t + arm * math.pi
        radius = t / (3 * math.pi)
        points = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
        arms.append(points + rng.normal(0.0, 0.05, points.shape))
    x = np.concatenate(arms).astype(np.float32)
    y = np.repeat([0, 1], half)
    return RawData(x, y, ("arm 0", "arm 1"))


def random4x4_arrays() -> RawData:
    """64 random binary 4×4 images with random, balanced labels: nothing to learn but the
    set itself (how fast a net memorizes it)."""
    rng = _rng()
    images = rng.integers(0, 2, (IMAGE_SET_SAMPLES, 1, 4, 4)).astype(np.float32)
    labels = rng.permutation(np.repeat([0, 1], IMAGE_SET_SAMPLES // 2))
    return RawData(images, labels, ("a", "b"))


def lines_arrays() -> RawData:
    """64 8×8 images of one full-length line, horizontal (class 0) or vertical (class 1),
    at a random row or column, on faint noise."""
    rng = _rng()
    labels = np.repeat([0, 1], IMAGE_SET_SAMPLES // 2)
    images = rng.uniform(0.0, NOISE, (IMAGE_SET_SAMPLES, 1, 8, 8))
    for image, label, where in zip(
        images, labels, rng.integers(0, 8, IMAGE_SET_SAMPLES), strict=True
    ):
        if label == 0:
            image[0, where, :] = 1.0
        else:
            image[0, :, where] = 1.0
    order = rng.permutation(IMAGE_SET_SAMPLES)
    return RawData(images[order].astype(np.float32), labels[order], ("horizontal", "vertical"))


def detection_arrays() -> RawData:
    """64 8×8 images: half hold an object (class 1), a bar 2 pixels high and 2-6 pixels
    wide at a random place, half only noise (class 0); `targets` is the object's width
    (0 where there is none), for a regression head."""
    rng = _rng()
    labels = np.repeat([0, 1], IMAGE_SET_SAMPLES // 2)
    images = rng.uniform(0.0, NOISE, (IMAGE_SET_SAMPLES, 1, 8, 8))
    widths = np.zeros(IMAGE_SET_SAMPLES, dtype=np.float32)
    for i in np.flatnonzero(labels):
        width = int(rng.integers(2, 7))
        row, column = int(rng.integers(0, 7)), int(rng.integers(0, 9 - width))
        images[i, 0, row : row + 2, column : column + width] = 1.0
        widths[i] = width
    order = rng.permutation(IMAGE_SET_SAMPLES)
    return RawData(
        images[order].astype(np.float32),
        labels[order],
        ("nothing", "object"),
        targets=widths[order, None],
    )


FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "abs": np.abs,
    "xsin": lambda x: x * np.sin(5 * x),
    "step_sine": lambda x: np.where(x > 0, 1.0, 0.0) + np.sin(x),
}


def function_arrays(function: str) -> RawData:
    """5,000 inputs uniform on [−√7, √7] (shape N×1) and the function's values (N×1)."""
    x = _rng().uniform(-FUNCTION_BOUND, FUNCTION_BOUND, (FUNCTION_SAMPLES, 1))
    y = FUNCTIONS[function](x)
    return RawData(x.astype(np.float32), y.astype(np.float32))


def abs_arrays() -> RawData:
    return function_arrays("abs")


def xsin_arrays() -> RawData:
    return function_arrays("xsin")


def step_sine_arrays() -> RawData:
    return function_arrays("step_sine")


def neuron_point_arrays() -> RawData:
    """The single-neuron exercise's one sample: input 1, target 0.5."""
    return RawData(np.ones((1, 1), dtype=np.float32), np.full((1, 1), 0.5, dtype=np.float32))
