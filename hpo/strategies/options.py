"""Options a study may give a strategy (`strategy_options: {optuna: {n_startup_trials: 4}}`).

Pydantic models without Ray or Optuna, so `hpo validate` checks them like every other
field. A strategy without an options model takes none.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, PositiveInt


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TPEOptions(_Options):
    """Optuna's TPE sampler (strategies `optuna` and `bohb`)."""

    # Random start-up trials before TPE's model proposes; default: `optuna` a third of its
    # trials, `bohb` one more than there are hyperparameters, at least 2 (Optuna's own
    # default of 10 is the whole budget of a small study, which made "Bayesian
    # optimization" random search).
    n_startup_trials: PositiveInt | None = None
    # One joint Parzen estimator over all hyperparameters (Optuna's multivariate TPE)
    # instead of one per hyperparameter.
    multivariate: bool = True
    # Running trials count as bad results while they run, so that two trials asked at once
    # do not get the same proposal.
    constant_liar: bool = True


class PBTOptions(_Options):
    """Ray Tune's PopulationBasedTraining (strategy `pbt`)."""

    # Epochs between exploit/explore steps; default: a third of max_epochs.
    perturbation_interval: PositiveInt | None = None
    # Trials in the bottom fraction copy a trial from the top fraction.
    quantile_fraction: float = Field(default=0.25, gt=0, le=0.5)
    # Chance that explore resamples a hyperparameter instead of scaling it by 0.8 or 1.2.
    resample_probability: float = Field(default=0.25, ge=0, le=1)
