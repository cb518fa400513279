"""The one place that turns a study's search space into something else: Ray Tune domains,
grid values and grid points, seeded samples, Optuna's define-by-run search and
distributions (for the report's importance analysis), the points of a finite space
(tables), and unit-scaled features (the replay's surrogate).

A parameter with `when:` exists only in configurations where its parents (choice
parameters) take one of the named values: everything here leaves it out of the others,
never fills in a placeholder.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hpo.spec import IntRange, Param, QRange

LOG_KINDS = ("loguniform", "lograndint", "qloguniform")


def is_log(param: Param) -> bool:
    return param.kind in LOG_KINDS


def quantize(value: float, q: float, low: float, high: float) -> float:
    """`value` rounded to a multiple of q within [low, high], as the short float it stands
    for (0.3, not 0.30000000000000004), so that configs and CSV cells read as the grid."""
    snapped = float(f"{round(value / q) * q:.12g}")
    return min(max(snapped, low), high)


# ------------------------------------------------------------------ conditions
def is_conditional(space: Mapping[str, Param]) -> bool:
    return any(param.when for param in space.values())


def is_active(param: Param, config: Mapping[str, Any]) -> bool:
    """Whether `param` exists in a configuration that has the values in `config`: every
    parent present and taking one of the values its `when:` names."""
    return all(p in config and config[p] in values for p, values in (param.when or {}).items())


def evaluation_order(space: Mapping[str, Param]) -> list[str]:
    """The space's names with every parent before the parameters conditioned on it,
    otherwise in the space's order (the spec refuses cycles)."""
    order: list[str] = []
    while len(order) < len(space):
        ready = next(
            (
                name
                for name, param in space.items()
                if name not in order and all(p in order or p not in space for p in param.when or {})
            ),
            None,
        )
        if ready is None:
            raise ValueError(f"conditions form a cycle among {sorted(set(space) - set(order))}")
        order.append(ready)
    return order


def _in_space_order(space: Mapping[str, Param], config: Mapping[str, Any]) -> dict[str, Any]:
    return {name: config[name] for name in space if name in config}


# ------------------------------------------------------------------ Ray Tune
def tune_domain(param: Param) -> Any:
    """The Ray Tune sampling domain of one hyperparameter (its condition aside)."""
    from ray import tune  # imported here: the report uses this module without Ray

    bounds = param.bounds
    if param.uniform is not None:
        return tune.uniform(bounds.low, bounds.high)
    if param.loguniform is not None:
        return tune.loguniform(bounds.low, bounds.high)
    if param.randint is not None:
        return tune.randint(bounds.low, bounds.high)
    if param.lograndint is not None:
        return tune.lograndint(bounds.low, bounds.high)
    if isinstance(bounds, QRange):
        from hpo.quantized import on_grid_domain

        return on_grid_domain(bounds.low, bounds.high, bounds.q, log=is_log(param))
    return tune.choice(list(param.choice))


def perturbable(space: Mapping[str, Param]) -> dict[str, tuple[float, float]]:
    """The parameters PBT may scale, with their bounds: uniform and loguniform ones that
    every trial has (quantized, integer, categorical and conditional ones are not)."""
    return {
        name: (param.bounds.low, param.bounds.high)
        for name, param in space.items()
        if param.kind in ("uniform", "loguniform") and not param.when
    }


def tune_space(space: Mapping[str, Param], fixed: Mapping[str, Any]) -> dict[str, Any]:
    """Tuner `param_space` for sampling strategies: fixed values plus the domains of the
    parameters every trial has. A conditional parameter has no domain here (Tune would
    give every trial a value): the strategy's searcher adds it where it is active."""
    domains = {name: tune_domain(param) for name, param in space.items() if not param.when}
    return {**fixed, **domains}


# ------------------------------------------------------------------ sampling
def sample(space: Mapping[str, Param], rng: np.random.Generator) -> dict[str, Any]:
    """One random configuration: each active parameter drawn from its domain (parents
    first), inactive ones absent; plain Python values."""
    config: dict[str, Any] = {}
    for name in evaluation_order(space):
        param = space[name]
        if is_active(param, config):
            config[name] = _draw(param, rng)
    return _in_space_order(space, config)


def sample_points(space: Mapping[str, Param], count: int, seed: int) -> list[dict[str, Any]]:
    """`count` random configurations from one generator seeded by `seed` (reproducible)."""
    rng = np.random.default_rng(seed)
    return [sample(space, rng) for _ in range(count)]


def _draw(param: Param, rng: np.random.Generator) -> Any:
    if param.choice is not None:
        return param.choice[int(rng.integers(len(param.choice)))]
    bounds = param.bounds
    low, high = float(bounds.low), float(bounds.high)
    if is_log(param):
        value = math.exp(rng.uniform(math.log(low), math.log(high)))
    else:
        value = float(rng.uniform(low, high))
    if isinstance(bounds, IntRange):  # high exclusive, as Ray's randint and lograndint
        return min(int(math.floor(value)), bounds.high - 1)
    if isinstance(bounds, QRange):
        return quantize(value, bounds.q, low, high)
    return value


