"""Ray Tune's PopulationBasedTraining, with the running-trial cap that pausing schedulers
need (synchronous PBT pauses every member at each perturbation step)."""

from __future__ import annotations

from ray.tune.experiment import Trial
from ray.tune.schedulers import PopulationBasedTraining

from hpo.strategies.successive_halving import RunningCap


class CappedPBT(PopulationBasedTraining):
    """`PopulationBasedTraining` that runs at most `max_running` trials at once (see
    `successive_halving.RunningCap`). Tune's own limit counts paused members as running,
    so it would let only `max_running` members exist: the population would shrink to the
    cap."""

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
        return None if trial is None else self.cap.launch(trial)
