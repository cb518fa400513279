"""The report of a study that compares factors (`compare:`): which level of each factor
wins, by how much, and whether the difference is more than the noise between runs.

Each variant (one combination of levels) is an ordinary study with its own report; this
page puts them side by side: per factor a table of its variants (runs, validation and
test metrics, the hyperparameters the best run selected), paired tests over blocks of
(strategy, seed, levels of the other factors), a one-sentence verdict and the selected
trials' curves on shared axes. Sections that only some studies have (a learning-rate
range test, batch-norm parameters, per-iteration losses, a sweep over batch sizes, the
gradient-pathology sections of `pathology`) appear where the data holds them.
`compare_tables` computes (pure), `compare_figures` draws, this module finds the sections
the data calls for and writes the page.
"""

from __future__ import annotations

import html
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from hpo import files
from hpo.compare import CompareResults, VariantResults, load_compare
from hpo.lr_range import (
    LrBounds,
    range_curve,
    range_test_trials,
)
from hpo.report import figures as fig
from hpo.report import html as h
from hpo.report import pathology as pt
from hpo.report.build import REPORT_DIR, build_report
from hpo.report.compare_figures import (
    batch_size_figure,
    bn_violin_figure,
    factor_curves_figure,
    iteration_figure,
    range_test_figure,
)
from hpo.report.compare_tables import (
    ALPHA,
    batch_size_table,
    factor_tests,
    factor_verdict,
    level_table,
    lr_lines,
    planned_runs,
    range_bounds,
    reference_gaps,
    runs_of,
)
from hpo.spec import StudyError, slug


# =================================================================== build
@dataclass
class Sections:
    """What the page shows beyond the factors, found in the data (empty: no section)."""

    range_curve: pd.DataFrame = field(default_factory=pd.DataFrame)
    range_bounds: pd.DataFrame = field(default_factory=pd.DataFrame)
    bn_views: dict[str, dict[str, Any]] = field(default_factory=dict)
    lr_lines: dict[str, tuple[str, pd.DataFrame]] = field(default_factory=dict)
    batch_sizes: pd.DataFrame = field(default_factory=pd.DataFrame)
    reference_gaps: pd.DataFrame = field(default_factory=pd.DataFrame)
    # gradient norms and distributions, boundaries, collapse, iterations to fit, regression
    pathology: pt.Pathology = field(default_factory=pt.Pathology)


def special_sections(cmp: CompareResults) -> Sections:
    """The special sections the data calls for: range-test trials → the range test;
    views with bn_ arrays → violins; recorded iterations or a grid over lr → loss by lr;
    a variant trying ≥ MIN_BATCH_SIZES batch sizes → the batch-size sweep."""
    found = Sections()
    tests = range_test_trials(cmp.trials)
    if not tests.empty:
        curves = [
            range_curve(rows).assign(variant=label)
            for label, rows in tests.groupby("variant", sort=False)
        ]
        found.range_curve = pd.concat(curves, ignore_index=True)
        found.range_bounds = range_bounds(found.range_curve)
    found.bn_views = {
        label: {k: v for k, v in views.items() if k.startswith("bn_")}
        for label, views in cmp.views.items()
        if any(k.startswith("bn_") for k in views)
    }
    found.lr_lines = lr_lines(cmp)
    found.batch_sizes = batch_size_table(cmp.trials, cmp.factors, _train_size(cmp))
    if not found.batch_sizes.empty:
        # a variant that only runs range tests has no gap worth comparing with
        only_tests = set(tests["variant"]) - set(cmp.trials.drop(tests.index)["variant"])
        exclude = [*found.batch_sizes["variant"].unique(), *only_tests]
        found.reference_gaps = reference_gaps(cmp.curves, exclude)
    found.pathology = pt.find_pathology(cmp)
    return found


def _train_size(cmp: CompareResults) -> float | None:
    """The training split's size as a run recorded it: a full batch."""
    for variant in cmp.variants:
        for run in variant.record.runs.values() if variant.record else []:
            if run.data_sizes.get("train"):
                return float(run.data_sizes["train"])
    return None


