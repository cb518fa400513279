"""HPO strategies: a dict of factories, each turning (study, seed) into what a Tuner needs.

Strategies never parse the study's space themselves: `hpo.space` does that, once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hpo import space as spaces
from hpo.spec import Study
from hpo.strategies.successive_halving import (
    SynchronousSuccessiveHalving,
    rung_plan,
    trials_for_budget,
)


@dataclass
class TunerPlan:
    """The pieces of `tune.Tuner` that differ between strategies."""

    strategy: str
    param_space: dict[str, Any]
    num_samples: int
    search_alg: Any = None
    scheduler: Any = None
    # Tune's own cap (a ConcurrencyLimiter): only for searchers; the variant generator and
    # the pausing schedulers take the study's cap themselves.
    max_concurrent_trials: int | None = None
    notes: dict[str, Any] = field(default_factory=dict)


def full_trials(study: Study) -> int:
    """How many full-fidelity (R-epoch) trials the per-run budget pays for."""
    return max(1, study.budget.total_epochs // study.budget.max_epochs)


def _seeded_sampler(seed: int, max_concurrent: int | None = None):
    """Tune's random/grid variant generator; `max_concurrent` only for strategies that
    never pause trials (a paused trial still counts against the generator's limit)."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(random_state=seed, max_concurrent=max_concurrent or 0)


def grid(study: Study, seed: int) -> TunerPlan:
    values = spaces.grid_values(study.space, full_trials(study))
    return TunerPlan(
        "grid",
        spaces.grid_space(values, study.fixed),
        num_samples=1,  # each grid point once
        search_alg=_seeded_sampler(seed, study.max_concurrent_trials),
        notes={"grid": values, "grid_points": spaces.grid_size(values)},
    )


def random(study: Study, seed: int) -> TunerPlan:
    return TunerPlan(
        "random",
        spaces.tune_space(study.space, study.fixed),
        num_samples=full_trials(study),
        search_alg=_seeded_sampler(seed, study.max_concurrent_trials),
    )


def sha(study: Study, seed: int) -> TunerPlan:
    b = study.budget
    n = trials_for_budget(b.total_epochs, b.min_epochs, b.max_epochs, b.reduction_factor)
    scheduler = SynchronousSuccessiveHalving(
        n, b.min_epochs, b.max_epochs, b.reduction_factor, max_running=study.max_concurrent_trials
    )
    return TunerPlan(
        "sha",
        spaces.tune_space(study.space, study.fixed),
        num_samples=n,
        search_alg=_seeded_sampler(seed),
        scheduler=scheduler,
        notes={"rungs": rung_plan(n, b.min_epochs, b.max_epochs, b.reduction_factor)},
    )


def asha(study: Study, seed: int) -> TunerPlan:
    from ray.tune.schedulers import ASHAScheduler

    b = study.budget
    scheduler = ASHAScheduler(
        time_attr="training_iteration",
        max_t=b.max_epochs,
        grace_period=b.min_epochs,
        reduction_factor=b.reduction_factor,
    )
    return TunerPlan(
        "asha",
        spaces.tune_space(study.space, study.fixed),
        # Upper bound: the budget stopper ends the run once its epochs are spent.
        num_samples=b.total_epochs // b.min_epochs,
        search_alg=_seeded_sampler(seed, study.max_concurrent_trials),
        scheduler=scheduler,
    )


def hyperband(study: Study, seed: int) -> TunerPlan:
    from hpo.strategies.capped_hyperband import CappedHyperBand

    b = study.budget
    scheduler = CappedHyperBand(
        max_running=study.max_concurrent_trials,
        time_attr="training_iteration",
        max_t=b.max_epochs,
        reduction_factor=b.reduction_factor,
    )
    return TunerPlan(
        "hyperband",
        spaces.tune_space(study.space, study.fixed),
        num_samples=b.total_epochs,  # upper bound; the budget stopper ends the run
        search_alg=_seeded_sampler(seed),
        scheduler=scheduler,
    )


def optuna(study: Study, seed: int) -> TunerPlan:
    from optuna.samplers import TPESampler
    from ray.tune.search.optuna import OptunaSearch

    return TunerPlan(
        "optuna",
        spaces.tune_space(study.space, study.fixed),
        num_samples=full_trials(study),
        search_alg=OptunaSearch(sampler=TPESampler(seed=seed)),
        max_concurrent_trials=study.max_concurrent_trials,
    )


STRATEGIES: dict[str, Callable[[Study, int], TunerPlan]] = {
    "grid": grid,
    "random": random,
    "sha": sha,
    "asha": asha,
    "hyperband": hyperband,
    "optuna": optuna,
}

__all__ = ["STRATEGIES", "SynchronousSuccessiveHalving", "TunerPlan"]
