"""One strategy × seed run on a simulated clock: Ray Tune's searchers and schedulers, no actors.

`SimulatedController` stands where Ray Tune's TuneController stands in a real run: it
creates trials through the run's own search algorithm (the same `SearchGenerator` /
`BasicVariantGenerator` wrapping that `tune.run` does), calls the scheduler and searcher
hooks in the order TuneController calls them (`on_trial_add`, `choose_trial_to_run`,
the stopper, `on_trial_result`, `on_trial_complete`, `on_trial_remove`), and answers
the controller methods schedulers call back (`get_trials`, `pause_trial`, `stop_trial`,
`_set_trial_status`, `_schedule_trial_save`). Trials are Ray Tune `Trial` objects; a
worker "trains" an epoch by advancing the clock by the epoch's recorded time and
reporting the table's metrics for it. Events are processed in simulated-time order, so
asynchronous schedulers see the interleavings a live run with W workers would see.

Checkpoints are positions on a curve: after each epoch a trial's checkpoint is
(its epoch). A trial resumed after a pause continues its curve from there; a PBT
member that exploited another copies that member's checkpoint (Ray's PBT sets it on the
trial) and continues, from the copied epoch, on the curve of its new, perturbed config.
The copied weights themselves are not simulated: that is the approximation a table
makes for PBT (stated in the replay's record).
"""

from __future__ import annotations

import heapq
import itertools
import random
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hpo.replay.curves import Curve, CurveTable
from trainables import HYPERPARAMETER_PREFIX

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

    from hpo.spec import Study


@dataclass(frozen=True)
class SimCheckpoint:
    """A simulated checkpoint: the epoch a trial's model has trained to."""

    trial_id: str
    epoch: int


@dataclass
class Reported:
    """One simulated epoch of a trial, as trials.csv records it."""

    trial_id: str
    epoch: int
    time: float  # simulated seconds since the run started
    metrics: dict[str, float]
    config: dict[str, Any]
    diverged: bool
    predicted: bool


@dataclass
class SimRun:
    """What a simulated run leaves: every reported epoch, every trial's final state."""

    rows: list[Reported]
    statuses: dict[str, str]  # trial id → Ray status (TERMINATED, ERROR, …)
    clock: float  # simulated seconds at the end
    decision_s: float  # real seconds inside the searcher's and scheduler's calls