def build_compare_report(study_dir: str | Path) -> Path:
    """Each started variant's own report, then `<study_dir>/report/index.html` comparing
    them (figures as PNG and tables as CSV beside it); returns the page's path."""
    cmp = load_compare(study_dir)
    built = {v.variant.label: _build_variant(v) for v in cmp.variants}
    out = cmp.directory / REPORT_DIR
    tables = {f: (level_table(cmp, f), factor_tests(cmp, f)) for f in cmp.factors}
    found = special_sections(cmp)
    for name, frame in _csv_tables(cmp, tables, found).items():
        files.write_csv(out / name, frame)
    pngs = {name: fig.png_bytes(figure) for name, figure in _figures(cmp, found).items()}
    for name, data in pngs.items():
        files.write_bytes(out / name, data)
    return files.write_text(out / "index.html", _render(cmp, tables, found, built, pngs))


def _build_variant(variant: VariantResults) -> str | None:
    """Build the variant's own report; None when built, else why not (one line)."""
    if variant.record is None:
        return "not started"
    try:
        build_report(variant.directory)
    except StudyError as error:
        return str(error)
    return None


def _csv_tables(
    cmp: CompareResults, tables: dict[str, Any], found: Sections
) -> dict[str, pd.DataFrame]:
    names = {"best_val": f"best_{cmp.record.metric}"}
    names.update({f"best_val_{s}": f"best_{cmp.record.metric}_{s}" for s in ("mean", "std")})
    frames = {"runs.csv": runs_of(cmp)}
    for factor, (levels, tests) in tables.items():
        frames[f"levels_{slug(factor)}.csv"] = levels
        frames[f"factor_tests_{slug(factor)}.csv"] = tests.replace({"outcome": names})
    if not found.range_curve.empty:
        frames["lr_range.csv"] = found.range_curve
        frames["lr_bounds.csv"] = found.range_bounds
    if not found.batch_sizes.empty:
        frames["batch_size.csv"] = found.batch_sizes
    frames.update(pt.csv_tables(found.pathology))
    return {name: frame.rename(columns=names) for name, frame in frames.items()}


def _file_names(cmp: CompareResults) -> dict[str, str]:
    """Variant label → the name its figures carry (its folder's)."""
    return {v.variant.label: v.variant.slug for v in cmp.variants}


def _figures(cmp: CompareResults, found: Sections) -> dict[str, Figure]:
    names = _file_names(cmp)
    figures = {
        f"curves_{slug(f)}.png": factor_curves_figure(cmp.curves, f, cmp.levels(f))
        for f in cmp.factors
    }
    for label, bounds in _pooled_bounds(found).items():
        curve = found.range_curve[found.range_curve["variant"] == label]
        figures[f"lr_range_{names[label]}.png"] = range_test_figure(
            curve, bounds, f"{label}: range test"
        )
    if found.bn_views:
        for parameter in ("gamma", "beta"):
            figures[f"bn_{parameter}.png"] = bn_violin_figure(found.bn_views, parameter)
    for label, (x, lines) in found.lr_lines.items():
        figures[f"lr_lines_{names[label]}.png"] = iteration_figure(lines, x, label)
    for label, table in (
        found.batch_sizes.groupby("variant", sort=False) if not found.batch_sizes.empty else []
    ):
        figures[f"batch_size_{names[label]}.png"] = batch_size_figure(
            table, found.reference_gaps, label
        )
    figures.update(pt.figures(found.pathology))
    return figures


def _pooled_bounds(found: Sections) -> dict[str, LrBounds | None]:
    if found.range_bounds.empty:
        return {}
    pooled = found.range_bounds[found.range_bounds["scope"] == "all runs"]
    return {
        r.variant: None if h.is_missing(r.lr_min) else LrBounds(float(r.lr_min), float(r.lr_max))
        for r in pooled.itertuples()
    }


# ------------------------------------------------------------------ render
def _mean_std(mean: Any, std: Any) -> str:
    if h.is_missing(mean):
        return "n/a"
    return f"{mean:.4f}" + ("" if h.is_missing(std) else f" ± {std:.4f}")


def _p(value: Any) -> str:
    return "n/a" if h.is_missing(value) else f"{value:.3g}"


def _link(href: str, text: str) -> str:
    """A relative link to a variant's own report (the only markup built here; escaped)."""
    return f'<a href="{html.escape(href)}">{html.escape(text)}</a>'


