"""A custom trainable for the fault tests (`trainable: tests.faults:build_flaky`, run with
--allow-custom): a small MLP whose training epochs raise on purpose.

`fail: once` raises in the trial's second epoch on its first attempt only, `fail: always`
raises in the first epoch of every attempt, `fail: never` trains normally. Each attempt
is counted in a file under $HPO_FAULT_DIR (one per trial seed and learning rate), so the
tests can check how often Ray Tune retried.
"""

from __future__ import annotations

import os
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
        return super().train(mode)


def build_flaky(config: Mapping, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    return FlakyMLP(config, input_shape, num_classes)
