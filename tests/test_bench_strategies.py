"""`hpo bench strategies`: the per-strategy figures docs/benchmarks.md records."""

from __future__ import annotations

from hpo.bench import strategies
from hpo.report.bench import synthetic_study
from hpo.results import load_results


def test_strategy_table_reads_the_runs_and_counts_epochs_to_target(tmp_path):
    study_dir = synthetic_study(tmp_path, trials=48, epochs=6, seeds=(0, 1))
    lines: list[str] = []
    rows = {row["strategy"]: row for row in strategies(study_dir, 0.5, lines.append)}
    results = load_results(study_dir)
    assert set(rows) == {run.strategy for run in results.record.runs.values()}
    assert len(lines) == 2 + len(rows) and lines[0].startswith("| strategy |")
    trials = results.trials
    for name, row in rows.items():
        assert row["seeds"] == 2
        for seed, reached in zip((0, 1), row["epochs_to_target"], strict=True):
            run = trials[(trials["strategy"] == name) & (trials["seed"] == seed)]
            run = run.sort_values("cum_epochs")
            if reached is None:
                assert run["val_accuracy"].max() < 0.5
            else:  # the first epoch of the run at or above the target, none before it
                assert run.loc[run["cum_epochs"] == reached, "val_accuracy"].iloc[0] >= 0.5
                assert (run.loc[run["cum_epochs"] < reached, "val_accuracy"] < 0.5).all()
