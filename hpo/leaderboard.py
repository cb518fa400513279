"""The report's leaderboard (hpo.report.tables) as terminal text, printed by `hpo run`."""

from __future__ import annotations

import pandas as pd

from hpo.records import StudyRecord


def format_leaderboard(record: StudyRecord, trials: pd.DataFrame) -> str:
    from hpo.report import tables

    metric, mode = record.metric, record.mode
    frame = tables.runs_frame(record)
    # the test counterpart of the study's metric when runs measured it (val_mse → test_mse)
    test = frame["test_metric"].iloc[0].replace("_", " ") if not frame.empty else "test"
    runs = tables.run_table(frame, trials, metric, mode)
    board = tables.leaderboard(runs, mode)
    if board.empty:
        return "no finished runs yet"

    def pm(mean: float, std: float) -> str:
        if pd.isna(mean):
            return "n/a"
        return f"{mean:.4f} ± {0.0 if pd.isna(std) else std:.4f}"

    lines = [
        f"{'strategy':<10} {'seeds':>5}  {'best ' + metric:<20} {test:<20}"
        f" {'rank':>5} {'trials':>7} {'epochs':>7} {'wall s':>7}"
    ]
    for row in board.itertuples():
        lines.append(
            f"{row.strategy:<10} {row.seeds:>5}  {pm(row.best_val_mean, row.best_val_std):<20}"
            f" {pm(row.test_mean, row.test_std):<20} {row.mean_rank:>5.2f}"
            f" {row.trials_per_run:>7.1f} {row.epochs_per_run:>7.0f} {row.wall_s_per_run:>7.0f}"
        )
    return "\n".join(lines)
