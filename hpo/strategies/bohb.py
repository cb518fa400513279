"""Model-based multi-fidelity (BOHB-style): TPE proposes, ASHA's rungs stop trials.

BOHB (Falkner et al., 2018) fits a TPE-like density model to the results at the highest
budget that has enough of them and lets Hyperband's rungs stop trials. Ray Tune ships
it as TuneBOHB + HyperBandForBOHB, on hpbandster. They install here (hpbandster 0.7.4,
ConfigSpace 1.2.2) but were not chosen: hpbandster's last release is from 2018 (it pulls
Pyro4, netifaces and statsmodels into every install), and HyperBandForBOHB is Ray's
synchronous Hyperband, whose pause/resume cost and creation-order trial starts make the
`hyperband` strategy slow and not reproducible per seed already. Instead: Optuna's
multivariate TPE (maintained, already a dependency) inside Ray's OptunaSearch, with Ray's
ASHAScheduler (grace r, max R, η). Every trial a rung stopped is told to TPE as pruned
at the rung it reached (hpo.strategies.tpe_search), so the model ranks it by how far it
got, never as if its low-fidelity value were final.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hpo import space as spaces
from hpo.strategies.options import TPEOptions
from hpo.strategies.plan import Plan, TunerPlan, options_of

if TYPE_CHECKING:
    from hpo.spec import Study


def startup_trials(study: Study) -> int:
    """Random trials before TPE proposes: BOHB's own rule, a model once it has one point
    more than there are hyperparameters (min_points_in_model = d + 1), at least 2."""
    options = options_of(study, "bohb", TPEOptions)
    return options.n_startup_trials or max(2, len(study.space) + 1)


def plan(study: Study, seed: int) -> Plan:
    # Upper bound: every trial stopped at the first rung; the budget stopper ends the run.
    trials = study.budget.total_epochs // study.budget.min_epochs
    return Plan(
        trials, trials, planned_epochs=None, notes={"startup_trials": startup_trials(study)}
    )


def tuner(study: Study, seed: int) -> TunerPlan:
    from ray.tune.schedulers import ASHAScheduler

    from hpo.strategies.tpe_search import tpe_searcher

    b = study.budget
    options = options_of(study, "bohb", TPEOptions)
    return TunerPlan(
        plan(study, seed),
        spaces.tune_space(study.space, study.fixed),
        search_alg=tpe_searcher(study, seed, options, startup_trials(study)),
        scheduler=ASHAScheduler(
            time_attr="training_iteration",
            max_t=b.max_epochs,
            grace_period=b.min_epochs,
            reduction_factor=b.reduction_factor,
        ),
        max_concurrent_trials=study.max_concurrent_trials,
    )