def _variant_status(variant: VariantResults) -> str:
    if variant.record is None:
        return "not started"
    statuses = Counter(r.status for r in variant.record.runs.values())
    finished = statuses.pop("finished", 0)
    others = ", ".join(f"{n} {status}" for status, n in statuses.items())
    text = f"{finished} of {planned_runs(variant)} runs finished" + (
        f" ({others})" if others else ""
    )
    return text + ("" if not variant.trials.empty else "; no trial reported yet")


def _banner(cmp: CompareResults) -> tuple[str, str]:
    total = len(cmp.variants)
    unstarted = sum(v.record is None for v in cmp.variants)
    unfinished = sum(
        v.record is not None
        and (
            len(v.record.runs) < planned_runs(v)
            or any(r.status != "finished" for r in v.record.runs.values())
        )
        for v in cmp.variants
    )
    if unstarted or unfinished:
        return "warn", (
            f"Not finished: {total - unstarted - unfinished} of {total} variants complete, "
            f"{unfinished} partly run, {unstarted} not started; this page compares the "
            "results saved so far."
        )
    return "ok", f"Complete: every run of all {total} variants finished."


def _header(cmp: CompareResults) -> list[tuple[str, str]]:
    study, record = cmp.study, cmp.record
    budget = study.budget
    levels = "; ".join(f"{f}: {', '.join(cmp.levels(f))}" for f in cmp.factors)
    return [
        ("study", f"{study.name} — {study.description or 'no description'}"),
        ("study file", f"{record.study_file} (hash {record.study_hash[:12]})"),
        ("trainable", study.trainable),
        ("dataset", study.dataset.name),
        ("compared factors", levels),
        ("level settings", _level_settings(cmp) or "each level is the factor's value"),
        ("variants", f"{len(cmp.variants)}: every combination of the levels"),
        ("metric", f"{record.metric} ({record.mode}imize) on the validation split"),
        ("strategies", ", ".join(study.strategies)),
        ("seeds", ", ".join(map(str, study.seeds))),
        (
            "budget",
            f"{budget.total_epochs} epochs per strategy × seed run of each variant; "
            f"trials up to {budget.max_epochs} epochs",
        ),
    ]


def _level_settings(cmp: CompareResults) -> str:
    parts = []
    for factor in cmp.factors:
        for level in cmp.study.compare[factor]:
            added = [f"{k}={v}" for k, v in level.fixed.items()] + [
                f"searches {k}" for k in level.space
            ]
            added += [
                f"{link} {getattr(level, link)}"
                for link in ("warm_start", "lr_from")
                if getattr(level, link) is not None
            ]
            if added:
                parts.append(f"{factor}={level.name}: {', '.join(added)}")
    return "; ".join(parts)


def _render(
    cmp: CompareResults,
    tables: dict[str, tuple[pd.DataFrame, pd.DataFrame]],
    found: Sections,
    built: dict[str, str | None],
    pngs: dict[str, bytes],
) -> str:
    metric = cmp.record.metric
    study = h.Section("study", "Study").add(h.facts(_header(cmp)), _variants_table(cmp))
    sections = [study]
    for factor, (levels, tests) in tables.items():
        section = h.Section(f"factor-{slug(factor)}", f"Factor: {factor}")
        section.add(*_factor_parts(cmp, factor, levels, tests, pngs, metric))
        sections.append(section)
    sections += _special_parts(found, pngs, _file_names(cmp))
    links = h.Section("variant-reports", "Each variant's own report")
    links.add(
        h.paragraph(
            "Every variant is an ordinary study; its own report has the strategies' "
            "leaderboard, anytime curves, statistics and hyperparameter analysis."
        )
    )
    items = "".join(
        "<li>"
        + (
            _link(
                f"../{v.directory.relative_to(cmp.directory).as_posix()}/{REPORT_DIR}/index.html",
                v.variant.label,
            )
            if built[v.variant.label] is None
            else html.escape(f"{v.variant.label}: no report ({built[v.variant.label]})")
        )
        + "</li>"
        for v in cmp.variants
    )
    links.add(f'<ul id="variant-links">{items}</ul>')
    sections.append(links)
    return h.page(
        f"Compared study: {cmp.study.name}",
        f"{len(cmp.factors)} compared factor{'s' * (len(cmp.factors) != 1)}, "
        f"{len(cmp.variants)} variants; generated by hpo",
        _banner(cmp),
        sections,
        "Each variant's numbers come from its own study.json and trials.csv; tables are "
        "written beside this page as CSV.",
    )


