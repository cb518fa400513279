"""`build_report`: a study's saved results → `<study>/report/` (index.html, PNG, CSV).

Reads only study.json and trials.csv, so it works on results copied from another
machine and on a study that is still running or partly failed (the page says so at
the top). Compute (tables) → draw (figures) → write (html); every number shown comes
from `tables`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpo import files
from hpo.records import STUDY_FILE, StudyRecord, read_study_record
from hpo.report import figures as fig
from hpo.report import html as h
from hpo.report import landscape as ls
from hpo.report import many_seeds as ms
from hpo.report import tables as tab
from hpo.results import Results, load_results
from hpo.spec import resolved

REPORT_DIR = "report"
GREY = (0.5, 0.5, 0.5)
TOP_TRIALS = 30  # trials shown in the parallel-coordinates view
SIGNIFICANCE = 0.05  # the level the statistics section tests at
SECTION_IDS = (
    "study",
    "leaderboard",
    "anytime",
    "time-to-target",
    "statistics",
    "learning-curves",
    "proposals",
    "hyperparameters",
    "best-configs",
)
# Shown after "statistics" only where every strategy has at least ms.MANY_SEEDS seeds.
MANY_SEEDS_SECTION = ("many-seeds", "Many seeds")
# Shown after "hyperparameters" only for a two-parameter grid study (hpo.report.landscape).
LANDSCAPE_SECTION = ("landscape", "Landscape")
PBT = "pbt"  # the strategy whose trials change hyperparameters as they train
CONV1_VIEWS = ("image", "filters_before", "filters_after", "feature_maps")  # conv1_figure's


def build_report(study_dir: str | Path) -> Path:
    """Write `<study_dir>/report/index.html` (self-contained), with the figures as PNG
    and the tables as CSV beside it, and return the path of index.html. A study that
    compares factors gets the comparison page (`hpo.report.compare`) instead."""
    if compares_factors(study_dir):
        from hpo.report.compare import build_compare_report  # it builds on this module

        return build_compare_report(study_dir)
    results = load_results(study_dir)
    out = results.directory / REPORT_DIR
    report = compute(results)
    for name, frame in report.csv_tables().items():
        files.write_csv(out / name, frame)
    pngs = {name: fig.png_bytes(figure) for name, figure in draw(report).items()}
    for name, data in pngs.items():
        files.write_bytes(out / name, data)
    return files.write_text(out / "index.html", render(report, pngs))


def compares_factors(study_dir: str | Path) -> bool:
    """Whether the results folder is a study with `compare:` (its variants hold the runs)."""
    if not (Path(study_dir) / STUDY_FILE).is_file():
        return False  # load_results says what is missing
    return bool(read_study_record(study_dir).study.compare)


# ----------------------------------------------------------------- compute
@dataclass
class Report:
    """Every table the report shows, computed once from the saved results."""

    results: Results
    runs_meta: pd.DataFrame
    runs: pd.DataFrame
    leaderboard: pd.DataFrame
    curves: pd.DataFrame
    trial_table: pd.DataFrame
    targets: pd.DataFrame
    time_to_target: pd.DataFrame
    time_to_target_runs: pd.DataFrame
    pairwise: pd.DataFrame
    best_configs: pd.DataFrame
    importance: pd.DataFrame
    importance_note: str
    coordinates: pd.DataFrame
    status_counts: dict[str, int]
    test_metric: str
    choices: pd.DataFrame  # per value of each categorical hyperparameter
    fidelity: tab.Fidelity  # the one epoch the hyperparameter analysis compares trials at
    at_fidelity: pd.DataFrame  # each trial's metric and config at that epoch
    proposals: pd.DataFrame  # per strategy: how its trials' configs were proposed
    pbt_schedule: pd.DataFrame  # PBT's best trial per seed: hyperparameters per epoch
    views: tuple[str, dict[str, Any]] | None = None  # the trainable's arrays of the best run
    many_seeds: ms.ManySeeds | None = None  # with at least ms.MANY_SEEDS paired seeds
    landscape: ls.Landscape | None = None  # a two-parameter grid study's metric surfaces

    @property
    def metric(self) -> str:
        return self.results.metric

    @property
    def parallel_runs(self) -> int:
        """The most strategy × seed runs that ran at once (hpo run --parallel-runs)."""
        return max((run.parallel_runs for run in self.results.record.runs.values()), default=1)

    @property
    def simulated(self) -> bool:
        """A replay (hpo replay): its seconds are simulated and nothing was trained."""
        return self.results.record.replay is not None

    @property
    def tested(self) -> bool:
        """Whether any run has a test measurement (a replay and an unfinished study have none)."""
        return bool(self.runs["test"].notna().any())

    @property
    def space(self) -> dict[str, dict[str, Any]]:
        """The searched domains as saved (plain data: what the tables and figures take)."""
        return searched_space(self.results)

    def csv_tables(self) -> dict[str, pd.DataFrame]:
        """The tables as written beside the page, columns named after the metric."""
        metric, test = self.metric, self.test_metric
        names = {
            "best_val": f"best_{metric}",
            "best_val_mean": f"best_{metric}_mean",
            "best_val_std": f"best_{metric}_std",
            "test": test,
            "test_seeds": f"{test}_seeds",
            "test_mean": f"{test}_mean",
            "test_std": f"{test}_std",
            "val": metric,
            "best": f"best_{metric}",
            "last": f"last_{metric}",
            "median": f"median_{metric}",
            tab.AT_FIDELITY: f"{metric}_at_epoch_{self.fidelity.epoch}",
        }
        frames = {
            "leaderboard.csv": self.leaderboard,
            "runs.csv": self.runs,
            "time_to_target.csv": self.time_to_target,
            "time_to_target_runs.csv": self.time_to_target_runs,
            "pairwise_tests.csv": self.pairwise,
            "best_configs.csv": self.best_configs,
            "importance.csv": self.importance,
            "trials_summary.csv": self.trial_table,
            "choices.csv": self.choices,
            "trials_at_fidelity.csv": self.at_fidelity,
            # only where recorded / present: old results have no proposed_by, most no pbt
            **({"proposals.csv": self.proposals} if not self.proposals.empty else {}),
            **({"pbt_schedule.csv": self.pbt_schedule} if not self.pbt_schedule.empty else {}),
            **(self.many_seeds.csv_tables() if self.many_seeds is not None else {}),
            **(self.landscape.csv_tables() if self.landscape is not None else {}),
        }
        return {name: frame.rename(columns=names) for name, frame in frames.items()}


def compute(results: Results) -> Report:
    """All tables of the report (pure: nothing is drawn or written here)."""
    trials, metric, mode = results.trials, results.metric, results.mode
    runs_meta = tab.runs_frame(results.record)
    runs = tab.run_table(runs_meta, trials, metric, mode)
    curves = tab.anytime(trials, metric, mode)
    finite_best = runs["best_val"].dropna()
    if finite_best.empty:
        targets = pd.DataFrame(columns=["target", "points", "level"])
    else:
        overall = float(finite_best.max() if mode == "max" else finite_best.min())
        bounded = tab.metric_is_bounded(trials[metric], mode)
        targets = tab.target_levels(overall, mode, bounded)
    per_run = tab.time_to_target(curves, targets, mode)
    trial_table = tab.trial_table(trials, metric, mode)
    space = searched_space(results)
    fidelity = tab.choose_fidelity(trials, metric, results.study.budget)
    at_fidelity = tab.trials_at(trials, metric, fidelity.epoch)
    importance, note = tab.importance(at_fidelity, space, mode)
    test_metric = (
        str(runs_meta["test_metric"].iloc[0])
        if not runs_meta.empty
        else tab.test_metric_name(metric)
    )
    return Report(
        results=results,
        runs_meta=runs_meta,
        runs=runs,
        leaderboard=tab.leaderboard(runs, mode),
        curves=curves,
        trial_table=trial_table,
        targets=targets,
        time_to_target=tab.time_to_target_summary(per_run),
        time_to_target_runs=per_run,
        pairwise=tab.pairwise_tests(runs, mode, SIGNIFICANCE),
        best_configs=tab.best_configs(runs_meta, trials, metric, mode),
        importance=importance,
        importance_note=note,
        coordinates=tab.parallel_coordinates(at_fidelity, space, mode, TOP_TRIALS),
        status_counts=tab.status_counts(trial_table),
        test_metric=test_metric,
        choices=tab.choice_effects(at_fidelity, space, mode, started=trial_table),
        fidelity=fidelity,
        at_fidelity=at_fidelity,
        proposals=tab.proposals(trials),
        pbt_schedule=tab.pbt_schedule(trials, metric, mode, PBT),
        views=load_views(results, runs),
        many_seeds=ms.many_seeds(runs, curves, results.study.budget.total_epochs, mode),
        landscape=ls.landscape(trials, results.study),
    )


def searched_space(results: Results) -> dict[str, dict[str, Any]]:
    return resolved(results.study)["space"]


def load_views(results: Results, runs: pd.DataFrame) -> tuple[str, dict[str, Any]] | None:
    """The conv1 arrays (views.npz) that the trainable saved for a run's selected model,
    from the run with the best validation metric that has them (resnet_transfer's); views
    of other arrays only (a CNN's batch-norm parameters: the compared report) are not."""
    import numpy as np

    from hpo.records import run_dir
    from hpo.results import VIEWS_FILE

    ordered = runs.dropna(subset=["best_val"]).sort_values(
        "best_val", ascending=results.mode == "min"
    )
    for row in ordered.itertuples():
        path = run_dir(results.directory, row.strategy, int(row.seed)) / VIEWS_FILE
        if path.exists():
            with np.load(path) as arrays:
                if set(CONV1_VIEWS) <= set(arrays.files):
                    return f"{row.strategy} seed {int(row.seed)}", dict(arrays)
    return None


# -------------------------------------------------------------------- draw
def draw(report: Report) -> dict[str, Any]:
    """Every figure of the report, by its PNG file name."""
    metric = report.metric
    colors = fig.strategy_colors(report.runs["strategy"].unique())
    space = report.space
    top = tab.top_trials(report.at_fidelity, report.results.mode, TOP_TRIALS)[tab.AT_FIDELITY]
    at, fidelity = _at_epoch(report), report.fidelity.describe()
    best_range = (float(top.min()), float(top.max())) if not top.empty else (0.0, 1.0)
    if report.results.mode == "min":
        best_range = best_range[::-1]
    return {
        "final_best.png": fig.final_best_figure(report.runs, metric, report.test_metric, colors),
        "anytime_epochs.png": fig.anytime_panels(
            tab.anytime_on_grid(report.curves, "cum_epochs"), "cum_epochs", metric, colors
        ),
        "anytime_seconds.png": fig.anytime_panels(
            tab.anytime_on_grid(report.curves, "wall_s"),
            "wall_s",
            metric,
            colors,
            xlabel=_seconds_axis(report),
        ),
        "learning_curves.png": fig.learning_curves_figure(report.results.trials, metric, colors),
        "hyperparameters.png": fig.hyperparameter_scatter_figure(
            report.at_fidelity, space, at, colors, title=f"Each trial's {metric} {fidelity}"
        ),
        "parallel_coordinates.png": fig.parallel_coordinates_figure(
            report.coordinates, space, at, best_range, colors, title=f"Top trials {fidelity}"
        ),
        "importance.png": fig.importance_figure(
            report.importance, f"{metric} {fidelity}; {report.importance_note}"
        ),
        **(
            {
                "pbt_schedule.png": fig.pbt_schedule_figure(
                    report.pbt_schedule, space, colors.get(PBT, GREY), title=_pbt_title(report)
                )
            }
            if not report.pbt_schedule.empty
            else {}
        ),
        **(
            {"conv1_filters.png": fig.conv1_figure(report.views[1], report.views[0])}
            if report.views
            else {}
        ),
        **(_many_seeds_figures(report.many_seeds, colors) if report.many_seeds else {}),
        **(ls.figures(report.landscape) if report.landscape else {}),
    }


def _many_seeds_figures(many: ms.ManySeeds, colors: dict[str, Any]) -> dict[str, Any]:
    test = many.test
    return {
        "many_seeds_mean_rank.png": fig.mean_rank_figure(many.ranks, colors, many.total_epochs),
        "many_seeds_p_better.png": fig.beat_probability_figure(
            many.beats, list(test.mean_ranks.index)
        ),
        "many_seeds_critical_difference.png": fig.critical_difference_figure(
            test.mean_ranks,
            test.critical_difference,
            test.groups,
            colors,
            title=f"{_friedman_text(test)}; {len(test.strategies)} strategies, "
            f"{test.seeds} seeds, α = {test.alpha:g}",
        ),
    }


# ------------------------------------------------------------------ render
def _num(value: Any, digits: int = 4) -> str:
    return "n/a" if h.is_missing(value) else f"{float(value):.{digits}f}"


def _mean_std(mean: Any, std: Any, count: Any) -> str:
    if h.is_missing(mean):
        return "n/a"
    if h.is_missing(std):
        return f"{float(mean):.4f} ({int(count)} seed)"
    return f"{float(mean):.4f} ± {float(std):.4f}"


def _seconds(value: Any) -> str:
    return "n/a" if h.is_missing(value) else f"{float(value):.1f}"


def study_state(record: StudyRecord, runs: pd.DataFrame, counts: dict[str, int]) -> tuple[str, str]:
    """The banner at the top: complete, still running / stopped part-way, partly failed."""
    statuses = runs["run_status"].value_counts().to_dict() if not runs.empty else {}
    total, finished = len(runs), int(statuses.pop("finished", 0))
    problems = []
    if record.ended_at is None or finished < total:
        others = ", ".join(f"{n} {s}" for s, n in statuses.items())
        problems.append(
            f"Not finished: {finished} of {total} runs finished"
            + (f" ({others})" if others else "")
            + "; the study is still running or was stopped part-way, and this report shows"
            " the results saved so far."
        )
    run_errors = int(pd.to_numeric(runs.get("run_errors", pd.Series(dtype=float))).fillna(0).sum())
    if counts.get("errored") or run_errors:
        problems.append(
            f"Partly failed: {counts.get('errored', 0)} trials errored in trials.csv"
            + (f", Ray reported {run_errors} trial errors" if run_errors else "")
            + "."
        )
    if problems:
        return "warn", " ".join(problems)
    return "ok", f"Complete: all {total} runs finished and no trial errored."


def _space_text(space: dict[str, Any]) -> str:
    parts = []
    for name, domain in space.items():
        kind = tab.space_kind(domain)
        if kind == "choice":
            text = f"{name}: choice {{{', '.join(map(str, domain['choice']))}}}"
        else:
            bounds = domain[kind]
            close = ")" if kind in tab.INT_KINDS else "]"  # their high is exclusive
            text = f"{name}: {kind} [{bounds['low']:g}, {bounds['high']:g}{close}"
            if bounds.get("q") is not None:
                text += f" in steps of {bounds['q']:g}"
        if domain.get("grid") is not None:
            text += f", grid {{{', '.join(map(str, domain['grid']))}}}"
        if domain.get("when"):
            text += " only when " + " and ".join(
                f"{parent} ∈ {{{', '.join(map(str, v if isinstance(v, list) else [v]))}}}"
                for parent, v in domain["when"].items()
            )
        parts.append(text)
    return "; ".join(parts)


def _sizes_text(runs_meta: pd.DataFrame) -> str:
    if runs_meta.empty or runs_meta["train_size"].isna().all():
        return "split sizes not recorded in these results"
    sizes = runs_meta.dropna(subset=["train_size"])
    texts = {
        (f"train {int(r.train_size)} / val {int(r.val_size)} / test {int(r.test_size)} examples")
        for r in sizes.itertuples()
    }
    return "; ".join(sorted(texts)) + ("" if len(texts) == 1 else " (differs by seed)")


def replay_summary(record: StudyRecord) -> str | None:
    """For a replay (`record.replay` set), the one line that opens the report: simulated
    on recorded learning curves, nothing trained; which table, how many workers, whether
    decision time was charged, and the surrogate with its held-out error. None otherwise."""
    replay = record.replay
    if replay is None:
        return None
    metric = record.metric
    tested = any(r.best is not None and r.best.test for r in record.runs.values())
    seeds = ", ".join(map(str, replay.table_seeds))
    count = len(replay.table_seeds)
    if replay.surrogate is None or replay.surrogate == "exact":
        surrogate = "every configuration looked up exactly in the table (no surrogate)"
    else:
        error = (
            f"held-out MAE of final {metric} {replay.surrogate_mae_final:.4f}"
            if replay.surrogate_mae_final is not None
            else "held-out error not measured"
        )
        if replay.surrogate_mae_curve is not None:
            error += f" (curve {replay.surrogate_mae_curve:.4f})"
        share = (
            f", {100 * replay.predicted_share:.1f} % of trial-epochs predicted"
            if replay.predicted_share is not None
            else ""
        )
        surrogate = f"surrogate: {replay.surrogate}, {error}{share}"
    timing = ""
    if replay.simulated_s is not None and replay.real_s is not None:
        timing = f" ({replay.simulated_s:.0f} simulated s in {replay.real_s:.0f} real s)"
    return (
        "REPLAY: simulated on recorded learning curves, nothing was trained. "
        f"Table {replay.table} ({replay.table_configs} configurations × {count} training "
        f"seed{'s' * (count != 1)}: {seeds}); {replay.workers} simulated "
        f"worker{'s' * (replay.workers != 1)}; the searchers' decision time "
        + ("charged" if replay.charge_decisions else "not charged")
        + f" to the simulated clock; {surrogate}. Times are simulated seconds{timing}"
        + ("; no test metric was measured." if not tested else ".")
    )


def header_facts(report: Report) -> list[tuple[str, str]]:
    """The study, where and with what it ran, how long, and how its trials ended."""
    record, study = report.results.record, report.results.study
    budget, resources = study.budget, study.resources
    runs, counts = report.runs, report.status_counts
    machine = record.machine
    wall = runs["wall_s"].sum(min_count=1)
    statuses = runs["run_status"].value_counts().to_dict()
    extra = {k: v for k, v in counts.items() if k not in tab.TRIAL_STATUSES}
    run_errors = pd.to_numeric(report.runs_meta.get("run_errors"), errors="coerce")
    return [
        ("study", f"{study.name} — {study.description or 'no description'}"),
        ("study file", f"{record.study_file} (hash {record.study_hash[:12]})"),
        ("trainable", study.trainable),
        ("dataset", _dataset_text(report)),
        (
            "metric",
            f"{report.metric} ({study.metric.mode}imize) on the validation split; "
            + (
                f"{report.test_metric} of each run's selected config on the test split"
                if report.tested
                else "no run has a test measurement"
                + (
                    " (a replay trains nothing, so it measures nothing on the test split)"
                    if report.simulated
                    else " (the function trainable's module defines no "
                    "evaluate(config, checkpoint), so nothing was measured on test data)"
                    if study.runs_function
                    else ""
                )
            ),
        ),
        ("search space", _space_text(report.space)),
        ("fixed", ", ".join(f"{k}={v}" for k, v in study.fixed.items()) or "—"),
        (
            "budget",
            f"{budget.total_epochs} epochs per strategy × seed run; trials up to "
            f"{budget.max_epochs} epochs (first rung {budget.min_epochs}, "
            f"η = {budget.reduction_factor}); time limit per run: "
            + (f"{budget.time_limit_s} s" if budget.time_limit_s else "none"),
        ),
        ("strategies", ", ".join(study.strategies)),
        ("seeds", ", ".join(map(str, study.seeds))),
        (
            "resources",
            f"per trial {resources.cpu} CPU, {resources.gpu} GPU; at most "
            f"{study.max_concurrent_trials} trials at once; "
            f"max_failures {study.max_failures}",
        ),
        (
            "package versions",
            ", ".join(f"{k} {v}" for k, v in record.versions.items()) or "not recorded",
        ),
        ("machine", _machine_text(machine)),
        (
            "wall time",
            f"{_seconds(wall)} {'simulated ' if report.simulated else ''}s in all runs "
            "together; study started "
            f"{record.started_at or '?'}, "
            + (f"ended {record.ended_at}" if record.ended_at else "not ended"),
        ),
        (
            "runs",
            ", ".join(f"{n} {s}" for s, n in statuses.items())
            + f" (of {len(runs)} strategy × seed runs)",
        ),
        (
            "trials",
            f"{sum(counts.values())} reported: {counts['finished']} finished, "
            f"{counts['early_stopped']} early-stopped, {counts['diverged']} diverged, "
            f"{counts['errored']} errored, {counts['running']} still running"
            + "".join(f", {n} {s}" for s, n in extra.items())
            + (
                f"; Ray reported {int(run_errors.sum())} trial errors"
                if run_errors is not None and run_errors.sum() > 0
                else ""
            ),
        ),
    ]


def _machine_text(machine: Any) -> str:
    if machine is None:
        return "not recorded"
    cluster = (
        f" ({machine.cluster_cpus:g} CPUs in the Ray cluster)"
        if machine.cluster_cpus is not None
        else ""
    )
    return f"{machine.hostname}: {machine.cpus} CPUs{cluster}, {machine.gpus:g} GPUs"


def _speedup(baseline: str) -> Any:
    def text(value: Any) -> str:
        if h.is_missing(value):
            return "—"
        if np.isinf(value):
            return f"∞ ({baseline} never reached it)"
        return f"{value:.2f}×"

    return text


def _p_value(value: Any) -> str:
    return "n/a (fewer than 2 paired seeds)" if h.is_missing(value) else f"{value:.3g}"


def render(report: Report, pngs: dict[str, bytes]) -> str:
    """The page: a replay's banner first, the header, then the sections of the report in
    order (the many-seeds section after the statistics where it applies)."""
    results, metric, test = report.results, report.metric, report.test_metric
    study = results.study
    sections = {s: h.Section(s, t) for s, t in zip(SECTION_IDS, _TITLES, strict=True)}

    def figure(name: str, alt: str, caption: str) -> str:
        return h.image(pngs[name], alt, caption, name)

    sections["study"].add(h.facts(header_facts(report)))

    board = report.leaderboard
    tested, seconds = report.tested, _seconds_word(report)
    sections["leaderboard"].add(
        h.paragraph(
            f"Per strategy, over seeds: the best {metric} any trial of the run reached "
            "(mean ± std), "
            + (f"the {test} of the config each run selected, " if tested else "")
            + "and the mean rank of the strategy among all strategies of the same seed "
            "(1 = best; ties share). "
            + ("" if tested else f"No run has a {test} measurement, so none is shown. ")
            + f"Trials, epochs and {seconds} are per strategy × seed run (mean over seeds). "
            "Decision time: the seconds the driver spent inside the searcher's and the "
            "scheduler's calls (suggest, on_trial_result, on_trial_complete, "
            "choose_trial_to_run, …), part of the wall time, with its share of it; 'not "
            "measured' for runs recorded before hpo measured it."
        ),
        _leaderboard_table(board, metric, test if tested else None, report.simulated),
        figure(
            "final_best.png",
            "final best validation metric and test metric per seed and strategy",
            f"Each seed's best {metric} (dots)"
            + (f" and the {test} of the config that run selected (crosses)" if tested else "")
            + ", per strategy.",
        ),
    )

    sections["anytime"].add(
        h.paragraph(
            f"Best {metric} found so far by each strategy against the compute it had spent: "
            f"cumulative epochs over all its trials, and {seconds} since the run "
            "started. Line: mean over seeds; band: from the worst to the best seed. Left: the "
            "whole range; right: zoomed on the range of the runs' final values."
        ),
        figure(
            "anytime_epochs.png",
            "anytime performance against cumulative epochs",
            f"Best {metric} so far against cumulative epochs.",
        ),
        figure(
            "anytime_seconds.png",
            f"anytime performance against {seconds}",
            f"Best {metric} so far against {seconds}.",
        ),
    )

    targets = report.targets
    sections["time-to-target"].add(
        h.paragraph(
            "Targets: "
            + "; ".join(
                f"{t.target} = {metric} {_target_sign(results.mode)} {t.level:.4f}"
                for t in targets.itertuples()
            )  # fmt: skip
            + f" (best {metric} any strategy found: "
            + (_num(_overall_best(report)) + ")." if not targets.empty else "none yet).")
            + " Epochs and seconds are the medians over seeds of the first moment the run's "
            "best-so-far reached the target; a seed that never reached it counts as slower "
            "than all, so the median is 'not reached' when half the seeds or more missed it. "
            "Speed-up = the baseline's median / the strategy's median (above 1: faster)."
            + (" Seconds are simulated seconds (a replay)." if report.simulated else "")
        ),
        _time_to_target_table(report.time_to_target, report.simulated),
    )

    pairs = report.pairwise
    sections["statistics"].add(
        h.warning(_seed_warning(pairs)),
        h.paragraph(
            f"Wilcoxon signed-rank test (scipy.stats.wilcoxon, two-sided) on each seed's final "
            f"best {metric}, paired by seed. Difference = mean over seeds of a − b; 'better' is "
            f"the strategy with the better mean; wins = seeds on which each was strictly better."
        ),
        _pairwise_table(pairs),
        h.paragraph(_many_seeds_note(report), "note"),
    )

    sections["learning-curves"].add(
        h.paragraph(
            f"{metric} at every epoch of every trial, one panel per strategy (all seeds). "
            "Trials stopped early by SHA, ASHA, Hyperband, BOHB or the epoch budget end early "
            "(open circle at their last epoch); diverged trials are marked × at the bottom at "
            "the epoch their loss became non-finite (they have no score there, never a zero)."
        ),
        figure(
            "learning_curves.png",
            "learning curves per strategy",
            f"{metric} per epoch of every trial; colour: strategy.",
        ),
    )

    sections["proposals"].add(*_proposals_parts(report.proposals))

    fidelity, at = report.fidelity, _at_epoch(report)
    sections["hyperparameters"].add(
        h.paragraph(
            f"Trials are compared at one fidelity, {fidelity.describe()}: each trial's {metric} "
            f"at that epoch (not its best over other epochs), with the config in force then "
            f"(PBT changes a trial's config as it trains); {fidelity.left_out()}. A trial "
            "stopped after one epoch by SHA, ASHA, Hyperband or BOHB would otherwise sit "
            "beside one trained to the end. Log axes for log domains, categories jittered "
            "sideways."
        ),
        figure(
            "hyperparameters.png",
            "metric against each hyperparameter at one fidelity",
            f"Each trial's {metric} against each hyperparameter, {fidelity.describe()}.",
        ),
        figure(
            "parallel_coordinates.png",
            "parallel coordinates of the top trials at one fidelity",
            f"The {len(report.coordinates)} trials with the best {at} "
            f"({fidelity.trials} trials reached it): each line is one trial, each vertical axis "
            "one hyperparameter (its position in the search space), the last axis the metric.",
        ),
        h.heading("Hyperparameter importance (fANOVA)"),
        h.paragraph(
            "Optuna's FanovaImportanceEvaluator on an in-memory Optuna study holding the "
            f"trials {fidelity.describe()} (distributions from the study's space; value: the "
            f"trial's {at}): the share of the metric's variance each hyperparameter explains. "
            f"{report.importance_note}."
        ),
        figure(
            "importance.png",
            "fANOVA hyperparameter importance",
            f"fANOVA importance of each trial's {metric}, {fidelity.describe()}.",
        ),
        h.table(
            report.importance,
            {"param": "hyperparameter", "importance": "importance"},
            {"importance": lambda v: _num(v, 3)},
            table_id="importance-table",
        ),
    )
    if not report.choices.empty:
        sections["hyperparameters"].add(
            h.heading("Categorical hyperparameters, value by value"),
            h.paragraph(
                f"Every trial of every strategy and seed, grouped by the value it used: how "
                f"many trials started with it and the epochs they spent; then, of the trials "
                f"{fidelity.describe()}, how many used it and the median and best of their "
                f"{metric} there (e.g. what each freezing policy reached)."
            ),
            h.table(
                report.choices,
                {
                    "param": "hyperparameter",
                    "value": "value",
                    "trials_started": "trials started",
                    "epochs": "epochs spent",
                    "trials": f"trials at epoch {fidelity.epoch}",
                    "median": f"median {at}",
                    "best": f"best {at}",
                },
                {"median": _num, "best": _num},
                table_id="choices-table",
            ),
        )
    if not report.pbt_schedule.empty:
        sections["hyperparameters"].add(
            h.heading("PBT's hyperparameter schedule"),
            h.paragraph(
                "PBT changes a trial's hyperparameters while it trains: every perturbation "
                "interval the worst trials copy a better trial's weights and config, then "
                "perturb its continuous hyperparameters. Shown: the learning rate (and every "
                "other numeric hyperparameter that changed) in force at each epoch of the best "
                "pbt trial of each seed; a triangle marks the first epoch trained after an "
                "exploit (the trial's config changed or it was marked a perturbation). "
                + _pbt_title(report)
                + "."
            ),
            figure(
                "pbt_schedule.png",
                "hyperparameter schedule of the best pbt trial per seed",
                "Hyperparameters in force per epoch of the best pbt trial of each seed; "
                "triangles: the first epoch after an exploit.",
            ),
        )

    configs = report.best_configs
    config_columns = [c for c in configs.columns if c.startswith("config/")]
    space_first = sorted(
        config_columns,
        key=lambda c: (c.removeprefix("config/") not in study.space, c),
    )
    measured = {"test": test, "checkpoint_epoch": "test checkpoint epoch"} if tested else {}
    sections["best-configs"].add(
        h.paragraph(
            f"Per strategy and seed, the config the run selected (best {metric}, ties: the "
            + (
                f"earliest) with its {test}, measured once on the test split from the trial's "
                "best checkpoint. Runs that have not finished show their best so far as "
                "provisional, without a test metric."
                if tested
                else f"earliest). No run has a {test} measurement"
                + (" (a replay trains nothing)." if report.simulated else ".")
                + " Runs that have not finished show their best so far as provisional."
            )
        ),
        h.table(
            configs,
            {
                "strategy": "strategy",
                "seed": "seed",
                "run_status": "run",
                "selection": "selection",
                "trial_id": "trial",
                "epoch": "epoch",
                "val": metric,
                **measured,
                **{c: c.removeprefix("config/") for c in space_first},
            },
            {"val": _num, "test": _num},
            table_id="best-configs-table",
        ),
    )

    if report.views:
        sections["best-configs"].add(
            h.heading("First-layer filters of the selected model"),
            figure(
                "conv1_filters.png",
                "conv1 filters before and after training, and feature maps",
                f"The selected model of the best run ({report.views[0]}), from its best "
                "checkpoint: its 64 conv1 filters as they were before training (pretrained or "
                "initial) and after, each scaled on its own, and conv1's feature maps (after "
                "batch norm and ReLU) for the first validation image.",
            ),
        )

    files = sorted([*report.csv_tables(), *pngs])
    footer = (
        f"Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')} by hpo "
        f"{_version()} from {results.directory.resolve()} (study.json, trials.csv). "
        f"Beside this page: {', '.join(files)}."
    )
    ordered = list(sections.values())
    if report.landscape is not None:  # before many-seeds: it comes later than "statistics"
        land = h.Section(*LANDSCAPE_SECTION, ls.section_parts(report.landscape, figure))
        ordered.insert(SECTION_IDS.index("hyperparameters") + 1, land)
    if report.many_seeds is not None:
        many = h.Section(*MANY_SEEDS_SECTION, _many_seeds_parts(report, figure))
        ordered.insert(SECTION_IDS.index("statistics") + 1, many)
    comparisons = _comparison_parts(results.directory)
    if comparisons:
        ordered.append(h.Section("retrain-comparisons", "Retrained variants compared", comparisons))
    return h.page(
        f"HPO study report{' (replay, simulated)' if report.simulated else ''}: {study.name}",
        study.description,
        study_state(results.record, report.runs_meta, report.status_counts),
        ordered,
        footer,
        replay=replay_summary(results.record),
    )


def _comparison_parts(study_dir: Path) -> list[str]:
    """The `hpo retrain --variant` comparisons in the results folder: what ran, the table
    of test accuracy and paired tests, the figure; each with the folder it lives in."""
    from hpo.retrain_compare import find_comparisons

    parts: list[str] = []
    for folder, document in find_comparisons(study_dir):
        variants = "; ".join(
            f"{v['name']}: {_overrides(v['overrides'])}" for v in document["variants"]
        )
        where = folder.relative_to(study_dir)
        if document.get("common_overrides"):
            variants += f"; all: {_overrides(document['common_overrides'])}"
        parts.append(h.heading(f"{where}/ (hpo retrain --variant)"))
        parts.append(
            h.paragraph(
                f"The config of {document['export']} retrained under each variant ({variants}) "
                f"with seeds {', '.join(map(str, document['seeds']))}, the same epochs, on the "
                "training split only and measured at the last epoch. Differences are the first "
                "variant minus the other, paired by seed; p-values two-sided. Files: "
                f"{where}/comparison_summary.csv, comparison.csv, comparison.png."
            )
        )
        summary = pd.DataFrame(document["summary"])
        parts.append(
            h.table(
                summary,
                {"labels_per_class": "labels/class", "variant": "variant", "seeds": "seeds",
                 "mean": "test accuracy", "std": "std", "ci_low": "95% low", "ci_high": "95% high"},
                {c: _num for c in ("mean", "std", "ci_low", "ci_high")},
            )
        )  # fmt: skip
        paired = pd.DataFrame(document["paired"])
        if not paired.empty:
            parts.append(
                h.table(
                    paired,
                    {"labels_per_class": "labels/class", "variant": "difference",
                     "seeds": "paired seeds", "mean_difference": "mean", "wins": "wins",
                     "t_test_p": "paired t p", "wilcoxon_p": "Wilcoxon p"},
                    {"mean_difference": _num, "t_test_p": _p_value, "wilcoxon_p": _p_value},
                )
            )  # fmt: skip
        png = folder / "comparison.png"
        if png.is_file():
            parts.append(h.image(png.read_bytes(), "test accuracy by labels per class",
                                 f"{where}/comparison.png"))  # fmt: skip
    return parts


def _overrides(overrides: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in overrides.items()) or "as exported"


_TITLES = (
    "Study",
    "Leaderboard",
    "Anytime performance",
    "Time to target",
    "Statistical comparison",
    "Learning curves",
    "How trials were proposed",
    "Hyperparameters",
    "Best configurations",
)


def _leaderboard_table(
    board: pd.DataFrame, metric: str, test: str | None, simulated: bool = False
) -> str:
    """The leaderboard; without a test column where `test` is None (nothing measured)."""
    shown = board.assign(
        best=[_mean_std(m, s, n) for m, s, n in zip(
            board["best_val_mean"], board["best_val_std"], board["seeds"], strict=True)],
        test_text=[_mean_std(m, s, n) for m, s, n in zip(
            board["test_mean"], board["test_std"], board["test_seeds"], strict=True)],
        finished=[f"{f} of {n}" for f, n in zip(
            board["runs_finished"], board["runs"], strict=True)],
        decision_text=[_decision(d, w) for d, w in zip(
            board["decision_s_per_run"], board["wall_s_per_run"], strict=True)],
    )  # fmt: skip
    return h.table(
        shown,
        {
            "strategy": "strategy",
            "finished": "runs finished",
            "seeds": "seeds with a value",
            "best": f"best {metric} (mean ± std)",
            **({"test_text": f"{test} of selected config (mean ± std)"} if test else {}),
            "mean_rank": "mean rank over seeds",
            "trials_per_run": "trials started",
            "epochs_per_run": "epochs spent",
            "wall_s_per_run": "simulated wall time (s)" if simulated else "wall time (s)",
            "decision_text": "decision time (s, share of wall)",
        },
        {
            "mean_rank": lambda v: _num(v, 2),
            "trials_per_run": lambda v: _num(v, 1),
            "epochs_per_run": lambda v: _num(v, 1),
            "wall_s_per_run": _seconds,
        },
        table_id="leaderboard-table",
    )


def _time_to_target_table(table: pd.DataFrame, simulated: bool = False) -> str:
    if table.empty:
        return h.paragraph("No run has a finite best value yet.", "note")
    columns = {
        "target": "target",
        "strategy": "strategy",
        "seeds_reached": "seeds reached",
        "median_epochs": "median epochs",
        "median_seconds": "median simulated seconds" if simulated else "median seconds",
    }
    formats: dict[str, Any] = {
        "median_epochs": lambda v: "not reached" if h.is_missing(v) else f"{v:g}",
        "median_seconds": lambda v: "not reached" if h.is_missing(v) else f"{v:.1f}",
    }
    shown = table.assign(seeds_reached=[f"{r} of {n}" for r, n in zip(
        table["seeds_reached"], table["seeds"], strict=True)])  # fmt: skip
    for baseline in tab.BASELINES:
        for unit in ("epochs", "seconds"):
            column = f"speedup_{unit}_vs_{baseline}"
            if column in table:
                columns[column] = f"speed-up vs {baseline} ({unit})"
                formats[column] = _speedup(baseline)
    return h.table(shown, columns, formats, table_id="time-to-target-table")


def _pairwise_table(pairs: pd.DataFrame) -> str:
    if pairs.empty:
        return h.paragraph("Fewer than two strategies have results: nothing to compare.", "note")
    shown = pairs.assign(
        wins=[f"{a}–{b}" for a, b in zip(pairs["wins_a"], pairs["wins_b"], strict=True)],
        significant_text=[
            _significant(p, s, n, low)
            for p, s, n, low in zip(
                pairs["p_value"], pairs["significant"], pairs["seeds"], pairs["min_p"], strict=True
            )
        ],
    )
    return h.table(
        shown,
        {
            "strategy_a": "a",
            "strategy_b": "b",
            "seeds": "paired seeds",
            "mean_a": "mean a",
            "mean_b": "mean b",
            "difference": "difference a − b",
            "better": "better",
            "wins": "wins a–b",
            "p_value": "p-value",
            "significant_text": "significant at 0.05",
        },
        {
            "mean_a": _num,
            "mean_b": _num,
            "difference": lambda v: "n/a" if h.is_missing(v) else f"{v:+.4f}",
            "p_value": _p_value,
        },
        table_id="statistics-table",
    )


def _seed_warning(pairs: pd.DataFrame, alpha: float = SIGNIFICANCE) -> str:
    """What the tests below can say with the seeds measured: with n paired seeds the
    smallest p-value the test can give is 2 / 2**n, so below `seeds_needed` seeds no
    difference can be significant, whatever the numbers."""
    counts = pairs["seeds"] if not pairs.empty else pd.Series([0])
    low, high = int(counts.min()), int(counts.max())
    measured = f"{high}" if low == high else f"{low} to {high}"
    if high < 2:
        return (
            f"Only {high} seed per strategy: no statistical test is possible. Differences "
            "below may be luck; run the study with more seeds before trusting a ranking."
        )
    needed = tab.seeds_needed(alpha)
    floor = f"2/2^{high} = {tab.min_attainable_p(high):.3g}"
    if high < needed:
        return (
            f"Too few seeds for these tests to mean anything: {measured} paired seeds per "
            f"pair. With n paired seeds the smallest two-sided p-value a Wilcoxon signed-rank "
            f"test can give is 2/2^n ({floor} here, even if one strategy wins on every seed), "
            f"so no difference can reach p < {alpha:g}; that takes at least {needed} seeds. "
            "Read the table as a description of these seeds, not as evidence."
        )
    few = int((pairs["seeds"] < needed).sum())
    return (
        f"{measured} paired seeds: the smallest p-value the test can give is {floor}"
        + (
            f"; {few} pairs have fewer than {needed} seeds and cannot reach p < {alpha:g}"
            if few
            else ""
        )
        + f". {len(pairs)} pairs are tested without a multiple-comparison correction, so about "
        f"{alpha * len(pairs):.1f} of them may look significant at {alpha:g} by chance alone."
    )


def _significant(p_value: Any, significant: bool, seeds: int, floor: float) -> str:
    if h.is_missing(p_value):
        return "n/a"
    if floor >= SIGNIFICANCE:
        return f"no (cannot be: p ≥ {floor:.3g} with {seeds} seeds)"
    return "yes" if significant else "no"


def _decision(seconds: Any, wall: Any) -> str:
    if h.is_missing(seconds):
        return "not measured"
    share = "" if h.is_missing(wall) or not wall else f" ({100 * seconds / wall:.1f} %)"
    return f"{seconds:.1f}{share}"


def _dataset_text(report: Report) -> str:
    dataset = report.results.study.dataset
    if dataset is None:
        return "loaded by the function trainable itself (hpo knows nothing of its splits)"
    return (
        f"{dataset.name}: validation fraction {dataset.val_fraction}, "
        f"test fraction {dataset.test_fraction}, split by "
        + _split_text(report)
        + f"; {_sizes_text(report.runs_meta)}"
    )


def _split_text(report: Report) -> str:
    """How the data was split: per run, or once (a fixed split_seed, or a replay's table,
    recorded on the split of the study's first seed: hpo.tabulate)."""
    study = report.results.study
    if study.dataset.split_seed is not None:
        return f"seed {study.dataset.split_seed}"
    if report.simulated:
        return f"seed {study.seeds[0]} (the table's one split)"
    return "each run's seed"


def _seconds_axis(report: Report) -> str | None:
    """The time axis's clock, where it is not plain wall clock of a run alone."""
    if report.simulated:
        return "simulated seconds since the run started (a replay)"
    if report.parallel_runs > 1:
        return (
            f"wall-clock seconds since the run started (up to {report.parallel_runs} runs "
            "at once shared the machine)"
        )
    return None


def _seconds_word(report: Report) -> str:
    return "simulated seconds" if report.simulated else "wall-clock seconds"


def _friedman_text(test: ms.RankTest) -> str:
    if h.is_missing(test.p_value):
        return "Friedman test not applicable (needs three strategies)"
    return f"Friedman χ² = {test.statistic:.2f}, p = {test.p_value:.3g}"


def _interval(low: Any, high: Any) -> str:
    return f"{low:.2f}–{high:.2f}"


def _many_seeds_note(report: Report) -> str:
    """The statistics section's last line: why there is no many-seeds section, or that
    the next one compares all strategies at once."""
    if report.many_seeds is None:
        return ms.many_seeds_shortfall(report.runs) or "No many-seeds comparison."
    return (
        f"With {len(report.many_seeds.seeds)} paired seeds, the next section compares all "
        "strategies at once (Friedman test, Nemenyi post-hoc), which accounts for the many "
        "pairs."
    )


def _ahead(winner: Any) -> str:
    """How the winner of a budget point stands to the runner-up, in words."""
    if np.isclose(winner.mean_rank, winner.runner_up_mean_rank):
        return "tied with"
    return "clearly ahead of" if winner.clear else "ahead of"


def _many_seeds_parts(report: Report, figure: Any) -> list[str]:
    """The many-seeds section: mean rank over the budget, who wins at 10/30/100 %,
    P(A ends better than B), and the Friedman test with the Nemenyi critical difference."""
    many, metric = report.many_seeds, report.metric
    assert many is not None
    test, k, n = many.test, len(many.strategies), len(many.seeds)
    winners = many.winners
    wins = "; ".join(
        f"at {100 * w.fraction:g} % of the budget ({w.budget_epochs:g} epochs) {w.winner} has "
        f"the best mean rank, {w.mean_rank:.2f} (95 % interval "
        f"{_interval(w.rank_low, w.rank_high)})"
        + (
            f", {_ahead(w)} {w.runner_up} {w.runner_up_mean_rank:.2f}"
            f" ({_interval(w.runner_up_low, w.runner_up_high)})"
            if isinstance(w.runner_up, str)
            else ""
        )
        for w in winners.itertuples()
    )
    groups = [g for g in test.groups if len(g) > 1]
    if h.is_missing(test.p_value):
        verdict = "The Friedman test needs three strategies; the Wilcoxon test above compares two."
    elif test.significant:
        verdict = (
            f"{_friedman_text(test)} < {test.alpha:g}: the strategies do not all perform alike."
        )
    else:
        verdict = (
            f"{_friedman_text(test)} ≥ {test.alpha:g}: no evidence that the strategies differ, "
            "so the post-hoc groups below are descriptive only."
        )
    return [
        h.paragraph(
            f"{n} seeds on which all {k} strategies ran (paired seeds; this section needs at "
            f"least {ms.MANY_SEEDS}). Each run's best {metric} so far, as in the anytime curves "
            "(a diverged epoch has no score); a run with no finite value yet ranks last. "
            f"Intervals: 95 % percentile bootstrap over seeds ({ms.RESAMPLES} resamples, "
            f"numpy seed {ms.BOOTSTRAP_SEED})."
        ),
        h.heading("Mean rank over the budget"),
        h.paragraph(
            f"At every 5 % of the budget ({many.total_epochs} epochs per strategy × seed run, "
            "counted in the run's cumulative epochs over all its trials), each run's best "
            f"{metric} so far is ranked among the {k} strategies of its seed (1 = best, ties "
            "share the average rank). Line: the mean rank over seeds; band: its 95 % interval."
        ),
        figure(
            "many_seeds_mean_rank.png",
            "mean rank over seeds against the share of the budget spent",
            f"Mean rank of each strategy over {n} seeds against the share of the budget spent; "
            "band: 95 % bootstrap interval.",
        ),
        h.heading("Which strategy wins at 10 %, 30 % and 100 % of the budget"),
        h.paragraph(
            wins[:1].upper()
            + wins[1:]
            + ". 'Clearly': the winner's interval lies wholly below the "
            "runner-up's."
            if wins
            else "No budget point to compare."
        ),
        h.table(
            winners.assign(
                share=[f"{100 * f:g} %" for f in winners["fraction"]],
                winner_interval=[
                    _interval(a, b)
                    for a, b in zip(winners["rank_low"], winners["rank_high"], strict=True)
                ],
                runner_up_interval=[
                    _interval(a, b)
                    for a, b in zip(
                        winners["runner_up_low"], winners["runner_up_high"], strict=True
                    )
                ],
            ),  # fmt: skip
            {
                "share": "budget",
                "budget_epochs": "epochs",
                "winner": "best mean rank",
                "mean_rank": "its mean rank",
                "winner_interval": "95 % interval",
                "runner_up": "runner-up",
                "runner_up_mean_rank": "its mean rank",
                "runner_up_interval": "95 % interval",
                "clear": "intervals apart",
            },
            {
                "mean_rank": lambda v: _num(v, 2),
                "runner_up_mean_rank": lambda v: _num(v, 2),
                "clear": lambda v: "yes" if v else "no",
            },
            table_id="many-seeds-winners-table",
        ),
        h.heading("P(A ends better than B)"),
        h.paragraph(
            f"For each pair, the share of the {n} paired seeds on which the row strategy's final "
            f"best {metric} is better than the column strategy's (ties count half): 0.5 means "
            "as often better as worse. Rows and columns by mean rank, best first; the 95 % "
            "bootstrap intervals are in many_seeds_p_better.csv."
        ),
        figure(
            "many_seeds_p_better.png",
            "probability that one strategy ends better than another",
            f"P(row ends better than column) over {n} paired seeds.",
        ),
        h.heading("Friedman test and Nemenyi critical difference"),
        h.paragraph(
            f"Friedman test (scipy.stats.friedmanchisquare) on each seed's final best {metric}, "
            f"{k} strategies over {n} paired seeds. {verdict} Nemenyi post-hoc test: two "
            f"strategies differ significantly at {test.alpha:g} where their mean ranks differ by "
            f"more than the critical difference CD = q_α·√(k(k+1)/6N) = {test.q_alpha:.3f}·"
            f"√({k}·{k + 1}/(6·{n})) = {test.critical_difference:.3f}, q_α = "
            f"studentized_range.ppf({1 - test.alpha:g}, {k}, ∞)/√2. "
            + (
                "Not significantly different: "
                + "; ".join(" = ".join(g) for g in groups)
                + ". Any two strategies not in one group differ significantly."
                if groups
                else "Every two strategies differ significantly."
            )
        ),
        h.table(
            test.table(),
            {
                "strategy": "strategy",
                "mean_rank": "mean rank of the final best",
                "group": "group (same letter: not significantly different)",
                "not_different_from": "not significantly different from",
            },
            {"mean_rank": lambda v: _num(v, 2)},
            table_id="critical-difference-table",
        ),
        figure(
            "many_seeds_critical_difference.png",
            "mean ranks with the Nemenyi critical difference",
            "Mean rank of each strategy's final best (dot) with a bar of ±CD/2: strategies "
            "whose bars do not overlap differ significantly (Nemenyi); thick lines at the "
            "right join the groups within CD of each other.",
        ),
    ]


def _at_epoch(report: Report) -> str:
    return f"{report.metric} at epoch {report.fidelity.epoch}"


def _pbt_title(report: Report) -> str:
    best = report.pbt_schedule.drop_duplicates("seed")
    return f"{PBT}, best trial per seed: " + "; ".join(
        f"seed {r.seed}: {r.trial_id} (best {report.metric} {r.best:.4f})"
        for r in best.itertuples()
    )


def _proposals_parts(table: pd.DataFrame) -> list[str]:
    """The proposals section: per strategy, how many of its trials a model proposed."""
    if table.empty:
        return [
            h.paragraph(
                "How each trial's configuration was proposed is not recorded in these results "
                "(trials.csv has no proposed_by column: they were written by an hpo before it "
                "recorded it).",
                "note",
            )
        ]
    found = [c for c in table.columns if c not in ("strategy", "seeds", "trials")]
    counts = [c for c in found if not c.startswith("model_share")]
    summary = "; ".join(
        f"{r.strategy}: {r.model} of {r.trials} trials model-based"
        + (f" ({r.perturbation} perturbed)" if r.perturbation else "")
        for r in table.itertuples()
    )
    return [
        h.paragraph(
            "How each trial's configuration was proposed (trials.csv's proposed_by): from the "
            "grid, at random, as a model-based searcher's random start-up trial, by the "
            "searcher's fitted model (e.g. TPE), or by PBT perturbing a config it copied from "
            "a better trial (counted once per trial). Model share = model / trials per run: "
            f"the mean and the lowest over seeds. {summary}."
        ),
        h.table(
            table,
            {
                "strategy": "strategy",
                "seeds": "seeds",
                "trials": "trials (all seeds)",
                **{c: c.replace("_", " ") for c in counts},
                "model_share_mean": "model share (mean over seeds)",
                "model_share_min": "model share (lowest seed)",
            },
            {"model_share_mean": lambda v: _num(v, 2), "model_share_min": lambda v: _num(v, 2)},
            table_id="proposals-table",
        ),
    ]


def _target_sign(mode: str) -> str:
    return "≥" if mode == "max" else "≤"


def _overall_best(report: Report) -> float:
    values = report.runs["best_val"].dropna()
    return float(values.max() if report.results.mode == "max" else values.min())


def _version() -> str:
    try:
        return metadata.version("hpo")
    except metadata.PackageNotFoundError:
        return "(not installed)"