class SimulatedController:
    """Ray Tune's TuneController as searchers and schedulers see it, on a simulated clock."""

    def __init__(
        self,
        search_alg: Any,
        scheduler: Any,
        stopper: Any,
        curves: CurveTable,
        table_seed: int,
        workers: int,
        decision_key: str,
        charge_decisions: bool = False,
        max_pending: int = 200,
        time_limit_s: float | None = None,
    ):
        self.search_alg, self.scheduler, self.stopper = search_alg, scheduler, stopper
        self.curves, self.table_seed, self.workers = curves, table_seed, workers
        self.decision_key, self.charge_decisions = decision_key, charge_decisions
        self.max_pending = max_pending
        self.time_limit_s = time_limit_s  # Tune's time_budget_s, on the simulated clock
        self.clock = 0.0
        self._trials: list[Trial] = []
        self._live: set[Trial] = set()
        self._pending: list[Trial] = []  # FIFO, as TuneController starts PENDING trials
        self._staged: list[Trial] = []  # chosen by the scheduler, starting next
        self._running: dict[Trial, int] = {}  # trial → token of its in-flight epoch
        self._position: dict[Trial, tuple[int, Curve]] = {}  # epoch trained, curve
        self._events: list[tuple[float, int, Trial, int]] = []
        self._tokens = itertools.count()
        self.rows: list[Reported] = []

    # ------------------------------------------------ what schedulers call back
    def get_trials(self) -> list[Trial]:
        return self._trials

    def get_live_trials(self) -> set[Trial]:
        return self._live

    def trial_slots(self) -> int:
        """Trials the simulated cluster runs at once (RunningCap asks, instead of Ray)."""
        return self.workers

    def _set_trial_status(self, trial: Trial, status: str) -> None:
        from ray.tune.experiment import Trial

        if trial.status == Trial.RUNNING and status != Trial.RUNNING:
            self._running.pop(trial, None)  # its in-flight epoch is dropped
        trial.set_status(status)
        if status == Trial.PENDING and trial not in self._pending:
            self._pending.append(trial)
        if status in (Trial.TERMINATED, Trial.ERROR):
            self._live.discard(trial)

    def pause_trial(self, trial: Trial, should_checkpoint: bool = True) -> None:
        from ray.tune.experiment import Trial

        if trial.status in (Trial.RUNNING, Trial.PENDING):
            self._set_trial_status(trial, Trial.PAUSED)

    def stop_trial(self, trial: Trial) -> None:
        """TuneController.stop_trial: tell the scheduler and searcher, then terminate."""
        from ray.tune.experiment import Trial
        from ray.tune.utils import flatten_dict

        if trial.status in (Trial.ERROR, Trial.TERMINATED):
            return
        if trial.status in (Trial.PENDING, Trial.PAUSED):
            self.scheduler.on_trial_remove(self, trial)
            self.search_alg.on_trial_complete(trial.trial_id)
        elif trial.status == Trial.RUNNING:
            result = flatten_dict(trial.last_result)
            self.scheduler.on_trial_complete(self, trial, result)
            self.search_alg.on_trial_complete(trial.trial_id, result=result)
        self._set_trial_status(trial, Trial.TERMINATED)

    def _schedule_trial_save(self, trial: Trial, result: dict | None = None):
        return trial.checkpoint  # every epoch is checkpointed, as in a real run

    # ------------------------------------------------------------- the run
    def run(self) -> SimRun:
        from hpo.strategies import decision

        decision.reset(self.decision_key)
        charged = 0.0
        while not self._finished():
            self._update_trial_queue()
            self._start_trials()
            if not self._events:  # nothing runs and nothing can start: the run is over
                break
            self._next_event()
            out_of_time = self.time_limit_s is not None and self.clock >= self.time_limit_s
            if self.stopper.stop_all() or out_of_time:
                self._stop_experiment()
            if self.charge_decisions:  # the driver's thinking delays what starts next
                spent = decision.seconds(self.decision_key)
                self.clock += spent - charged
                charged = spent
        statuses = {t.trial_id: t.status for t in self._trials}
        return SimRun(self.rows, statuses, self.clock, decision.seconds(self.decision_key))

    def _finished(self) -> bool:
        return all(t.is_finished() for t in self._trials) and self.search_alg.is_finished()

    def _update_trial_queue(self) -> None:
        """TuneController._maybe_update_trial_queue: ask the searcher for trials."""
        from ray.tune.experiment import Trial

        if self.search_alg.is_finished():
            return
        while sum(t.status == Trial.PENDING for t in self._pending) < self.max_pending:
            trial = self.search_alg.next_trial()
            if trial is None:
                break
            self._trials.append(trial)
            self._live.add(trial)
            self.scheduler.on_trial_add(self, trial)
            if trial.status == Trial.PENDING:
                self._pending.append(trial)

    def _start_trials(self) -> None:
        """TuneController._maybe_add_actors: the scheduler's choice first, then PENDING
        trials in the order they were created, while a worker is free."""
        from ray.tune.experiment import Trial

        while len(self._running) < self.workers:
            chosen = self.scheduler.choose_trial_to_run(self)
            if chosen is None or chosen in self._staged or chosen in self._running:
                break
            if chosen.status != Trial.PENDING:
                self._set_trial_status(chosen, Trial.PENDING)
            self._staged.append(chosen)
        self._pending = [t for t in self._pending if t.status == Trial.PENDING]
        queue = [t for t in self._staged if t.status == Trial.PENDING]
        queue += [t for t in self._pending if t not in queue]
        for trial in queue:
            if len(self._running) >= self.workers:
                break
            self._launch(trial)
        self._staged = [t for t in self._staged if t.status == Trial.PENDING]

    def _launch(self, trial: Trial) -> None:
        from ray.tune.experiment import Trial

        self._set_trial_status(trial, Trial.RUNNING)
        checkpoint = trial.checkpoint
        epoch = checkpoint.epoch if isinstance(checkpoint, SimCheckpoint) else 0
        curve = self.curves.curve(searched(trial.config, self.curves), self.table_seed)
        self._position[trial] = (epoch, curve)
        self._schedule_epoch(trial)

    def _schedule_epoch(self, trial: Trial) -> None:
        epoch, curve = self._position[trial]
        token = next(self._tokens)
        self._running[trial] = token
        if epoch + 1 > curve.epochs:  # the table's trial ended here: an error, as it did
            heapq.heappush(self._events, (self.clock, token, trial, token))
            return
        heapq.heappush(self._events, (self.clock + curve.seconds(epoch + 1), token, trial, token))

    def _next_event(self) -> None:
        from ray.tune.experiment import Trial
        from ray.tune.schedulers import TrialScheduler

        when, _, trial, token = heapq.heappop(self._events)
        if self._running.get(trial) != token:
            return  # paused or stopped while this epoch ran
        self.clock = max(self.clock, when)
        epoch, curve = self._position[trial]
        if epoch + 1 > curve.epochs:
            self._error(trial)
            return
        epoch += 1
        self._position[trial] = (epoch, curve)
        result = self._result(trial, epoch, curve)
        # The trainable's per-epoch checkpoint arrives with its result, before any
        # decision (PBT may then replace it with the checkpoint of the trial it exploits).
        self._checkpoint(trial, epoch, result)
        if self.stopper(trial.trial_id, result):
            decision = TrialScheduler.STOP
        else:
            decision = self.scheduler.on_trial_result(self, trial, result)
        if decision != TrialScheduler.STOP:
            self.search_alg.on_trial_result(trial.trial_id, result)
        trial.update_last_result(result)
        if decision == TrialScheduler.CONTINUE and trial.status == Trial.RUNNING:
            self._schedule_epoch(trial)
        elif decision == TrialScheduler.PAUSE:
            self.pause_trial(trial)
        elif decision == TrialScheduler.STOP:
            self.stop_trial(trial)

    def _result(self, trial: Trial, epoch: int, curve: Curve) -> dict[str, Any]:
        metrics = curve.metrics(epoch)
        diverged = curve.diverged_at == epoch
        config = dict(trial.config)
        self.rows.append(
            Reported(trial.trial_id, epoch, self.clock, metrics, config, diverged, curve.predicted)
        )
        hyperparameters = {f"{HYPERPARAMETER_PREFIX}{k}": v for k, v in config.items()}
        return {
            **metrics,
            **hyperparameters,
            "epoch": epoch,
            "diverged": diverged,
            "training_iteration": epoch,
            "time_this_iter_s": metrics["epoch_time_s"],
            "time_total_s": self.clock,
            "done": False,
            "trial_id": trial.trial_id,
        }

    def _checkpoint(self, trial: Trial, epoch: int, result: dict[str, Any]) -> None:
        from ray.train._internal.session import _TrainingResult

        manager = trial.run_metadata.checkpoint_manager
        manager._latest_checkpoint_result = _TrainingResult(
            checkpoint=SimCheckpoint(trial.trial_id, epoch), metrics=result
        )

    def _error(self, trial: Trial) -> None:
        """The table recorded this configuration's trial as errored after its last epoch."""
        from ray.tune.experiment import Trial

        self.scheduler.on_trial_error(self, trial)
        self.search_alg.on_trial_complete(trial.trial_id, error=True)
        self._set_trial_status(trial, Trial.ERROR)

    def _stop_experiment(self) -> None:
        """The run's budget is spent: every trial ends where it is (as Tune does)."""
        from ray.tune.experiment import Trial

        self.search_alg.set_finished()
        for trial in self._trials:
            if trial.status not in (Trial.ERROR, Trial.TERMINATED):
                self._set_trial_status(trial, Trial.TERMINATED)
        self._events.clear()


