"""Population-based training: Ray Tune's PopulationBasedTraining over the study's space.

A population of as many trials as the budget pays full-fidelity trials for trains in
step (`synch`): every `perturbation_interval` epochs the bottom quantile copies a top
trial's checkpoint (model and optimizer state, trainables.loop) and config, then
perturbs its continuous hyperparameters (uniform/loguniform in the space: scaled by 0.8
or 1.2, or resampled), kept inside the space's bounds. Hyperparameters that shape the
model or the optimizer's state (choices, integers) are inherited, never perturbed: a
copied checkpoint must fit the model it is loaded into. Nor are quantized ones (a
scaled value leaves the grid) or conditional ones (Ray's PBT would add a mutated key
to every trial, also where the parameter is inactive); an exploit copies the source's
config whole, with the conditional parameters that trial has.
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
    random_configs,
)
from trainables import PROPOSED_BY

if TYPE_CHECKING:
    from hpo.spec import Param, Study


def perturbable(space: dict[str, Param]) -> list[str]:
    """The continuous hyperparameters PBT perturbs (every trial has them)."""
    return list(spaces.perturbable(space))


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
    bounds = spaces.perturbable(study.space)
    planned = plan(study, seed)
    scheduler = CappedPBT(
        max_running=study.max_concurrent_trials,
        time_attr="training_iteration",
        perturbation_interval=interval(study),
        hyperparam_mutations={n: spaces.tune_domain(study.space[n]) for n in bounds},
        quantile_fraction=options.quantile_fraction,
        resample_probability=options.resample_probability,
        custom_explore_fn=KeepInSpace(bounds),
        synch=True,
    )
    return TunerPlan(
        planned,
        scheduler=scheduler,
        keep_checkpoints=None,
        **random_configs(study, seed, planned.num_samples),  # the scheduler caps running trials
    )
