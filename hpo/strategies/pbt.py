"""Population-based training: Ray Tune's PopulationBasedTraining over the study's space.

A population of as many trials as the budget pays full-fidelity trials for trains in
step (`synch`): every `perturbation_interval` epochs the bottom quantile copies a top
trial's checkpoint (model and optimizer state, trainables.loop) and config, then
perturbs its continuous hyperparameters (uniform/loguniform in the space: scaled by 0.8
or 1.2, or resampled), kept inside the space's bounds. Hyperparameters that shape the
model or the optimizer's state (choices, integers) are inherited, never perturbed: a
copied checkpoint must fit the model it is loaded into.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hpo import space as spaces
from hpo.strategies.options import PBTOptions
from hpo.strategies.plan import (
    PERTURBATION,
    Plan,
    TunerPlan,
    full_fidelity_plan,
    options_of,
    seeded_sampler,
)
from trainables import PROPOSED_BY

if TYPE_CHECKING:
    from hpo.spec import Param, Study


def perturbable(space: dict[str, Param]) -> list[str]:
    """The continuous hyperparameters PBT perturbs."""
    return [name for name, p in space.items() if p.uniform is not None or p.loguniform is not None]


def interval(study: Study) -> int:
    options = options_of(study, "pbt", PBTOptions)
    return options.perturbation_interval or max(1, study.budget.max_epochs // 3)


def plan(study: Study, seed: int) -> Plan:
    planned = full_fidelity_plan(study)  # population × max_epochs ≤ the budget
    notes = {"population": planned.num_samples, "perturbation_interval": interval(study)}
    return Plan(planned.num_samples, planned.planned_trials, planned.planned_epochs, notes)


class KeepInSpace:
    """PBT's `custom_explore_fn`: clip perturbed values to the space's bounds (Ray scales
    by 0.8/1.2 without looking at them) and mark the config as a perturbation."""

    def __init__(self, bounds: dict[str, tuple[float, float]]):
        self.bounds = bounds

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        for name, (low, high) in self.bounds.items():
            config[name] = min(max(float(config[name]), low), high)
        config[PROPOSED_BY] = PERTURBATION
        return config


def tuner(study: Study, seed: int) -> TunerPlan:
    from hpo.strategies.capped_pbt import CappedPBT

    options = options_of(study, "pbt", PBTOptions)
    names = perturbable(study.space)
    bounds = {}
    for name in names:
        domain = study.space[name].uniform or study.space[name].loguniform
        bounds[name] = (domain.low, domain.high)
    scheduler = CappedPBT(
        max_running=study.max_concurrent_trials,
        time_attr="training_iteration",
        perturbation_interval=interval(study),
        hyperparam_mutations={n: spaces.tune_domain(study.space[n]) for n in names},
        quantile_fraction=options.quantile_fraction,
        resample_probability=options.resample_probability,
        custom_explore_fn=KeepInSpace(bounds),
        synch=True,
    )
    return TunerPlan(
        plan(study, seed),
        spaces.tune_space(study.space, study.fixed),
        search_alg=seeded_sampler(seed),  # the scheduler caps running trials itself
        scheduler=scheduler,
        keep_checkpoints=None,
    )
