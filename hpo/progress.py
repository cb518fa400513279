"""What `hpo run` shows while it runs: one live row per active run, or timestamped lines.

`StudyProgress` is the board: the runner tells it when a run starts and ends, and
`ProgressCallback` (one per run, inside its Tune RunConfig) feeds it the trial events.
The callback carries only the run's key, because Tune pickles it into the experiment
folder and `Tuner.restore` brings it back in another process; at each event it looks up
the board that is active in *this* process and does nothing when there is none.

Modes: "live" (a rich Live area on a terminal), "plain" (timestamped lines for logs:
events at once, status lines at most once per `plain_interval_s` per run), "quiet"
(only errors: trial tracebacks, `message(error=True)` and failed runs, as plain lines).
Everything goes to one stream; errors are not split off to stderr so a live area and its
messages never fight over the terminal.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from ray.tune import Callback
from rich.console import Console
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

MODES = ("auto", "live", "plain", "quiet")
TRACEBACK_LINES = 15
ERROR_FILE = "error.txt"  # ray.air.constants.EXPR_ERROR_FILE

_active: StudyProgress | None = None
_active_lock = threading.Lock()


def active_board() -> StudyProgress | None:
    """The board of the `with StudyProgress(...)` block running in this process, if any."""
    with _active_lock:
        return _active


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(max(seconds, 0.0)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass
class RunState:
    """The counters of one run; trial counts are of trials seen in this process."""

    label: str
    total_epochs: int
    max_epochs: int
    metric: str
    mode: str
    started: float  # the board's clock (time.monotonic) at run_started
    epochs: int = 0
    epochs_at_start: int = 0  # spent before this process: not part of the rate
    running: int = 0
    finished: int = 0
    stopped: int = 0
    errored: int = 0
    best: float | None = None

    def offer(self, value: Any) -> None:
        value = _finite(value)
        if value is None:
            return
        better = max if self.mode == "max" else min
        self.best = value if self.best is None else better(self.best, value)

    def eta(self, now: float) -> float | None:
        """Seconds left at this process's rate; None before its first epoch."""
        spent_here = self.epochs - self.epochs_at_start
        if spent_here <= 0:
            return None
        left = max(self.total_epochs - self.epochs, 0)
        return (now - self.started) * left / spent_here

    def details(self, now: float) -> str:
        shown = min(self.epochs, self.total_epochs)
        best = "—" if self.best is None else f"{self.best:.4g}"
        eta = self.eta(now)
        left = "left ?" if eta is None else f"~{_duration(eta)} left"
        return (
            f"epochs {shown}/{self.total_epochs}  "
            f"trials {self.running} running · {self.finished} done · "
            f"{self.stopped} stopped · {self.errored} errored  "
            f"best {self.metric} {best}  "
            f"{_duration(now - self.started)} elapsed · {left}"
        )

    def line(self, now: float) -> str:
        return f"{self.label}  {self.details(now)}"


@dataclass
class _Run:
    state: RunState
    last_status: float  # when plain mode last printed its status line
    running: set[str] = field(default_factory=set)
    errored: set[str] = field(default_factory=set)
    reports: dict[str, int] = field(default_factory=dict)  # per trial, this process


