"""What a strategy plans for one run (pure data, no Ray) and what it hands to Tune."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpo.spec import Study


# A plan's note saying that it needs more than the run's budget, and what happens then.
OVER_BUDGET = "over_budget"


@dataclass(frozen=True)
class Plan:
    """A strategy's plan for one strategy × seed run, computed without Ray (`hpo validate`,
    `hpo status`, the contract suite)."""

    num_samples: int  # Tune's num_samples: trials it may create (grid: repeats of the grid)
    planned_trials: int  # trials the strategy means to start (an upper bound if open-ended)
    # Epochs the plan spends if it runs to its end; None when it is open-ended and the
    # run's epoch budget (hpo.strategies.budget.EpochBudget) is what ends it.
    planned_epochs: int | None
    notes: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """The plan as `hpo validate` prints it."""
        return {"num_samples": self.num_samples, **self.notes}


@dataclass
class TunerPlan:
    """The pieces of `tune.Tuner` that differ between strategies (Ray Tune's objects)."""

    plan: Plan
    param_space: dict[str, Any]
    search_alg: Any = None
    scheduler: Any = None
    # Tune's own cap (a ConcurrencyLimiter): only for searchers; the variant generator and
    # the pausing schedulers take the study's cap themselves.
    max_concurrent_trials: int | None = None
    # Checkpoints kept per trial (the best by the metric); None keeps every one, which PBT
    # needs: a trial copies another's checkpoint after that trial has trained on.
    keep_checkpoints: int | None = 1


def full_trials(study: Study) -> int:
    """How many full-fidelity (R-epoch) trials the per-run budget pays for."""
    return max(1, study.budget.total_epochs // study.budget.max_epochs)


def full_fidelity_plan(study: Study) -> Plan:
    """As many R-epoch trials as the budget pays for (random search, TPE)."""
    trials = full_trials(study)
    return Plan(trials, trials, trials * study.budget.max_epochs)


def seeded_sampler(seed: int, max_concurrent: int | None = None):
    """Tune's random/grid variant generator; `max_concurrent` only for strategies that
    never pause trials (a paused trial still counts against the generator's limit)."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(random_state=seed, max_concurrent=max_concurrent or 0)


def random_configs(
    study: Study, seed: int, count: int, max_concurrent: int | None = None
) -> dict[str, Any]:
    """`param_space` and `search_alg` of a run over `count` seeded random configurations
    (random search, and the schedulers over it): Tune's variant generator sampling the
    space's domains; for a space with conditions, which Tune cannot sample (it gives
    every trial every key), the configurations drawn up front by hpo.space (only active
    parameters) and handed out in order. `max_concurrent` as in `seeded_sampler`."""
    from hpo import space as spaces

    if not spaces.is_conditional(study.space):
        return {
            "param_space": spaces.tune_space(study.space, study.fixed),
            "search_alg": seeded_sampler(seed, max_concurrent),
        }
    return _points(study, spaces.sample_points(study.space, count, seed), max_concurrent)


def grid_configs(
    study: Study, seed: int, values: dict[str, list[Any]], max_concurrent: int | None = None
) -> dict[str, Any]:
    """`param_space` and `search_alg` of a grid run over `values` (hpo.space.grid_values):
    Tune's grid_search per dimension; for a space with conditions, the grid's valid
    combinations only (hpo.space.grid_points), each once, in order."""
    from hpo import space as spaces

    if not spaces.is_conditional(study.space):
        return {
            "param_space": spaces.grid_space(values, study.fixed),
            "search_alg": seeded_sampler(seed, max_concurrent),
        }
    return _points(study, spaces.grid_points(study.space, values), max_concurrent)


def _points(study: Study, points: list[dict[str, Any]], max_concurrent: int | None):
    from hpo import space as spaces
    from hpo.strategies.points import PointsGenerator

    return {
        # The domains of the parameters every trial has stay in param_space (what Tune
        # is told is searched); each point replaces them (hpo.strategies.points).
        "param_space": spaces.tune_space(study.space, study.fixed),
        "search_alg": PointsGenerator(points, max_concurrent=max_concurrent or 0),
    }


# trials.csv's proposed_by: how a searcher proposed a trial's configuration.
STARTUP, MODEL, PERTURBATION = "startup", "model", "perturbation"


def options_of(study: Study, strategy: str, model: Any) -> Any:
    """The study's options for `strategy` as its options model (defaults where unset)."""
    return model(**study.strategy_options.get(strategy, {}))
