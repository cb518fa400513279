"""A trained model on disk: `model.pt` (a plain state_dict) beside `model.json` (what
rebuilds the exact architecture), so a model is loadable without the study or Ray."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainables.loop import build_model_for

WEIGHTS, DESCRIPTION = "model.pt", "model.json"


def save_model(
    directory: str | Path,
    model: nn.Module,
    *,
    trainable: str,
    config: dict[str, Any],
    input_shape: tuple[int, ...],
    num_classes: int,
    dataset: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), directory / WEIGHTS)
    description = {
        "trainable": trainable,
        "config": config,
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "dataset": dataset,
        **(extra or {}),
    }
    (directory / DESCRIPTION).write_text(json.dumps(description, indent=2) + "\n")
    return directory


def describe_model(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / DESCRIPTION
    if not path.exists():
        raise FileNotFoundError(f"{directory}: no {DESCRIPTION} (not a model saved by hpo retrain)")
    return json.loads(path.read_text())


def load_model(directory: str | Path) -> nn.Module:
    """The saved torch module, with its exact architecture, in eval mode."""
    description = describe_model(directory)
    model = build_model_for(
        description["trainable"],
        description["config"],
        description["input_shape"],
        description["num_classes"],
    )
    state = torch.load(Path(directory) / WEIGHTS, weights_only=True)
    model.load_state_dict(state)
    return model.eval()
