"""Ray Tune's synchronous Hyperband, with the running-trial cap that pausing schedulers need."""

from __future__ import annotations

from ray.tune.experiment import Trial
from ray.tune.schedulers import HyperBandScheduler

from hpo.strategies.successive_halving import MarkingController, RunningCap


class CappedHyperBand(HyperBandScheduler):
    """`HyperBandScheduler` that runs at most `max_running` trials at once (see
    `successive_halving.RunningCap`), and whose stopped trials are saved as stopped (see
    `successive_halving.stop_trial`)."""

    def __init__(self, *, max_running: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.cap = RunningCap(max_running)

    def _process_bracket(self, tune_controller, bracket) -> str:
        return super()._process_bracket(MarkingController(tune_controller), bracket)

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        self.cap.reported(trial)
        return super().on_trial_result(tune_controller, trial, result)

    def choose_trial_to_run(self, tune_controller) -> Trial | None:
        """Ray's choice (fair by completion within a band, then the next band), where a
        parked new trial counts as the PENDING trial it would be without the cap."""
        self.cap.hold_new_trials(tune_controller)
        if self.cap.full(tune_controller):
            return None
        for band in self._hyperbands:
            brackets = [b for b in band if b is not None]
            for bracket in sorted(brackets, key=lambda b: b.completion_percentage()):
                for trial in bracket.current_trials():
                    resumable = trial.status == Trial.PAUSED and trial in bracket.trials_to_unpause
                    if resumable or self.cap.waiting(trial):
                        return self.cap.launch(trial)
        return None
