"""What strategy × seed runs need from Ray Tune to run side by side, each `Tuner.fit` in
a thread of one `hpo run` (`--parallel-runs`).

Ctrl-C: Tune catches SIGINT only when `Tuner.fit` runs in the main thread. The main
thread sets STOP instead, and each run's Tune loop ends at its next step by raising
RunsStopped (StopWhenAsked). What the run had saved (trial checkpoints, Tune's periodic
experiment state) is what `Tuner.restore` resumes, as after a killed driver.

Start-up: Ray stages a run's files in `<session>/artifacts/<start second>/<experiment
name>/` and Tune names a run's experiment after its folder, `seed-<k>`, for every
strategy: two runs of one seed starting in the same second would share (and mix) that
folder. So runs of one name start one at a time (`start_gate`), each once the previous
one's storage exists (Tune's `Callback.setup`, StartedUp) and its second has passed.

Both callbacks hold nothing but a name: Tune pickles its callbacks with the run, and a
resumed run gets them back.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

from ray.tune import Callback

STOP = threading.Event()  # set by the runner's main thread on Ctrl-C


class RunsStopped(Exception):
    """Raised inside a run's Tune loop once STOP is set."""


class StopWhenAsked(Callback):
    """Ends the Tune loop it is in once STOP is set."""

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if STOP.is_set():
            raise RunsStopped("stopped by Ctrl-C")


_lock = threading.Lock()
_gates: dict[str, threading.Lock] = {}  # experiment name → held from start to its setup
_set_up: dict[str, float] = {}  # experiment name → when its last run's storage existed
_holders: dict[str, int] = {}  # experiment name → the thread whose run is starting


@contextlib.contextmanager
def start_gate(name: str) -> Iterator[None]:
    """Held while a run named `name` starts: until StartedUp tells its storage exists (or
    the run ends before that)."""
    with _lock:
        gate = _gates.setdefault(name, threading.Lock())
    gate.acquire()
    with _lock:
        _holders[name] = threading.get_ident()
    try:
        wait = int(_set_up.get(name, 0.0)) + 1 - time.time()
        if wait > 0:  # a new second: a staging folder of its own
            time.sleep(wait)
        yield
    finally:
        started_up(name)


def started_up(name: str) -> None:
    """The run named `name` that this thread starts has its storage: the next run of
    that name may start. (Tune calls its callbacks in the thread that runs `fit`.)"""
    with _lock:
        if _holders.get(name) != threading.get_ident():
            return  # not starting here, or already told
        del _holders[name]
        _set_up[name] = time.time()
        _gates[name].release()


class StartedUp(Callback):
    """Tells start_gate that its run's storage exists (Tune calls setup after that)."""

    def __init__(self, name: str):
        self.name = name

    def setup(self, **info: Any) -> None:
        started_up(self.name)
