"""Ray Tune's synchronous Hyperband, with the running-trial cap that pausing schedulers need."""

from __future__ import annotations

from ray.tune.schedulers import HyperBandScheduler

from hpo.strategies.successive_halving import MarkingController, at_running_limit


class CappedHyperBand(HyperBandScheduler):
    """`HyperBandScheduler` that starts no trial while `max_running` trials are running,
    and whose stopped trials are saved as stopped (see `successive_halving.stop_trial`)."""

    def _process_bracket(self, tune_controller, bracket) -> str:
        return super()._process_bracket(MarkingController(tune_controller), bracket)

    def __init__(self, *, max_running: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.max_running = max_running

    def choose_trial_to_run(self, tune_controller):
        if at_running_limit(tune_controller, self.max_running):
            return None
        return super().choose_trial_to_run(tune_controller)
