"""A custom trainable for the fault tests (`trainable: tests.faults:build_flaky`, run with
--allow-custom): a small MLP whose training epochs raise on purpose.

`fail: once` raises in the trial's second epoch on its first attempt only, `fail: always`
raises in the first epoch of every attempt, `fail: hold` holds its first attempt after 3
epochs (see below), `fail: never` trains normally. Each attempt is counted in a file under
$HPO_FAULT_DIR (one per trial seed and learning rate), so the tests can check how often
Ray Tune retried.

A held trial blocks until its process is killed, after writing the process id to
$HPO_FAULT_DIR/held-<pid>: the tests kill a worker, or stop a node, while a trial is surely
mid-run there, however loaded the machine is. A process whose environment has
HPO_FAULT_HOLD_AFTER=N (a Ray node started with it) holds every trial after N epochs.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from torch import nn


class InjectedFault(RuntimeError):
    """The failure a test asked for."""


class FlakyMLP(nn.Sequential):
    def __init__(self, config: Mapping, input_shape: Sequence[int], num_classes: int):
        inputs = 1
        for size in input_shape:
            inputs *= size
        hidden = int(config.get("hidden", 32))
        super().__init__(
            nn.Flatten(), nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )
        self.mode = config.get("fail", "never")
        self.epochs_this_attempt = 0
        key = f"{config.get('fail')}-{float(config.get('lr', 0)):.6g}-{config.get('seed')}"
        self.attempts_file = Path(os.environ.get("HPO_FAULT_DIR", ".")) / f"{key}.attempts"
        self.attempt = 0  # counted when it first trains (evaluation builds models too)
        self.hold_after = int(os.environ.get("HPO_FAULT_HOLD_AFTER", 0))

    def _count_attempt(self) -> int:
        previous = int(self.attempts_file.read_text()) if self.attempts_file.exists() else 0
        self.attempts_file.write_text(str(previous + 1))
        return previous + 1

    def train(self, mode: bool = True) -> FlakyMLP:
        # The loop calls model.train() once at the start of every training epoch.
        if mode:
            self.attempt = self.attempt or self._count_attempt()
            self.epochs_this_attempt += 1
            if self.mode == "always" or (
                self.mode == "once" and self.attempt == 1 and self.epochs_this_attempt == 2
            ):
                raise InjectedFault(f"injected failure ({self.mode}, attempt {self.attempt})")
            if self.mode == "hold" and self.attempt == 1 and self.epochs_this_attempt > 3:
                self._hold()
            if self.hold_after and self.epochs_this_attempt > self.hold_after:
                self._hold()
        return super().train(mode)

    def _hold(self) -> None:
        """Block this trial (its earlier epochs are reported and checkpointed) for good."""
        held = self.attempts_file.parent / f"held-{os.getpid()}"
        held.write_text(str(os.getpid()))
        threading.Event().wait()


def build_flaky(config: Mapping, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    return FlakyMLP(config, input_shape, num_classes)
