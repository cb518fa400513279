"""Grid search: explicit `grid:` values, every other dimension discretized so that the
whole grid fits the run's budget of full-fidelity trials (hpo.space.grid_values); with
conditions, only the valid combinations are points (and counted)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hpo import space as spaces
from hpo.strategies.plan import OVER_BUDGET, Plan, TunerPlan, full_trials, grid_configs

if TYPE_CHECKING:
    from hpo.spec import Study


def plan(study: Study, seed: int) -> Plan:
    affordable = full_trials(study)
    values = spaces.grid_values(study.space, affordable)
    points = spaces.grid_size(values, study.space)
    notes: dict = {"grid": values, "grid_points": points}
    if points > affordable:  # explicit grid values and choices are used whole
        notes[OVER_BUDGET] = (
            f"the grid has {points} points, the budget pays for {affordable} full trials: "
            "the run ends when its epochs are spent, before the last points"
        )
    return Plan(
        num_samples=1,  # each grid point once
        planned_trials=points,
        planned_epochs=points * study.budget.max_epochs,
        notes=notes,
    )


def tuner(study: Study, seed: int) -> TunerPlan:
    planned = plan(study, seed)
    return TunerPlan(
        planned, **grid_configs(study, seed, planned.notes["grid"], study.max_concurrent_trials)
    )
