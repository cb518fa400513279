"""The one place that turns a study's search space into something else: Ray Tune domains,
grid values, Optuna distributions (for the report's importance analysis), the points of
a finite space (tables), and unit-scaled features (the replay's surrogate)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from hpo.spec import Param


def tune_domain(param: Param) -> Any:
    """The Ray Tune sampling domain of one hyperparameter."""
    from ray import tune  # imported here: the report uses this module without Ray

    if param.uniform is not None:
        return tune.uniform(param.uniform.low, param.uniform.high)
    if param.loguniform is not None:
        return tune.loguniform(param.loguniform.low, param.loguniform.high)
    if param.randint is not None:
        return tune.randint(param.randint.low, param.randint.high)
    return tune.choice(list(param.choice))


def tune_space(space: Mapping[str, Param], fixed: Mapping[str, Any]) -> dict[str, Any]:
    """Tuner `param_space` for sampling strategies: fixed values plus sampled domains."""
    return {**fixed, **{name: tune_domain(param) for name, param in space.items()}}


def is_log(param: Param) -> bool:
    return param.loguniform is not None


def cell_centres(low: float, high: float, points: int) -> np.ndarray:
    """Centres of `points` equal cells of [low, high]: a grid that never spends a trial on
    the extreme corners of the domain (for one point, the middle)."""
    return low + (np.arange(points) + 0.5) * (high - low) / points


def discretize(param: Param, points: int) -> list[Any]:
    """`points` values spread evenly over the domain, log-spaced for log domains."""
    if param.choice is not None:
        return list(param.choice)
    if param.randint is not None:
        low, high = param.randint.low, param.randint.high  # integers in [low, high)
        if points >= high - low:
            return list(range(low, high))
        return sorted({int(v) for v in cell_centres(low, high, points)})
    bounds = param.loguniform or param.uniform
    if is_log(param):
        values = np.exp(cell_centres(math.log(bounds.low), math.log(bounds.high), points))
    else:
        values = cell_centres(bounds.low, bounds.high, points)
    return [float(f"{v:.6g}") for v in values]


def max_points(param: Param) -> int:
    """How many distinct grid values a dimension can offer (inf for continuous)."""
    if param.grid is not None:
        return len(param.grid)
    if param.choice is not None:
        return len(param.choice)
    if param.randint is not None:
        return param.randint.high - param.randint.low
    return 10**9


def grid_values(space: Mapping[str, Param], max_trials: int) -> dict[str, list[Any]]:
    """Grid values per hyperparameter so that the whole grid has at most `max_trials` points.

    Explicit `grid:` values and categorical options are used whole; every other dimension
    gets points one at a time (the one with fewest first) while the product still fits.
    If the fixed part alone is larger than the budget, the grid is bigger than
    `max_trials` and the budget stopper ends the run part-way (see `grid_size`).
    """
    counts = {
        name: (len(p.grid) if p.grid is not None else len(p.choice) if p.choice else 1)
        for name, p in space.items()
    }
    growable = [n for n, p in space.items() if p.grid is None and p.choice is None]
    while True:
        size = math.prod(counts.values())
        fitting = [
            n
            for n in sorted(growable, key=lambda n: counts[n])  # stable: fewest points first
            if counts[n] < max_points(space[n])
            and size // counts[n] * (counts[n] + 1) <= max_trials
        ]
        if not fitting:
            break
        counts[fitting[0]] += 1
    return {
        name: list(param.grid) if param.grid is not None else discretize(param, counts[name])
        for name, param in space.items()
    }


def grid_size(values: Mapping[str, list[Any]]) -> int:
    return math.prod(len(v) for v in values.values())


def grid_space(values: Mapping[str, list[Any]], fixed: Mapping[str, Any]) -> dict[str, Any]:
    """Tuner `param_space` for grid search."""
    from ray import tune

    return {**fixed, **{name: tune.grid_search(list(v)) for name, v in values.items()}}


def optuna_distribution(param: Param) -> Any:
    """The Optuna distribution of one hyperparameter (randint's high is exclusive, Optuna's
    IntDistribution high inclusive)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if param.choice is not None:
        return CategoricalDistribution(list(param.choice))
    if param.randint is not None:
        return IntDistribution(param.randint.low, param.randint.high - 1)
    bounds = param.loguniform or param.uniform
    return FloatDistribution(bounds.low, bounds.high, log=is_log(param))


def finite_points(space: Mapping[str, Param]) -> list[dict[str, Any]] | None:
    """Every configuration of a space of choices only, in order; None for any other."""
    import itertools

    if any(param.choice is None for param in space.values()):
        return None
    points = itertools.product(*(param.choice for param in space.values()))
    return [dict(zip(space, point, strict=True)) for point in points]


def unit_features(space: Mapping[str, Param], config: Mapping[str, Any]) -> list[float]:
    """A configuration as features for a model of the space: continuous and integer values
    scaled to [0, 1] (log scale for loguniform), choices one-hot, scaled so that a
    mismatch counts 1 in Euclidean distance, as a full range does."""
    features: list[float] = []
    for name, param in space.items():
        value = config[name]
        if param.choice is not None:
            features += [float(value == option) / math.sqrt(2) for option in param.choice]
            continue
        domain = param.uniform or param.loguniform or param.randint
        low, high, value = float(domain.low), float(domain.high), float(value)
        if is_log(param):
            low, high, value = math.log(low), math.log(high), math.log(value)
        features.append((value - low) / (high - low) if high > low else 0.0)
    return features