def _variants_table(cmp: CompareResults) -> str:
    frame = pd.DataFrame(
        {
            "variant": [v.variant.label for v in cmp.variants],
            "folder": [v.directory.relative_to(cmp.directory).as_posix() for v in cmp.variants],
            "status": [_variant_status(v) for v in cmp.variants],
        }
    )
    return h.table(frame, table_id="variants-table")


def _factor_parts(
    cmp: CompareResults,
    factor: str,
    levels: pd.DataFrame,
    tests: pd.DataFrame,
    pngs: dict[str, bytes],
    metric: str,
) -> list[str]:
    config = [c for c in levels.columns if c.startswith("config/")]
    shown = levels.assign(
        runs=[
            f"{f} of {p}"
            for f, p in zip(levels["runs_finished"], levels["runs_planned"], strict=True)
        ],
        best_val=[
            _mean_std(m, s)
            for m, s in zip(levels["best_val_mean"], levels["best_val_std"], strict=True)
        ],
        test_accuracy=[
            _mean_std(m, s)
            for m, s in zip(levels["test_accuracy_mean"], levels["test_accuracy_std"], strict=True)
        ],
        test_loss=[
            _mean_std(m, s)
            for m, s in zip(levels["test_loss_mean"], levels["test_loss_std"], strict=True)
        ],
        selected=[
            "—"
            if h.is_missing(s)
            else f"{s} seed {int(k)}: "
            + ", ".join(
                f"{c.removeprefix('config/')}={h.plain(row[c])}"
                for c in config
                if not h.is_missing(row[c])
            )
            for s, k, row in zip(
                levels["selected_strategy"],
                levels["selected_seed"],
                levels.to_dict("records"),
                strict=True,
            )
        ],
    )
    columns = {f: f for f in cmp.factors}
    columns.update(
        {
            "runs": "runs finished",
            "runs_with_results": "runs with results",
            "best_val": f"best {metric} (mean ± std over runs)",
            "test_accuracy": "test_accuracy (mean ± std)",
            "test_loss": "test_loss (mean ± std)",
            "selected": "best run by validation: its selected hyperparameters",
        }
    )
    name = slug(factor)
    tests_shown = tests.assign(
        outcome=tests["outcome"].replace({"best_val": f"best {metric}"}),
        significant=["yes" if s else "no" for s in tests["significant"]],
    )
    return [
        h.paragraph(
            f"One row per variant, grouped by {factor}. Means and standard deviations are over "
            "the variant's strategy × seed runs, each contributing its selected trial (chosen on "
            f"validation {metric} only) and that trial's test measurement. The last column is "
            "the variant's best run by validation and the hyperparameters it selected: the "
            "tuned values of this level."
        ),
        h.table(shown, columns, table_id=f"levels-{name}"),
        h.paragraph(factor_verdict(cmp, factor, tests), "verdict"),
        h.heading("Paired tests"),
        h.paragraph(
            f"Blocks pair runs that differ only in {factor}: same strategy, seed and levels of "
            "the other factors. Two levels: Wilcoxon signed-rank test; three or more: Friedman "
            "test over the blocks complete for every level, then pairwise Wilcoxon tests with "
            f"Holm's correction (adjusted p). 'Not testable': too few blocks for any p < {ALPHA:g} "
            "(a Wilcoxon test needs 6 pairs)."
        ),
        h.table(
            tests_shown,
            {
                "outcome": "outcome",
                "test": "test",
                "level_a": "a",
                "level_b": "b",
                "blocks": "blocks",
                "mean_a": "mean a",
                "mean_b": "mean b",
                "difference": "mean difference a − b",
                "better": "better",
                "p_value": "p",
                "p_adjusted": "adjusted p",
                "significant": f"significant at {ALPHA:g}",
                "note": "note",
            },
            {
                "p_value": _p,
                "p_adjusted": _p,
                "difference": lambda v: "n/a" if h.is_missing(v) else f"{v:+.4f}",
            },
            table_id=f"tests-{name}",
        ),
        h.image(
            pngs[f"curves_{name}.png"],
            f"learning curves per level of {factor}",
            "Loss and accuracy on the training and the validation split (rows) per epoch of "
            "each run's selected trial (thin) and their mean over runs (thick), one column "
            f"per level of {factor}; each row shares its y-axis. Test accuracy is measured "
            "once, on the selected model (table above).",
            f"curves_{name}.png",
        ),
    ]