class StudyProgress:
    """The display of `hpo run`; every method is safe to call from any thread."""

    def __init__(
        self,
        mode: str = "auto",
        stream: TextIO | None = None,
        plain_interval_s: float = 15.0,
        refresh_per_second: float = 2.0,
        *,
        console: Console | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"progress mode must be one of {MODES}, got {mode!r}")
        if stream is None:
            stream = console.file if console is not None else sys.stdout
        if mode == "auto":
            isatty = getattr(stream, "isatty", None)
            mode = "live" if isatty is not None and isatty() else "plain"
        self.mode = mode
        self.plain_interval_s = plain_interval_s
        self.refresh_per_second = refresh_per_second
        self._stream = stream
        self._console = console or Console(file=stream, highlight=False)
        self._clock = clock
        self._runs: dict[str, _Run] = {}
        self._errors_shown: set[tuple[str, str]] = set()
        # State lock only: nothing is printed while it is held, because rich's Live holds
        # its own lock while it asks _rows for the table (lock-order inversion otherwise).
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._live: Live | None = None
        self._previous: StudyProgress | None = None

    # -- the with-block -------------------------------------------------------------

    def __enter__(self) -> StudyProgress:
        global _active
        with _active_lock:
            self._previous, _active = _active, self
        if self.mode == "live":
            self._live = Live(
                get_renderable=self._rows,
                console=self._console,
                refresh_per_second=self.refresh_per_second,
                transient=True,  # ended runs leave their summary line, not a row
            )
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        global _active
        if self._live is not None:
            self._live.stop()
            self._live = None
        with _active_lock:
            if _active is self:
                _active = self._previous
        with self._lock:
            left = [run.state.line(self._clock()) for run in self._runs.values()]
        if self.mode != "quiet":  # runs never ended keep their last counters on screen
            for line in left:
                self._emit(line)

    # -- what the runner calls ------------------------------------------------------

    def message(self, text: str, error: bool = False) -> None:
        if self.mode != "quiet" or error:
            self._emit(text, error)

    def run_started(
        self,
        key: str,
        label: str,
        total_epochs: int,
        max_epochs: int,
        metric: str,
        mode: str,
        epochs_done: int = 0,
        resumed: bool = False,
    ) -> None:
        now = self._clock()
        state = RunState(
            label=label,
            total_epochs=total_epochs,
            max_epochs=max_epochs,
            metric=metric,
            mode=mode,
            started=now,
            epochs=epochs_done,
            epochs_at_start=epochs_done,
        )
        with self._lock:
            self._runs[key] = _Run(state, last_status=now)
        if self.mode == "plain":
            # "<label>: running …" / "resuming …", as hpo run has always said it
            how = f"resuming at epoch {epochs_done} …" if resumed else "running …"
            self._emit(f"{label}: {how} (budget {total_epochs} epochs, {metric} {mode})")

    def run_ended(self, key: str, summary: str, status: str = "finished") -> None:
        with self._lock:
            self._runs.pop(key, None)
        if self.mode != "quiet" or status == "failed":
            self._emit(summary, error=status == "failed")

    def snapshot(self, key: str) -> RunState:
        with self._lock:
            return replace(self._runs[key].state)

    def knows(self, key: str) -> bool:
        with self._lock:
            return key in self._runs

    # -- what ProgressCallback calls ------------------------------------------------

    def trial_started(self, key: str, trial_id: str) -> None:
        self._update(key, lambda run: run.running.add(trial_id))

    def trial_result(self, key: str, trial_id: str, result: dict) -> None:
        def count(run: _Run) -> None:
            run.running.add(trial_id)
            run.reports[trial_id] = run.reports.get(trial_id, 0) + 1
            run.state.epochs += 1  # each report is one epoch
            run.state.offer(result.get(run.state.metric))

        self._update(key, count)

    def trial_completed(self, key: str, trial_id: str, iteration: int | None) -> None:
        def count(run: _Run) -> None:
            run.running.discard(trial_id)
            reached = iteration if iteration is not None else run.reports.get(trial_id, 0)
            if reached < run.state.max_epochs:
                run.state.stopped += 1
            else:
                run.state.finished += 1

        self._update(key, count)

    def trial_failed(self, key: str, trial_id: str, final: bool) -> bool:
        """Count a failure (final: Tune gives up; else it retries). True the first time
        this trial fails, i.e. when its traceback should be shown."""

        def count(run: _Run) -> None:
            run.running.discard(trial_id)
            if final:
                run.errored.add(trial_id)

        self._update(key, count)
        with self._lock:
            first = (key, trial_id) not in self._errors_shown
            self._errors_shown.add((key, trial_id))
        return first

    def label(self, key: str) -> str:
        with self._lock:
            run = self._runs.get(key)
            return run.state.label.strip() if run is not None else key

    # -- internals ------------------------------------------------------------------

    def _update(self, key: str, change: Callable[[_Run], None]) -> None:
        status = None
        with self._lock:
            run = self._runs.get(key)
            if run is None:
                return
            change(run)
            run.state.running = len(run.running)
            run.state.errored = len(run.errored)
            now = self._clock()
            if self.mode == "plain" and now - run.last_status >= self.plain_interval_s:
                run.last_status = now
                status = run.state.line(now)
        if status is not None:
            self._emit(status)

    def _emit(self, text: str, error: bool = False) -> None:
        if self.mode == "live":
            self._console.print(Text(text, style="red" if error else ""))
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        lines = "".join(f"{stamp} {line}\n" for line in text.splitlines() or [""])
        with self._write_lock:
            self._stream.write(lines)
            self._stream.flush()

    def _rows(self) -> Table:
        """The live area, rebuilt at each refresh so elapsed and ETA keep moving."""
        now = self._clock()
        with self._lock:
            states = [replace(run.state) for run in self._runs.values()]
        table = Table.grid(padding=(0, 2))
        table.add_column(no_wrap=True)
        table.add_column(width=20)
        table.add_column(no_wrap=True, overflow="ellipsis")
        for state in states:
            total = max(state.total_epochs, 1)
            bar = ProgressBar(total=total, completed=min(state.epochs, total), width=20)
            table.add_row(Text(state.label), bar, Text(state.details(now)))
        return table


