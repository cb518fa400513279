"""Synchronous successive halving as a Ray Tune TrialScheduler.

Ray Tune offers the asynchronous variant (ASHA) and Hyperband's brackets, but not a
single synchronous bracket, so it is written here: n configs train for r epochs and
pause; once all of them have reached the rung, the best 1/eta are resumed (from their
checkpoints) up to r*eta epochs and the rest are stopped, and so on up to R.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from hpo.strategies.brackets import rung_plan

if TYPE_CHECKING:
    from ray.tune.execution.tune_controller import TuneController


class RunningCap:
    """At most `max_running` trials running (or starting) at once, for pausing schedulers.

    Tune's searcher-side limit counts paused trials as live, so a bracket waiting for its
    last trials would never get them; the scheduler must cap concurrency. But Ray Tune
    2.60 starts every PENDING trial that resources allow, whatever the scheduler's
    `choose_trial_to_run` says (TuneController._maybe_add_actors); only PAUSED trials wait
    to be chosen. So where the cap binds, new trials are parked as PAUSED and a trial
    starts when the scheduler chooses it (measured: without parking, a study capped at one
    trial ran two at once on two CPUs). Where the cluster cannot run more trials than the
    cap anyway, nothing is parked: a parked trial starts only once a slot is free, which
    made a SHA study 1.14x slower (median wall time, 3 paired runs) than Tune's own
    staging of pending trials.
    """

    RECHECK_S = 5.0  # how often the cluster's size is asked again (nodes come and go)

    def __init__(self, max_running: int | None):
        self.max_running = max_running
        self.parked: set[Trial] = set()  # new trials held back until chosen
        self._launched: set[Trial] = set()  # chosen, not yet reporting
        self._binds, self._checked = False, -math.inf

    def hold_new_trials(self, tune_controller: TuneController) -> None:
        """Park every PENDING trial this scheduler did not choose (new or retried)."""
        if not self._active(tune_controller):
            return
        for trial in tune_controller.get_trials():
            if trial.status == Trial.PENDING and trial not in self._launched:
                tune_controller._set_trial_status(trial, Trial.PAUSED)
                self.parked.add(trial)

    def full(self, tune_controller: TuneController) -> bool:
        if not self._active(tune_controller):
            return False
        busy = sum(
            1
            for t in tune_controller.get_trials()
            if t.status == Trial.RUNNING or (t.status == Trial.PENDING and t in self._launched)
        )
        return busy >= self.max_running

    def waiting(self, trial: Trial) -> bool:
        """Never started: parked, or PENDING and not chosen yet."""
        return trial in self.parked or (
            trial.status == Trial.PENDING and trial not in self._launched
        )

    def launch(self, trial: Trial) -> Trial:
        self.parked.discard(trial)
        self._launched.add(trial)
        return trial

    def reported(self, trial: Trial) -> None:
        self._launched.discard(trial)

    def _active(self, tune_controller: TuneController) -> bool:
        """Whether the cap is below the number of trials the cluster can run at once."""
        if not self.max_running:
            return False
        now = time.monotonic()
        if now - self._checked >= self.RECHECK_S:
            trials = tune_controller.get_trials()
            if not trials:
                return False
            # A replay's simulated controller says how many trials its workers run.
            slots = getattr(tune_controller, "trial_slots", None)
            self._binds = self.max_running < (slots() if slots else _cluster_slots(trials[0]))
            self._checked = now
        return self._binds


def _cluster_slots(trial: Trial) -> int:
    """Trials of this trial's resources that the Ray cluster could run at once."""
    import ray

    need = trial.placement_group_factory.required_resources
    have = ray.cluster_resources()
    return min(
        (int(have.get(name, 0.0) // amount) for name, amount in need.items() if amount > 0),
        default=0,
    )


def stop_trial(tune_controller: TuneController, trial: Trial) -> None:
    """Stop a trial from a scheduler and make sure the saved experiment state says so.

    Ray Tune 2.60 re-saves only the trials it marked as changed; a PAUSED trial stopped by
    a scheduler is not marked, so the state on disk would still say PAUSED and
    `Tuner.restore` would train a trial that successive halving had already discarded.
    """
    tune_controller.stop_trial(trial)
    controller = getattr(tune_controller, "_tune_controller", tune_controller)  # unwrap
    mark = getattr(controller, "_mark_trial_to_checkpoint", None)
    if mark is not None:
        mark(trial)


class MarkingController:
    """Proxy for Ray's own schedulers (Hyperband): its `stop_trial` is `stop_trial` above."""

    def __init__(self, tune_controller: TuneController):
        self._controller = tune_controller

    def stop_trial(self, trial: Trial) -> None:
        stop_trial(self._controller, trial)

    def __getattr__(self, name: str):
        return getattr(self._controller, name)


class SynchronousSuccessiveHalving(FIFOScheduler):
    """One synchronous successive-halving bracket over `num_trials` trials."""

    def __init__(
        self,
        num_trials: int,
        min_t: int,
        max_t: int,
        reduction_factor: int = 3,
        metric: str | None = None,
        mode: str | None = None,
        time_attr: str = "training_iteration",
        max_running: int | None = None,
    ):
        super().__init__()
        self.cap = RunningCap(max_running)
        self._supports_buffered_results = False  # decisions are made per epoch
        self.rungs = rung_plan(num_trials, min_t, max_t, reduction_factor)
        self._metric, self._mode, self._time_attr = metric, mode, time_attr
        self._rung = 0
        self._order: dict[Trial, int] = {}  # trial -> order of arrival (tie breaker)
        self._members: set[Trial] = set()  # trials still in the current rung
        self._scores: dict[Trial, float] = {}  # metric of members that reached the rung
        self._to_resume: set[Trial] = set()  # promoted trials waiting in PAUSED
        self.history: list[list[str]] = []  # trial ids promoted out of each rung

    def set_search_properties(self, metric: str | None, mode: str | None, **spec) -> bool:
        if (self._metric and metric) or (self._mode and mode):
            return False
        self._metric = self._metric or metric
        self._mode = self._mode or mode
        return True

    @property
    def milestone(self) -> int:
        return self.rungs[self._rung][1]

    def on_trial_add(self, tune_controller: TuneController, trial: Trial) -> None:
        if self._metric is None or self._mode not in ("min", "max"):
            raise ValueError("SynchronousSuccessiveHalving needs metric and mode")
        self._order[trial] = len(self._order)
        if self._rung == 0 and len(self._order) <= self.rungs[0][0]:
            self._members.add(trial)

    def on_trial_result(self, tune_controller: TuneController, trial: Trial, result: dict) -> str:
        self.cap.reported(trial)
        if trial not in self._members:
            return TrialScheduler.STOP  # beyond the bracket: nothing left for it to do
        self._to_resume.discard(trial)
        if result[self._time_attr] < self.milestone:
            return TrialScheduler.CONTINUE
        if self._rung == len(self.rungs) - 1:
            return TrialScheduler.STOP  # reached R: the trial is done
        self._scores[trial] = self._score(result)
        if not self._rung_complete():
            return TrialScheduler.PAUSE
        return self._promote(tune_controller, current=trial)

    def on_trial_complete(self, tune_controller: TuneController, trial: Trial, result: dict):
        self.on_trial_remove(tune_controller, trial)

    def on_trial_error(self, tune_controller: TuneController, trial: Trial) -> None:
        self.on_trial_remove(tune_controller, trial)

    def on_trial_remove(self, tune_controller: TuneController, trial: Trial) -> None:
        # A trial that ends on its own (diverged, errored, stopped by the budget) leaves
        # its rung; the rest may then be complete.
        if trial not in self._members:
            return
        self._members.discard(trial)
        self._scores.pop(trial, None)
        if self._members and self._rung_complete():
            self._promote(tune_controller, current=None)

    def choose_trial_to_run(self, tune_controller: TuneController) -> Trial | None:
        self.cap.hold_new_trials(tune_controller)
        if self.cap.full(tune_controller):
            return None
        for trial in tune_controller.get_trials():
            if trial in self._members and self.cap.waiting(trial):
                return self.cap.launch(trial)
        for trial in tune_controller.get_trials():
            if trial.status == Trial.PAUSED and trial in self._to_resume:
                return self.cap.launch(trial)  # forgotten only once it reports again
        return None

    def debug_string(self) -> str:
        return f"SynchronousSuccessiveHalving rungs={self.rungs} at rung {self._rung}"

    def _score(self, result: dict) -> float:
        value = float(result[self._metric])
        if math.isnan(value):
            return -math.inf
        return value if self._mode == "max" else -value

    def _rung_complete(self) -> bool:
        arrived = len(self._order) >= self.rungs[0][0] or self._rung > 0
        return arrived and all(t in self._scores for t in self._members)

    def _promote(self, tune_controller: TuneController, current: Trial | None) -> str:
        """Keep the best of the rung (ties: earlier trial), stop the others."""
        ranked = sorted(self._members, key=lambda t: (-self._scores[t], self._order[t]))
        keep = self.rungs[self._rung + 1][0]
        winners, losers = ranked[:keep], ranked[keep:]
        self.history.append([t.trial_id for t in winners])
        self._rung += 1
        self._members, self._scores = set(winners), {}
        for trial in losers:
            if trial is not current:
                stop_trial(tune_controller, trial)
        for trial in winners:
            if trial is not current:
                self._to_resume.add(trial)
        if current is None:
            return TrialScheduler.CONTINUE
        return TrialScheduler.CONTINUE if current in winners else TrialScheduler.STOP
