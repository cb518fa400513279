"""Random search: as many seeded random configs as the budget pays full trials for."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hpo import space as spaces
from hpo.strategies.plan import Plan, TunerPlan, full_fidelity_plan, seeded_sampler

if TYPE_CHECKING:
    from hpo.spec import Study


def plan(study: Study, seed: int) -> Plan:
    return full_fidelity_plan(study)


def tuner(study: Study, seed: int) -> TunerPlan:
    return TunerPlan(
        plan(study, seed),
        spaces.tune_space(study.space, study.fixed),
        search_alg=seeded_sampler(seed, study.max_concurrent_trials),
    )