def searched(config: dict[str, Any], curves: CurveTable) -> dict[str, Any]:
    """The searched hyperparameters of a trial's config (not seed, proposed_by, fixed)."""
    return {name: config[name] for name in curves.space}


def simulate(
    study: Study,
    strategy: str,
    seed: int,
    curves: CurveTable,
    workers: int,
    charge_decisions: bool = False,
) -> SimRun:
    """One strategy × seed run of `study` replayed on `curves` (seeded: the same replay
    for the same inputs, unless decision time is charged to the clock)."""
    from hpo.strategies import STRATEGIES
    from hpo.strategies.budget import EpochBudget
    from hpo.strategies.decision import timed

    random.seed(seed)  # Ray's PBT perturbs with Python's global generator
    np.random.seed(seed % 2**32)
    key = f"replay/{strategy}/{seed}"
    plan = STRATEGIES[strategy].tuner(study, seed)
    plan.param_space["seed"] = seed
    search_alg, scheduler, max_pending = _as_tune_run_does(study, plan)
    search_alg, scheduler = timed(search_alg, key), timed(scheduler, key)
    budget = study.budget
    controller = SimulatedController(
        search_alg,
        scheduler,
        EpochBudget(budget.max_epochs, budget.total_epochs),
        curves,
        table_seed=curves.seeds[seed % len(curves.seeds)],
        workers=workers,
        decision_key=key,
        charge_decisions=charge_decisions,
        max_pending=max_pending,
        time_limit_s=budget.time_limit_s,
    )
    return controller.run()