# ------------------------------------------------------------------ grid
def cell_centres(low: float, high: float, points: int) -> np.ndarray:
    """Centres of `points` equal cells of [low, high]: a grid that never spends a trial on
    the extreme corners of the domain (for one point, the middle)."""
    return low + (np.arange(points) + 0.5) * (high - low) / points


def _spread_ints(low: int, high: int, points: int, log: bool) -> list[int]:
    """`points` distinct integers of [low, high) spread evenly (log-spaced for `log`), or
    all of them if there are no more."""
    if points >= high - low:
        return list(range(low, high))
    if not log:
        return sorted({int(v) for v in cell_centres(low, high, points)})
    values: list[int] = []
    for centre in np.exp(cell_centres(math.log(low), math.log(high), points)):
        values.append(max(round(float(centre)), values[-1] + 1 if values else low))
    for i in reversed(range(points)):  # rounding up may pass the top: shift down, distinct
        values[i] = min(values[i], high - 1 if i == points - 1 else values[i + 1] - 1)
    return values


def _grid_indices(bounds: QRange) -> tuple[int, int]:
    """First and last k of a quantized domain's values k·q."""
    return round(bounds.low / bounds.q), round(bounds.high / bounds.q)


def discretize(param: Param, points: int) -> list[Any]:
    """`points` values spread evenly over the domain, log-spaced for log domains; integer
    and quantized domains give distinct values of their own (at most all of them)."""
    if param.choice is not None:
        return list(param.choice)
    bounds = param.bounds
    if isinstance(bounds, IntRange):
        return _spread_ints(bounds.low, bounds.high, points, is_log(param))
    if isinstance(bounds, QRange):
        first, last = _grid_indices(bounds)
        steps = _spread_ints(first, last + 1, points, is_log(param))
        return [quantize(k * bounds.q, bounds.q, bounds.low, bounds.high) for k in steps]
    if is_log(param):
        values = np.exp(cell_centres(math.log(bounds.low), math.log(bounds.high), points))
    else:
        values = cell_centres(bounds.low, bounds.high, points)
    return [float(f"{v:.6g}") for v in values]


def max_points(param: Param) -> int:
    """How many distinct grid values a dimension can offer (10**9 for continuous)."""
    if param.grid is not None:
        return len(param.grid)
    if param.choice is not None:
        return len(param.choice)
    bounds = param.bounds
    if isinstance(bounds, IntRange):
        return bounds.high - bounds.low
    if isinstance(bounds, QRange):
        first, last = _grid_indices(bounds)
        return last - first + 1
    return 10**9


def grid_values(space: Mapping[str, Param], max_trials: int) -> dict[str, list[Any]]:
    """Grid values per hyperparameter so that the whole grid has at most `max_trials` points
    (valid combinations: a conditional parameter's values count only where it is active).

    Explicit `grid:` values and categorical options are used whole; every other dimension
    gets points one at a time (the one with fewest first) while the grid still fits.
    If the fixed part alone is larger than the budget, the grid is bigger than
    `max_trials` and the budget stopper ends the run part-way (see `grid_size`).
    """
    explicit = {n: _explicit(p) for n, p in space.items() if p.grid is not None or p.choice}
    counts = {name: 1 for name in space if name not in explicit}
    while True:
        size = grid_size(_sized(space, explicit, counts), space)
        # A value more for a parameter that is never active adds no point: not grown.
        fitting = [
            n
            for n in sorted(counts, key=lambda n: counts[n])  # stable: fewest points first
            if counts[n] < max_points(space[n])
            and size
            < grid_size(_sized(space, explicit, {**counts, n: counts[n] + 1}), space)
            <= max_trials
        ]
        if not fitting:
            break
        counts[fitting[0]] += 1
    return {
        name: explicit[name] if name in explicit else discretize(space[name], counts[name])
        for name in space
    }


def _explicit(param: Param) -> list[Any]:
    return list(param.grid if param.grid is not None else param.choice)


def _sized(
    space: Mapping[str, Param], explicit: Mapping[str, list[Any]], counts: Mapping[str, int]
) -> dict[str, Sequence[Any]]:
    """Stand-in grid values for counting: the explicit ones (parents' values decide which
    conditions hold), else `counts` placeholders."""
    return {n: explicit[n] if n in explicit else range(counts[n]) for n in space}


def grid_size(values: Mapping[str, Sequence[Any]], space: Mapping[str, Param] | None = None) -> int:
    """Points of the grid of `values`: their product, or with a conditional `space`, the
    valid combinations (counted per combination of the parents' values)."""
    if space is None or not is_conditional(space):
        return math.prod(len(v) for v in values.values())
    parents = {p for param in space.values() for p in param.when or {}}
    branches: list[tuple[dict[str, Any], int]] = [({}, 1)]  # parents' values, combinations
    for name in evaluation_order(space):
        grown = []
        for taken, count in branches:
            if not is_active(space[name], taken):
                grown.append((taken, count))
            elif name in parents:
                grown += [({**taken, name: v}, count) for v in values[name]]
            else:
                grown.append((taken, count * len(values[name])))
        branches = grown
    return sum(count for _, count in branches)


