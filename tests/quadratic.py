"""A user's Ray Tune function trainable for the tests, in Ray Tune's quick-start shape: a
noisy quadratic whose optimum is known (x = 0.5, plus `shift` where kind is shifted), one
`tune.report` per epoch with a checkpoint, resuming from `tune.get_checkpoint()`.

It refuses a config that breaks the study's conditions (`shift` without kind shifted), so
a strategy that proposes an inactive parameter makes its trial error.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from pathlib import Path

from ray import tune

STUDY = {  # a study of `train`: every new kind of domain, one conditional
    "name": "quadratic",
    "trainable": "tests.quadratic:train",
    "space": {
        "x": {"uniform": {"low": -1.0, "high": 2.0}},
        "k": {"lograndint": {"low": 1, "high": 16}},
        "y": {"quniform": {"low": 0.0, "high": 1.0, "q": 0.25}},
        "kind": {"choice": ["plain", "shifted"]},
        "shift": {"uniform": {"low": 0.0, "high": 0.5}, "when": {"kind": "shifted"}},
    },
    "metric": {"name": "loss", "mode": "min"},
    "budget": {"max_epochs": 4, "min_epochs": 1, "reduction_factor": 2, "total_epochs": 16},
    "seeds": [0],
    "max_concurrent_trials": 2,
}


def true_loss(config: dict) -> float:
    target = 0.5 + config.get("shift", 0.0)
    return (config["x"] - target) ** 2 + 0.001 * config.get("k", 1)


def train(config: dict) -> None:
    if ("shift" in config) != (config.get("kind") == "shifted"):
        raise ValueError(f"shift must be present exactly when kind is shifted: {config}")
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            start = json.loads((Path(folder) / "state.json").read_text())["epoch"]
    for epoch in range(start + 1, 1000):
        time.sleep(config.get("sleep_s", 0.0))  # stands in for an epoch of real work
        loss = true_loss(config) + 1.0 / epoch + 0.01 * random.random()
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "state.json").write_text(json.dumps({"epoch": epoch}))
            tune.report(
                {"loss": loss, "score": -loss},
                checkpoint=tune.Checkpoint.from_directory(folder),
            )


def evaluate(config: dict, checkpoint: tune.Checkpoint) -> dict:
    with checkpoint.as_directory() as folder:
        epoch = json.loads((Path(folder) / "state.json").read_text())["epoch"]
    return {"loss": true_loss(config) + 1.0 / epoch}


def reports_text(config: dict) -> None:
    """Reports a string where a number belongs, once its config says so."""
    for epoch in range(1, 1000):
        value = "high" if config["x"] > 0 else float(epoch)
        tune.report({"loss": value})


def never_reports(config: dict) -> None:
    return None
