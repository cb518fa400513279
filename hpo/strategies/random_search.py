"""Random search: as many seeded random configs as the budget pays full trials for."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hpo.strategies.plan import Plan, TunerPlan, full_fidelity_plan, random_configs

if TYPE_CHECKING:
    from hpo.spec import Study


def plan(study: Study, seed: int) -> Plan:
    return full_fidelity_plan(study)


def tuner(study: Study, seed: int) -> TunerPlan:
    planned = plan(study, seed)
    return TunerPlan(
        planned,
        **random_configs(study, seed, planned.num_samples, study.max_concurrent_trials),
    )