def grid_points(
    space: Mapping[str, Param], values: Mapping[str, Sequence[Any]]
) -> list[dict[str, Any]]:
    """Every valid combination of the grid values, in order (the first parameter varies
    slowest): a conditional parameter's values only where its condition holds."""
    points: list[dict[str, Any]] = [{}]
    for name in evaluation_order(space):
        grown = []
        for point in points:
            if is_active(space[name], point):
                grown += [{**point, name: v} for v in values[name]]
            else:
                grown.append(point)
        points = grown
    return [_in_space_order(space, point) for point in points]


def grid_space(values: Mapping[str, list[Any]], fixed: Mapping[str, Any]) -> dict[str, Any]:
    """Tuner `param_space` for grid search of a space without conditions."""
    from ray import tune

    return {**fixed, **{name: tune.grid_search(list(v)) for name, v in values.items()}}


def finite_points(space: Mapping[str, Param]) -> list[dict[str, Any]] | None:
    """Every configuration of a space of choices only, in order (conditional parameters
    only where active); None for any other space."""
    if any(param.choice is None for param in space.values()):
        return None
    return grid_points(space, {name: list(param.choice) for name, param in space.items()})


# ------------------------------------------------------------------ Optuna
class DefineByRun:
    """Optuna's define-by-run search space of a study's space (Ray's OptunaSearch `space`):
    suggests parents before the parameters conditioned on them and never an inactive one,
    and returns the configuration's searched values.

    quniform is `suggest_float(step=q)` (Optuna's step grid starts at low, which the spec
    makes a multiple of q); the value is returned as the short float it stands for.
    qloguniform: Optuna has no log scale with a step, so it is `suggest_int(log=True)`
    over the grid index k of the values k·q (low/q .. high/q), and the config gets k·q:
    TPE models exactly the grid, on a log scale. Optuna's own record of that trial holds
    k under the parameter's name; the trial's config holds the value. (An internal name
    for k would not do: OptunaSearch copies every suggested name into the config.)
    A module-level class, not a closure: Tune pickles the searcher with its space.
    """

    def __init__(self, space: Mapping[str, Param]):
        self.space = dict(space)

    def __call__(self, trial: Any) -> dict[str, Any]:
        config: dict[str, Any] = {}
        for name in evaluation_order(self.space):
            param = self.space[name]
            if is_active(param, config):
                config[name] = _suggest(trial, name, param)
        return _in_space_order(self.space, config)


def optuna_define_by_run(space: Mapping[str, Param]) -> DefineByRun:
    """The define-by-run function of `space` (see DefineByRun)."""
    return DefineByRun(space)


def _suggest(trial: Any, name: str, param: Param) -> Any:
    if param.choice is not None:
        return trial.suggest_categorical(name, list(param.choice))
    bounds, log = param.bounds, is_log(param)
    if isinstance(bounds, IntRange):  # Optuna's high is inclusive
        return trial.suggest_int(name, bounds.low, bounds.high - 1, log=log)
    if isinstance(bounds, QRange) and log:
        first, last = _grid_indices(bounds)
        k = trial.suggest_int(name, first, last, log=True)
        return quantize(k * bounds.q, bounds.q, bounds.low, bounds.high)
    if isinstance(bounds, QRange):
        value = trial.suggest_float(name, bounds.low, bounds.high, step=bounds.q)
        return quantize(value, bounds.q, bounds.low, bounds.high)
    return trial.suggest_float(name, bounds.low, bounds.high, log=log)


def optuna_distribution(param: Param) -> Any:
    """The Optuna distribution of one hyperparameter's values (randint's high is
    exclusive, Optuna's IntDistribution high inclusive; qloguniform has no step, since
    Optuna has no log scale with a step)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if param.choice is not None:
        return CategoricalDistribution(list(param.choice))
    bounds, log = param.bounds, is_log(param)
    if isinstance(bounds, IntRange):
        return IntDistribution(bounds.low, bounds.high - 1, log=log)
    if isinstance(bounds, QRange) and not log:
        return FloatDistribution(bounds.low, bounds.high, step=bounds.q)
    return FloatDistribution(bounds.low, bounds.high, log=log)


# ------------------------------------------------------------------ features
def unit_features(space: Mapping[str, Param], config: Mapping[str, Any]) -> list[float]:
    """A configuration as features for a model of the space: continuous and integer values
    scaled to [0, 1] (log scale for log domains), choices one-hot, scaled so that a
    mismatch counts 1 in Euclidean distance, as a full range does. A parameter absent
    from the configuration (inactive) gives 0 in each of its features."""
    features: list[float] = []
    for name, param in space.items():
        present = name in config and config[name] is not None
        if param.choice is not None:
            value = config.get(name)
            features += [
                float(present and value == option) / math.sqrt(2) for option in param.choice
            ]
            continue
        if not present:
            features.append(0.0)
            continue
        bounds = param.bounds
        low, high, value = float(bounds.low), float(bounds.high), float(config[name])
        if is_log(param):
            low, high, value = math.log(low), math.log(high), math.log(value)
        features.append((value - low) / (high - low) if high > low else 0.0)
    return features
