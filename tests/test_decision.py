"""Decision time: a strategy's searcher and scheduler calls are timed, once each, and the
timing survives Tune's pickling of them (tuner.pkl, searcher state)."""

from __future__ import annotations

import pickle
import time

import cloudpickle

from hpo.strategies import decision


class FakeScheduler:
    def __init__(self):
        self.calls = 0

    def on_trial_result(self, trial, result):
        self.calls += 1
        time.sleep(0.01)  # the work being measured, not a wait for timing
        return self.choose_trial_to_run(None)  # a nested decision call counts once

    def choose_trial_to_run(self, controller):
        time.sleep(0.01)
        return "CONTINUE"


def test_decision_calls_are_timed_once_and_counted_per_run():
    decision.reset("run-a")
    scheduler = decision.timed(FakeScheduler(), "run-a")
    assert isinstance(scheduler, FakeScheduler)
    assert scheduler.on_trial_result("t", {}) == "CONTINUE"
    spent = decision.seconds("run-a")
    assert 0.02 <= spent < 0.5  # both sleeps, the nested call not counted twice
    assert decision.seconds("run-b") == 0.0


def test_timed_objects_pickle_as_the_plain_original_with_its_state():
    """What Tune saves and restores is the object as it would be without timing."""
    decision.reset("run-c")
    scheduler = decision.timed(FakeScheduler(), "run-c")
    scheduler.on_trial_result("t", {})
    for dumps in (pickle.dumps, cloudpickle.dumps):
        copy = pickle.loads(dumps(scheduler))
        assert type(copy) is FakeScheduler and copy.__dict__ == {"calls": 1}
        before = decision.seconds("run-c")
        copy.choose_trial_to_run(None)
        assert decision.seconds("run-c") == before


def test_real_strategy_objects_are_timed(study_dict, write_study):
    from hpo.spec import load_study
    from hpo.strategies import STRATEGIES

    study = load_study(write_study(study_dict))
    plan = STRATEGIES["bohb"].tuner(study, 0)
    searcher = decision.timed(plan.search_alg, "run-d")
    scheduler = decision.timed(plan.scheduler, "run-d")
    assert type(scheduler).__name__ == "TimedAsyncHyperBandScheduler"
    assert type(pickle.loads(pickle.dumps(scheduler))).__name__ == "AsyncHyperBandScheduler"
    decision.reset("run-d")
    searcher.set_search_properties("val_accuracy", "max", plan.param_space)
    assert searcher.suggest("1") is not None
    assert decision.seconds("run-d") > 0