def _special_parts(
    found: Sections, pngs: dict[str, bytes], names: dict[str, str]
) -> list[h.Section]:
    sections = []
    if not found.range_curve.empty:
        section = h.Section("lr-range-test", "Learning-rate range test")
        section.add(
            h.paragraph(
                "Range-test trials raise the learning rate exponentially while they train. Each "
                "point is one epoch: its training loss at the geometric mean of the lr it "
                "started and ended at. The bounds are picked on the loss smoothed by a rolling "
                "median: lr_max where it is lowest, lr_min where it has fallen by a tenth of its "
                "whole fall below the starting plateau; points after the loss diverges are ignored."
            ),
            h.table(
                found.range_bounds,
                {
                    "variant": "variant",
                    "scope": "runs",
                    "lr_min": "lr_min",
                    "lr_max": "lr_max",
                    "note": "note",
                },
                {"lr_min": _p, "lr_max": _p},
                table_id="lr-bounds-table",
            ),
        )
        _add_images(
            section,
            pngs,
            [
                (
                    f"lr_range_{names[label]}.png",
                    f"range test of {label}",
                    f"{label}: training loss against the learning rate (log axis), "
                    "lr_min and lr_max marked.",
                )
                for label in found.range_curve["variant"].unique()
            ],
        )
        sections.append(section)
    if found.bn_views:
        section = h.Section("batch-norm", "Batch-norm parameters")
        section.add(
            h.paragraph(
                "The learned batch-norm scale (gamma) and shift (beta) of every "
                "channel, per layer, in the selected model of each variant's best "
                "run; one violin per variant and layer, on one y-axis."
            )
        )
        _add_images(
            section,
            pngs,
            [
                (
                    f"bn_{parameter}.png",
                    f"batch-norm {parameter} per layer",
                    f"Batch-norm {parameter} per layer and variant.",
                )
                for parameter in ("gamma", "beta")
            ],
        )
        sections.append(section)
    if found.lr_lines:
        section = h.Section("learning-rates", "Loss by learning rate")
        section.add(
            h.paragraph(
                "Training loss of every trial, coloured by its configured learning "
                "rate: against the mini-batch iteration where trials recorded it "
                "(SGD), else against the epoch (e.g. full-batch gradient descent)."
            )
        )
        _add_images(
            section,
            pngs,
            [
                (
                    f"lr_lines_{names[label]}.png",
                    f"loss by learning rate, {label}",
                    f"{label}: training loss against the {x}, one line per trial, "
                    "colour: its configured lr.",
                )
                for label, (x, _) in found.lr_lines.items()
            ],
        )
        sections.append(section)
    if not found.batch_sizes.empty:
        section = h.Section("batch-size", "Batch size")
        section.add(
            h.paragraph(
                "Final-epoch training loss and generalization gap (train − "
                "validation accuracy) of each trial against log2 of its batch size; "
                "dashed: the other variants' selected trials' mean gap."
            )
        )
        _add_images(
            section,
            pngs,
            [
                (
                    f"batch_size_{names[label]}.png",
                    f"batch-size sweep of {label}",
                    f"{label}: final training loss and gap against log2(batch size).",
                )
                for label in found.batch_sizes["variant"].unique()
            ],
        )
        sections.append(section)
    return sections + pt.sections(found.pathology, pngs)


def _add_images(section: Any, pngs: dict[str, bytes], images: list[tuple[str, str, str]]) -> None:
    """Add each (file name, alt text, caption) figure to the section."""
    for name, alt, caption in images:
        section.add(h.image(pngs[name], alt, caption, name))


__all__ = ["Sections", "build_compare_report", "special_sections"]
