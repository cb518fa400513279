"""Ray Tune's OptunaSearch with Optuna's TPE, telling Optuna what each trial really was.

Two things Ray's OptunaSearch does not do, and a fair comparison needs:
- Each proposal says whether it came from TPE's random start-up phase or from its model
  (`proposed_by` in the trial's config, then trials.csv), counted the way TPESampler
  decides: fewer finished (complete or pruned) trials than `n_startup_trials` → random.
- A trial that ended before `max_t` epochs (stopped at a rung, or by the run's epoch
  budget) is told to Optuna as PRUNED, with its per-epoch values already reported, not as
  COMPLETE with its low-fidelity value: TPE then ranks it below every trial that went
  further (Optuna sorts pruned trials by the step they reached, then by value), i.e. it
  learns from the rung the trial reached instead of mistaking it for a final result.
  A trial that diverged or failed is told FAIL.

Optuna searches the study's space itself, define-by-run (hpo.space.DefineByRun): every
domain natively (log integers, steps), and a conditional parameter suggested only where
its parents take its values, so a trial's config has exactly its active parameters.
Tune's `param_space` holds the fixed values and the domains of the parameters every trial
has, which each proposal replaces; conditional parameters are not in it (Tune would
keep a domain object in the configs where they are inactive).
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune.search.optuna import OptunaSearch

from hpo.strategies.plan import MODEL, STARTUP
from trainables import PROPOSED_BY


class RungAwareOptunaSearch(OptunaSearch):
    def __init__(self, *, max_t: int, n_startup_trials: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.max_t = max_t
        self.n_startup_trials = n_startup_trials

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec: Any
    ) -> bool:
        """Accept Tune's param_space: the searched space is the study's own (given at
        construction, with metric and mode); its domains are what proposals replace."""
        return True

    def suggest(self, trial_id: str) -> dict | None:
        label = self._next_label() if trial_id not in self._ot_trials else None
        config = super().suggest(trial_id)
        if config is None:
            return None
        return {**config, PROPOSED_BY: label or MODEL}

    def _next_label(self) -> str:
        from optuna.trial import TrialState

        done = self._ot_study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)
        )
        return STARTUP if len(done) < self.n_startup_trials else MODEL

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        from optuna.trial import TrialState

        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        value = (result or {}).get(self.metric)
        reached = int((result or {}).get("training_iteration", 0))
        ot_trial = self._ot_trials[trial_id]
        if error or value is None or not math.isfinite(float(value)):
            self._ot_study.tell(ot_trial, state=TrialState.FAIL)
        elif reached < self.max_t:
            self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
        else:
            self._ot_study.tell(ot_trial, float(value), state=TrialState.COMPLETE)
        self._completed_trials.add(trial_id)


def tpe_searcher(study: Any, seed: int, options: Any, startup: int) -> RungAwareOptunaSearch:
    """The TPE searcher of the `optuna` and `bohb` strategies, `startup` random trials
    first (each strategy's plan says how many). On a space with conditions, multivariate
    TPE models each group of parameters that occur together (Optuna's `group`), instead
    of sampling every conditional parameter independently of the others."""
    import warnings

    from optuna.exceptions import ExperimentalWarning
    from optuna.samplers import TPESampler

    from hpo import space as spaces

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        sampler = TPESampler(
            n_startup_trials=startup,
            multivariate=options.multivariate,
            group=options.multivariate and spaces.is_conditional(study.space),
            constant_liar=options.constant_liar,
            seed=seed,
        )
    return RungAwareOptunaSearch(
        space=spaces.optuna_define_by_run(study.space),
        metric=study.metric.name,
        mode=study.metric.mode,
        sampler=sampler,
        max_t=study.budget.max_epochs,
        n_startup_trials=startup,
    )