def _as_tune_run_does(study: Study, plan: Any) -> tuple[Any, Any, int]:
    """The search algorithm and scheduler prepared as `tune.run` prepares them (Ray
    2.60): concurrency limiter, SearchGenerator, search properties, the experiment's
    configurations; and TuneController's limit on pending trials."""
    from ray.tune.experiment import Experiment
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter, Searcher, SearchGenerator

    metric, mode = study.metric.name, study.metric.mode
    search_alg, scheduler = plan.search_alg, plan.scheduler or FIFOScheduler()
    limited = None
    if plan.max_concurrent_trials and isinstance(search_alg, Searcher):
        search_alg = limited = ConcurrencyLimiter(search_alg, plan.max_concurrent_trials)
    if isinstance(search_alg, Searcher):
        search_alg = SearchGenerator(search_alg)
    search_alg.set_search_properties(metric, mode, plan.param_space)
    scheduler.set_search_properties(metric, mode)
    if getattr(scheduler, "_log_config", False):
        # PBT's policy log files go to the experiment's driver folder: a live Ray
        # session's, which a replay has not got (its exploits are in trials.csv).
        scheduler._log_config = False
    with tempfile.TemporaryDirectory(prefix="hpo-replay-") as storage:
        experiment = Experiment(
            name="replay",
            run=_no_training,
            config=plan.param_space,
            num_samples=plan.plan.num_samples,
            storage_path=storage,
        )
        search_alg.add_configurations([experiment])
    # TuneController: a searcher's pending trials are capped by its concurrency limit
    # (or 1); a variant generator's at 200 on a cluster this size.
    if isinstance(search_alg, SearchGenerator):
        max_pending = limited.max_concurrent if limited is not None else 1
    else:
        max_pending = 200
    return search_alg, scheduler, max_pending


def _no_training(config: dict[str, Any]) -> None:
    """The trainable a replay's Experiment names: never called (nothing trains)."""
    raise RuntimeError("a replayed trial never runs its trainable")


__all__ = ["SimRun", "SimulatedController", "simulate"]
