"""HPO strategies: the registry below is the only list of them.

Each entry names a module that defines `plan(study, seed) -> Plan` (pure: what the run
will do with its budget, no Ray) and `tuner(study, seed) -> TunerPlan` (Ray Tune's
searcher and scheduler). Modules are imported when first used, so validating a study
imports neither Ray nor Optuna. Strategies never parse the study's space themselves:
`hpo.space` does that, once. A new strategy is one module plus one entry here; the study
validator, the report's order and colours, and the contract tests all read this dict.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

from pydantic import BaseModel

from hpo.strategies.options import PBTOptions, TPEOptions
from hpo.strategies.plan import Plan, TunerPlan

if TYPE_CHECKING:
    from hpo.spec import Study


@dataclass(frozen=True)
class Strategy:
    """A registered strategy; `module` holds its `plan` and `tuner` functions."""

    name: str
    module: str
    summary: str
    # The report measures the others' speed-ups against baselines (time to target).
    baseline: bool = False
    # Whether a seed reproduces the same trials and results when trials run one at a time
    # (tests/test_contracts.py checks what each entry claims).
    reproducible: bool = True
    # How its trials' configurations come about when the searcher does not say per trial
    # (trials.csv's proposed_by: grid, random; TPE labels each trial startup or model).
    proposes: str = "random"
    # The pydantic model of the options a study may give it (None: it takes none).
    options: type[BaseModel] | None = None

    def plan(self, study: Study, seed: int) -> Plan:
        return self._module().plan(study, seed)

    def tuner(self, study: Study, seed: int) -> TunerPlan:
        return self._module().tuner(study, seed)

    def _module(self) -> ModuleType:
        return importlib.import_module(self.module)


def _by_name(*strategies: Strategy) -> dict[str, Strategy]:
    return {strategy.name: strategy for strategy in strategies}


# Order matters: tables, legends and colours follow it (new entries go last, so that
# every existing strategy keeps its colour).
STRATEGIES: dict[str, Strategy] = _by_name(
    Strategy(
        "grid",
        "hpo.strategies.grid",
        "grid search fitted to the budget",
        baseline=True,
        proposes="grid",
    ),
    Strategy("random", "hpo.strategies.random_search", "random search", baseline=True),
    Strategy("sha", "hpo.strategies.sha", "synchronous successive halving, one bracket"),
    Strategy("asha", "hpo.strategies.asha", "Ray Tune's ASHA over random search"),
    # Tune starts a pending trial as soon as a slot is free, in the order trials were
    # created, not in the order HyperBandScheduler would choose (unless the study's
    # concurrency cap binds, see RunningCap): which trials the budget reaches depends on
    # timing (measured: two runs of one seed, one trial at a time, differed).
    Strategy(
        "hyperband",
        "hpo.strategies.hyperband",
        "Ray Tune's synchronous Hyperband",
        reproducible=False,
    ),
    Strategy(
        "optuna",
        "hpo.strategies.tpe",
        "Optuna's multivariate TPE (Bayesian optimization) through OptunaSearch",
        options=TPEOptions,
    ),
    # BOHB's design (model-based proposals, Hyperband-style rungs stop trials) with
    # Optuna's TPE in place of hpbandster's KDE: see hpo/strategies/bohb.py for why.
    Strategy(
        "bohb",
        "hpo.strategies.bohb",
        "TPE proposals learning from every rung, stopped by ASHA (BOHB-style)",
        options=TPEOptions,
    ),
    # Ray's PBT perturbs with Python's global `random` and its exploit choices depend
    # on which trials have reported when: not reproducible per seed.
    Strategy(
        "pbt",
        "hpo.strategies.pbt",
        "Ray Tune's population-based training",
        reproducible=False,
        options=PBTOptions,
    ),
)


def strategy_order(names: Iterable[str]) -> list[str]:
    """Registered strategies in registry order, then any others alphabetically."""
    names = set(names)
    return [s for s in STRATEGIES if s in names] + sorted(names - set(STRATEGIES))


def selected(study: Study, names: Iterable[str] | None) -> list[str]:
    """The strategies a command runs: the study's, or the subset `names` (--strategies);
    a name that is not registered, or not one of the study's, is one StudyError line."""
    from hpo.spec import StudyError

    chosen = list(names or study.strategies)
    for name in chosen:
        if name not in STRATEGIES:
            raise StudyError(
                f"--strategies: {name!r} is not a registered strategy "
                f"(registered: {', '.join(STRATEGIES)})"
            )
        if name not in study.strategies:
            raise StudyError(
                f"--strategies: {name!r} is not one of the study's strategies "
                f"({', '.join(study.strategies)})"
            )
    return chosen


__all__ = ["STRATEGIES", "Plan", "Strategy", "TunerPlan", "selected", "strategy_order"]
