"""The Ray Tune side of a trial: checkpoints in and out through `ray.tune` only."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from ray import tune

from trainables import hyperparameter_columns
from trainables.data import DataBundle
from trainables.loop import run

STATE_FILE = "state.pt"


class TuneReporter:
    """`trainables.loop.Reporter` backed by `tune.report` / `tune.get_checkpoint`; every
    result names the Ray node that computed it (trials.csv's node_id)."""

    def __init__(self, config: dict[str, Any] | None = None, checkpoints: bool = True) -> None:
        import ray

        self.checkpoints = checkpoints  # False: metrics only (a table needs no resuming)

        self.node_id = ray.get_runtime_context().get_node_id()
        self.in_force = hyperparameter_columns(config or {})

    def restore(self) -> dict | None:
        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as directory:
            return torch.load(Path(directory) / STATE_FILE, weights_only=True, map_location="cpu")

    def report(self, metrics: dict[str, Any], state: dict | None) -> None:
        metrics = {**metrics, **self.in_force, "node_id": self.node_id}
        if state is None or not self.checkpoints:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="hpo-ckpt-") as directory:
            torch.save(state, Path(directory) / STATE_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))


def run_trial(
    config: dict[str, Any],
    data: DataBundle,
    trainable_name: str,
    max_epochs: int,
    threads: int | None = None,
    gpu: float = 0.0,
    checkpoints: bool = True,
    overrides: dict[str, Any] | None = None,
) -> None:
    """Function trainable given to Tuner through `tune.with_parameters` (data shipped once).
    A trial given a (fraction of a) GPU trains on it; Ray sets CUDA_VISIBLE_DEVICES.
    `overrides`: config values this run's trials take over Tune's (e.g. a warm start's
    init_from), in force for training and in the hp/ columns alike."""
    config = {**config, **(overrides or {})}
    device = "cuda" if gpu > 0 and torch.cuda.is_available() else "cpu"
    run(
        trainable_name,
        config,
        data,
        TuneReporter(config, checkpoints),
        max_epochs=max_epochs,
        threads=threads,
        device=device,
    )


def load_checkpoint_state(path: str | Path) -> dict:
    """The state dict saved in a trial checkpoint directory."""
    return torch.load(Path(path) / STATE_FILE, weights_only=True, map_location="cpu")
