"""Tune's variant generator over configurations given whole, for spaces with conditions.

A conditional parameter must be absent from the trials where it is inactive, and Ray
Tune's BasicVariantGenerator cannot leave a key out: every key of `param_space` is in
every trial, and a `points_to_evaluate` entry may only set keys that `param_space`
already has (any other raises KeyError in Ray 2.60). So the grid's points, or the
seeded random configurations (hpo.space), are drawn up front and this generator makes
one trial of each, in order: the fixed values of `param_space` plus the point.

It stays a BasicVariantGenerator, not a Searcher, so that everything Tune and this
project do with the variant generator holds unchanged: PBT refuses a Searcher
(SearchGenerator) beside it, the generator caps running trials itself
(`max_concurrent`), Tune keeps up to 200 trials pending, the replay treats it as Tune
does, and its state (a plain __dict__: the points and how many were handed out) is
saved and restored with the experiment. It builds trials as BasicVariantGenerator
and SearchGenerator do in Ray 2.60 (`_create_trial_from_spec`).
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from ray.tune.experiment import _convert_to_experiment_list
from ray.tune.experiment.config_parser import _create_trial_from_spec, _make_parser
from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.tune.search.sample import Domain
from ray.tune.search.variant_generator import format_vars


class PointsGenerator(BasicVariantGenerator):
    def __init__(self, points: list[dict[str, Any]], max_concurrent: int = 0):
        super().__init__(max_concurrent=max_concurrent)
        self.points = [dict(point) for point in points]
        self.handed_out = 0
        self._spec: dict[str, Any] | None = None

    def add_configurations(self, experiments: Any) -> None:
        (experiment,) = _convert_to_experiment_list(experiments)
        self._spec = experiment.spec
        self._total_samples = len(self.points)

    def next_trial(self):
        if self.is_finished():
            return None
        if self.max_concurrent > 0 and len(self._live_trials) >= self.max_concurrent:
            return None
        if self.handed_out >= len(self.points):
            self.set_finished()
            return None
        trial = self._trial(self.handed_out, self.points[self.handed_out])
        self.handed_out += 1
        self._live_trials.add(trial.trial_id)
        return trial

    def _trial(self, index: int, point: dict[str, Any]):
        spec = copy.deepcopy(self._spec)
        # param_space's domains (and grid_search entries) stand for the searched
        # parameters: the point replaces them, and leaves out an inactive one.
        fixed = {k: v for k, v in spec["config"].items() if not _searched(v)}
        spec["config"] = {**fixed, **copy.deepcopy(point)}
        return _create_trial_from_spec(
            spec,
            _parser(),
            evaluated_params=dict(point),
            experiment_tag=f"{index}_{format_vars({(k,): v for k, v in point.items()})}",
            trial_id=f"{self._uuid_prefix}{index:05d}",
        )


def _searched(value: Any) -> bool:
    return isinstance(value, Domain) or (isinstance(value, dict) and "grid_search" in value)


@cache
def _parser():
    return _make_parser()
