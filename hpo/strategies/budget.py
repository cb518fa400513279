"""Equal compute for every strategy: a Tune Stopper on epochs spent by the whole run."""

from __future__ import annotations

from ray.tune import Stopper

from hpo.results import epochs_on_disk


class EpochBudget(Stopper):
    """Stops a trial at `max_epochs` or when it diverged, and the run once `total_epochs`
    epochs have been trained across all its trials.

    Epochs are counted per trial as the highest `training_iteration` seen, so a paused
    and resumed (or retried) trial is not counted twice. When a run is resumed with
    `Tuner.restore`, trials that finished before the interruption report nothing more,
    so their epochs are read once from the experiment's result files.
    """

    def __init__(self, max_epochs: int, total_epochs: int, experiment_dir: str | None = None):
        self.max_epochs, self.total_epochs = max_epochs, total_epochs
        self.experiment_dir = experiment_dir
        self._epochs: dict[str, int] = {}
        self._read_disk = experiment_dir is None

    def __call__(self, trial_id: str, result: dict) -> bool:
        if not self._read_disk:
            self._read_disk = True
            for trial, epochs in epochs_on_disk(self.experiment_dir).items():
                self._count(trial, epochs)
        epoch = int(result.get("training_iteration", 0))
        self._count(trial_id, epoch)
        return bool(result.get("diverged")) or epoch >= self.max_epochs

    def stop_all(self) -> bool:
        return self.spent >= self.total_epochs

    @property
    def spent(self) -> int:
        return sum(self._epochs.values())

    def _count(self, trial_id: str, epochs: int) -> None:
        self._epochs[trial_id] = max(self._epochs.get(trial_id, 0), epochs)