def _error_files(trial: Any) -> tuple[Path | None, Path | None]:
    """(the error.txt to read now, the one to name). Ray 2.60 writes `trial.error_file`
    under the driver's staging folder (/tmp/ray/session_*, gone with the session) and
    syncs it to `trial.path`, the trial's folder in the results: name that one."""
    folders = [getattr(trial, "path", None), getattr(trial, "local_path", None)]
    candidates = [getattr(trial, "error_file", None)]
    candidates += [Path(folder, ERROR_FILE) for folder in folders if folder]
    existing = [Path(c) for c in candidates if c and Path(c).is_file()]
    read = existing[0] if existing else None
    storage = folders[0]
    shown = Path(storage, ERROR_FILE) if storage and Path(storage).is_dir() else read
    return read, shown


def _error_message(label: str, trial: Any, final: bool) -> str:
    trial_id = getattr(trial, "trial_id", "?")
    what = "errored" if final else "failed (Tune retries it)"
    read, shown = _error_files(trial)
    if read is None:
        return f"{label}: trial {trial_id} {what}; no {ERROR_FILE} found"
    try:
        tail = read.read_text(errors="replace").splitlines()[-TRACEBACK_LINES:]
    except OSError as error:
        tail = [f"(could not read it: {error})"]
    body = "\n".join(f"  {line}" for line in tail)
    return f"{label}: trial {trial_id} {what}:\n{body}\nfull log: {shown}"


class ProgressCallback(Callback):
    """Forwards one run's trial events to the active board. Holds only the run key, so
    the pickled copy a resumed run restores works with whichever board is active then."""

    def __init__(self, key: str) -> None:
        self.key = key

    def _board(self) -> StudyProgress | None:
        board = active_board()
        return board if board is not None and board.knows(self.key) else None

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if board := self._board():
            board.trial_started(self.key, trial.trial_id)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        if board := self._board():
            board.trial_result(self.key, trial.trial_id, result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if board := self._board():
            last = getattr(trial, "last_result", None) or {}
            iteration_reached = last.get("training_iteration")
            board.trial_completed(
                self.key,
                trial.trial_id,
                iteration_reached if isinstance(iteration_reached, int) else None,
            )

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._failed(trial, final=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._failed(trial, final=True)

    def _failed(self, trial: Any, final: bool) -> None:
        board = self._board()
        if board is not None and board.trial_failed(self.key, trial.trial_id, final):
            board.message(_error_message(board.label(self.key), trial, final), error=True)


__all__ = ["MODES", "ProgressCallback", "RunState", "StudyProgress", "active_board"]
