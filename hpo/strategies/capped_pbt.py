"""Ray Tune's PopulationBasedTraining, with the running-trial cap that pausing schedulers
need (synchronous PBT pauses every member at each perturbation step), and two guards
against synchronous PBT waiting forever at a perturbation step."""

from __future__ import annotations

import logging

from ray.tune.experiment import Trial
from ray.tune.schedulers import PopulationBasedTraining

from hpo.strategies.successive_halving import RunningCap

log = logging.getLogger(__name__)


class CappedPBT(PopulationBasedTraining):
    """`PopulationBasedTraining` that runs at most `max_running` trials at once (see
    `successive_halving.RunningCap`). Tune's own limit counts paused members as running,
    so it would let only `max_running` members exist: the population would shrink to the
    cap.

    Synchronous PBT perturbs only when a result arrives and every other live member has
    reached the step, and runs only members behind the step. So a member that leaves
    below the step without reporting (stopped, errored, diverged: Tune's stopper ends it
    before PBT sees the result) strands the others: all paused at the step, none
    runnable, nothing left to report. `choose_trial_to_run` perturbs then instead, and
    `_exploit` keeps Tune from stopping an exploited member (see there)."""

    def __init__(self, *, max_running: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.cap = RunningCap(max_running)

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        self.cap.reported(trial)
        return super().on_trial_result(tune_controller, trial, result)

    def choose_trial_to_run(self, tune_controller) -> Trial | None:
        """PBT's choice (the member furthest behind), where a parked new trial counts as
        the PENDING trial it would be without the cap."""
        self.cap.hold_new_trials(tune_controller)
        if self.cap.full(tune_controller):
            return None
        trial = super().choose_trial_to_run(tune_controller)
        if trial is None and self._stranded(tune_controller):
            self._perturb_stranded(tune_controller)
            trial = super().choose_trial_to_run(tune_controller)
        return None if trial is None else self.cap.launch(trial)

    def _exploit(self, tune_controller, trial: Trial, trial_to_clone: Trial) -> None:
        """Ray's exploit, without the STOP that Tune leaves behind for a member exploited
        while its pause is still saving (status RUNNING, save in flight: it reached the
        step just before the member whose result completed it). PBT pauses it with
        `pause_trial(should_checkpoint=False)`; Tune's stop caches STOP "for after the
        save" and then drops the save's future, so the STOP waits for the member's next
        save, the first epoch after it resumes, and ends it there (Ray 2.60)."""
        pausing = trial.status == Trial.RUNNING and trial.is_saving
        super()._exploit(tune_controller, trial, trial_to_clone)
        if pausing and trial.status == Trial.PAUSED:
            controller = getattr(tune_controller, "_tune_controller", tune_controller)
            cached = getattr(controller, "_cached_trial_decisions", None)
            if cached is not None:
                cached.pop(trial.trial_id, None)

    def _stranded(self, tune_controller) -> bool:
        """Nothing running or starting, and paused members that PBT will not run: every
        member that can still report waits at the perturbation step."""
        if not self._synch:
            return False
        trials = tune_controller.get_trials()
        if any(t.status in (Trial.RUNNING, Trial.PENDING) for t in trials):
            return False
        return any(t.status == Trial.PAUSED for t in trials)

    def _perturb_stranded(self, tune_controller) -> None:
        """The perturbation step that the last member's result would have made (Ray's
        synchronous branch of `on_trial_result`), at the time the members wait at."""
        waiting = [t for t in tune_controller.get_trials() if not t.is_finished()]
        time = max(self._trial_state[t].last_train_time for t in waiting)
        log.warning(
            "synchronous PBT: every member that can still report waits at step %s "
            "(the others ended below it); perturbing now",
            time,
        )
        lower, upper = self._quantiles()
        middle = [t for t in tune_controller.get_trials() if t not in lower and t not in upper]
        for trial in upper + middle + lower:  # checkpoint the top before exploiting it
            self._trial_state[trial].last_perturbation_time = time
            self._checkpoint_or_exploit(trial, tune_controller, upper, lower)
        # Ray: max(step + interval, latest train time of any member); the waiting members
        # are all at or past the step, so this makes every one of them runnable again.
        self._next_perturbation_sync = time + self._perturbation_interval
