"""How the loop scores a batch: the loss it minimizes and the counts accuracy is made of.

Three kinds of data, one `Objective`:
- class labels (int64 `y`): cross-entropy on the logits, or the squared error between
  softmax/sigmoid outputs and one-hot targets; correct = the arg-max is the label;
- regression targets (float `y`, N×k): squared error; correct = every output within
  `tolerance` of its target;
- a second, regression head (a model returning (logits, width) and a dataset with
  `Split.t`): the classifier's loss plus the head's squared error, with the head's loss
  and accuracy ("regression accuracy": |predicted − true| < tolerance) as extra sums.

Squared error is ½‖output − target‖² per sample, averaged over the batch (the L2 loss of
the coursework: ½(σ − t)² for one output).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from trainables.data import Split

LOSSES: tuple[str, ...] = ("cross_entropy", "squared_error")
OUTPUTS: tuple[str, ...] = ("softmax", "sigmoid")  # what squared error compares to one-hot
HEAD = "regression"  # prefix of the second head's metrics: <split>_regression_accuracy …


@dataclass(frozen=True)
class Score:
    """One batch: the mean loss to minimize, and sums over its samples."""

    loss: torch.Tensor
    loss_sum: torch.Tensor
    correct: torch.Tensor
    extra: dict[str, torch.Tensor]  # sums of the second head's loss and correct predictions


@dataclass(frozen=True)
class Objective:
    loss: str = "cross_entropy"
    output: str = "softmax"
    tolerance: float = 0.5

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> Objective:
        objective = cls(
            str(config.get("loss", "cross_entropy")),
            str(config.get("output", "softmax")),
            float(config.get("tolerance", 0.5)),
        )
        if objective.loss not in LOSSES:
            raise ValueError(f"loss: expected one of {LOSSES}, got {objective.loss!r}")
        if objective.output not in OUTPUTS:
            raise ValueError(f"output: expected one of {OUTPUTS}, got {objective.output!r}")
        return objective

    def score(self, outputs: torch.Tensor | tuple[torch.Tensor, ...], batch: Split) -> Score:
        head = None
        if isinstance(outputs, tuple):  # (logits, regression head)
            outputs, head = outputs
            if batch.t is None:
                raise ValueError(
                    "regression_head: this dataset has no regression targets (e.g. detection)"
                )
        if batch.regression:
            per_sample, correct = self._regression(outputs, batch.y)
        else:
            per_sample, correct = self._classification(outputs, batch.y)
        extra: dict[str, torch.Tensor] = {}
        if head is not None:
            head_loss, head_correct = self._regression(head, batch.t)
            per_sample = per_sample + head_loss
            extra = {f"{HEAD}_loss": head_loss.sum(), f"{HEAD}_correct": head_correct}
        return Score(per_sample.mean(), per_sample.sum(), correct, extra)

    def _classification(
        self, logits: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        correct = (logits.argmax(1) == labels).sum()
        if self.loss == "cross_entropy":
            return nn.functional.cross_entropy(logits, labels, reduction="none"), correct
        squash = torch.softmax if self.output == "softmax" else _sigmoid
        one_hot = nn.functional.one_hot(labels, logits.shape[1]).to(logits.dtype)
        return 0.5 * (squash(logits, 1) - one_hot).pow(2).sum(1), correct

    def _regression(
        self, outputs: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        error = outputs.reshape(len(targets), -1) - targets.reshape(len(targets), -1)
        correct = (error.abs() < self.tolerance).all(1).sum()
        return 0.5 * error.pow(2).sum(1), correct


def _sigmoid(logits: torch.Tensor, _dim: int) -> torch.Tensor:
    return torch.sigmoid(logits)


def check_fits(objective: Objective, regression: bool) -> None:
    """Cross-entropy needs class labels: a regression dataset says loss squared_error."""
    if regression and objective.loss != "squared_error":
        raise ValueError("loss: a regression dataset needs squared_error")
