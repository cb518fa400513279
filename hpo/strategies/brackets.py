"""Budget arithmetic of successive-halving brackets: pure, no Ray (validation uses it)."""

from __future__ import annotations


def rung_plan(num_trials: int, min_t: int, max_t: int, eta: int) -> list[tuple[int, int]]:
    """(trials, epochs) of every rung: sizes shrink by eta, epochs grow by eta up to max_t."""
    rungs, size, epochs = [], num_trials, min_t
    while True:
        rungs.append((size, min(epochs, max_t)))
        if epochs >= max_t:
            return rungs
        size, epochs = max(1, size // eta), epochs * eta


def bracket_cost(rungs: list[tuple[int, int]]) -> int:
    """Epochs one bracket spends when promoted trials resume from their checkpoints."""
    cost, previous = 0, 0
    for size, epochs in rungs:
        cost += size * (epochs - previous)
        previous = epochs
    return cost


def trials_for_budget(total_epochs: int, min_t: int, max_t: int, eta: int) -> int:
    """The largest first rung whose bracket fits in `total_epochs` (at least one trial)."""
    n = 1
    while bracket_cost(rung_plan(n + 1, min_t, max_t, eta)) <= total_epochs:
        n += 1
    return n
