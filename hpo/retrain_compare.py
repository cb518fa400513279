"""`hpo retrain --variant …`: one exported config retrained under two or more variants
(e.g. fine-tuned vs from scratch), same seeds and epochs, optionally at several numbers
of labelled training examples per class, compared in one table and one figure.

Every variant × size is an ordinary `hpo retrain` folder (`<out>/<size>/<variant>/`);
beside them:
- comparison.csv: one row per size × variant × seed (status, test accuracy, loss);
- comparison_summary.csv: per size and variant mean ± std over the finished seeds, and
  per size the paired difference of the first variant against each other one, with the
  paired t-test's and Wilcoxon's signed-rank p-values over the seeds both finished;
- comparison.png: test accuracy against labels per class, mean and 95% t-interval;
- comparison.json: what ran (export, variants, sizes, seeds, epochs) and the summary.
A results folder of a study above `out` gets its report rebuilt, which shows them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hpo.files import write_csv, write_json, write_with
from hpo.spec import StudyError

COMPARISON_FILE = "comparison.json"
ALL = "all"  # labels per class: the whole training split


@dataclass(frozen=True)
class Variant:
    """A name and the hyperparameters it replaces in the exported config."""

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)


def parse_variant(text: str) -> Variant:
    """`NAME:` or `NAME:key=value,key=value` (values read as YAML), as --variant takes it."""
    name, colon, rest = text.partition(":")
    if not colon or not name.strip() or "/" in name:
        raise StudyError(
            f"--variant {text}: expected NAME:KEY=VALUE,… (e.g. scratch:weights=none), "
            "or NAME: for the exported config as it is"
        )
    overrides: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, equals, value = part.partition("=")
        if not equals or not key.strip():
            raise StudyError(f"--variant {text}: {part!r} is not KEY=VALUE")
        overrides[key.strip()] = yaml.safe_load(value)
    return Variant(name.strip(), overrides)


def parse_sizes(text: str) -> list[int | None]:
    """`5,10,all` → [5, 10, None] (None: the whole training split)."""
    sizes: list[int | None] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if part == ALL:
            sizes.append(None)
        elif part.isdigit() and int(part) > 0:
            sizes.append(int(part))
        else:
            raise StudyError(
                f"--labels-per-class: {part!r} is not a positive number of labels or {ALL!r}"
            )
    return sizes


def size_label(size: int | None) -> str:
    return ALL if size is None else str(size)


def compare_retrains(
    export_file: str | Path,
    variants: Sequence[Variant],
    sizes: Sequence[int | None] | None = None,
    epochs: int | None = None,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    out: str | Path | None = None,
    address: str | None = None,
    echo: Callable[[str], None] = print,
    overrides: dict[str, Any] | None = None,
) -> Path:
    """Retrain the export under each variant (× each size of `sizes`, when given) and
    write the comparison; returns `out`. `overrides` apply to every variant (--set),
    under the variant's own. The first variant is the one compared against
    the others. Every retrain trains on the training split only and is measured at its
    last epoch: equal data and epochs for every variant, no selection by validation."""
    from hpo.retrain import retrain

    if len(variants) < 2 or len({v.name for v in variants}) < len(variants):
        raise StudyError("--variant: expected at least two variants with distinct names")
    out = Path(out) if out else Path(export_file).parent / f"compare-{Path(export_file).stem}"
    sweep = list(sizes) if sizes else [...]  # Ellipsis: the export's own dataset section
    rows: list[dict[str, Any]] = []
    for size in sweep:
        for variant in variants:
            where = f"{size_label(size)} labels per class, " if size is not ... else ""
            echo(f"== {variant.name} ({where}{_overrides_text(variant)})")
            folder = out / (size_label(size) if size is not ... else ".") / variant.name
            retrain(
                export_file,
                epochs=epochs,
                seeds=seeds,
                out=folder,
                train_only=True,
                last_epoch=True,
                address=address,
                echo=echo,
                overrides={**(overrides or {}), **variant.overrides},
                dataset=None if size is ... else {"labels_per_class": size},
            )
            rows += _seed_rows(folder, variant, size)
    return write_comparison(out, export_file, variants, sweep, seeds, rows, echo, overrides)


def _overrides_text(variant: Variant) -> str:
    if not variant.overrides:
        return "the exported config"
    return ", ".join(f"{k}={v}" for k, v in variant.overrides.items())


def _seed_rows(folder: Path, variant: Variant, size: Any) -> list[dict[str, Any]]:
    metrics = json.loads((folder / "metrics.json").read_text())
    labels = metrics["dataset"].get("labels_per_class") if size is ... else size
    return [
        {
            "labels_per_class": size_label(labels),
            "variant": variant.name,
            "seed": seed["seed"],
            "status": seed["status"],
            "test_accuracy": seed.get("test_accuracy"),
            "test_loss": seed.get("test_loss"),
            "epochs": seed["epochs"],
            "train_examples": seed.get("train_examples"),
        }
        for seed in metrics["seeds"]
    ]


def summarize(rows: Any, variants: Sequence[str]):
    """Per size and variant: seeds, mean ± std, 95% t-interval of test accuracy; per size
    and variant after the first: the paired difference (first − it) over the seeds both
    finished, paired t-test and Wilcoxon signed-rank p-values (two-sided)."""
    import pandas as pd
    from scipy import stats

    frame = pd.DataFrame(rows)
    frame = frame[frame["status"] == "finished"]
    summary = []
    for (size, name), group in frame.groupby(["labels_per_class", "variant"], sort=False):
        values = group["test_accuracy"].astype(float)
        half = _half_interval(values)
        summary.append(
            {
                "labels_per_class": size,
                "variant": name,
                "seeds": len(values),
                "mean": values.mean(),
                "std": values.std(ddof=1) if len(values) > 1 else 0.0,
                "ci_low": values.mean() - half,
                "ci_high": values.mean() + half,
            }
        )
    pairs = []
    first = variants[0]
    for size, group in frame.groupby("labels_per_class", sort=False):
        wide = group.pivot(index="seed", columns="variant", values="test_accuracy").astype(float)
        for other in variants[1:]:
            if first not in wide or other not in wide:
                continue
            both = wide[[first, other]].dropna()
            diff = both[first] - both[other]
            pairs.append(
                {
                    "labels_per_class": size,
                    "variant": f"{first} − {other}",
                    "seeds": len(diff),
                    "mean_difference": diff.mean() if len(diff) else math.nan,
                    "wins": int((diff > 0).sum()),
                    "t_test_p": _p(stats.ttest_rel, both[first], both[other]),
                    "wilcoxon_p": _p(stats.wilcoxon, both[first], both[other]),
                }
            )
    return pd.DataFrame(summary), pd.DataFrame(pairs)


def _half_interval(values) -> float:
    from scipy import stats

    if len(values) < 2:
        return math.nan
    return float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))


def _p(test: Callable[..., Any], a, b) -> float:
    """A test's two-sided p-value; NaN where it is undefined (fewer than 2 pairs, or
    every difference 0)."""
    if len(a) < 2 or (a - b).abs().max() == 0:
        return math.nan
    return float(test(a, b).pvalue)


def write_comparison(
    out: Path,
    export_file: str | Path,
    variants: Sequence[Variant],
    sizes: Sequence[Any],
    seeds: Sequence[int],
    rows: list[dict[str, Any]],
    echo: Callable[[str], None] = print,
    common: dict[str, Any] | None = None,
) -> Path:
    """The comparison files beside the retrain folders; `common`: the overrides every
    variant had."""
    import pandas as pd

    summary, pairs = summarize(rows, [v.name for v in variants])
    document = {
        "kind": "hpo-retrain-comparison",
        "export": str(export_file),
        "variants": [{"name": v.name, "overrides": v.overrides} for v in variants],
        "common_overrides": common or {},
        "labels_per_class": [size_label(s) for s in sizes if s is not ...],
        "seeds": list(seeds),
        "summary": summary.to_dict("records"),
        "paired": pairs.to_dict("records"),
    }
    # Each file written whole; comparison.json last: its presence means the set is complete.
    write_csv(out / "comparison.csv", pd.DataFrame(rows))
    write_csv(out / "comparison_summary.csv", pd.concat([summary, pairs]))
    plot_comparison(summary, out / "comparison.png")
    write_json(out / COMPARISON_FILE, document)
    echo(comparison_text(summary, pairs))
    _rebuild_report(out, echo)
    echo(f"comparison: {out / 'comparison_summary.csv'}, {out / 'comparison.png'}")
    return out


def comparison_text(summary, pairs) -> str:
    """The terminal table: per size, each variant's mean ± std, then the paired tests."""
    lines = []
    for size, group in summary.groupby("labels_per_class", sort=False):
        cells = [f"{r.variant} {r.mean:.4f} ± {r.std:.4f}" for r in group.itertuples()]
        lines.append(f"{size:>5} labels/class: " + ", ".join(cells))
        for pair in pairs[pairs["labels_per_class"] == size].itertuples():
            lines.append(
                f"{'':>19}{pair.variant}: {pair.mean_difference:+.4f} over {pair.seeds} seeds "
                f"({pair.wins} wins), paired t p = {pair.t_test_p:.3g}, "
                f"Wilcoxon p = {pair.wilcoxon_p:.3g}"
            )
    return "\n".join(lines)


def plot_comparison(summary, path: Path) -> None:
    """Test accuracy against labels per class ("all" last), one line per variant with
    its 95% t-interval; one point per variant when there is a single size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(dict.fromkeys(summary["labels_per_class"]))
    position = {size: i for i, size in enumerate(sizes)}
    figure, ax = plt.subplots(figsize=(6.5, 4))
    for name, group in summary.groupby("variant", sort=False):
        x = [position[s] for s in group["labels_per_class"]]
        low = (group["mean"] - group["ci_low"]).fillna(0)
        high = (group["ci_high"] - group["mean"]).fillna(0)
        ax.errorbar(x, group["mean"], yerr=[low, high], marker="o", capsize=4, label=name)
    ax.set_xticks(range(len(sizes)), sizes)
    ax.set(
        xlabel="labelled training examples per class",
        ylabel="test accuracy",
        title="Test accuracy (mean, 95% t-interval over seeds)",
    )
    ax.grid(alpha=0.3)
    ax.legend()
    figure.tight_layout()
    write_with(path, lambda handle: figure.savefig(handle, format="png", dpi=100), ".png")
    plt.close(figure)


def _rebuild_report(out: Path, echo: Callable[[str], None]) -> None:
    """The report of the study whose results folder holds `out`, rebuilt to show it."""
    from hpo.records import STUDY_FILE

    for folder in out.resolve().parents[:3]:
        if (folder / STUDY_FILE).is_file():
            from hpo.report import build_report

            echo(f"report: {build_report(folder)}")
            return


def find_comparisons(study_dir: str | Path) -> list[tuple[Path, dict[str, Any]]]:
    """The retrain comparisons inside a study's results folder (up to two levels down,
    e.g. results/<study>/transfer/comparison.json), with their documents."""
    found = []
    root = Path(study_dir)
    for path in sorted([*root.glob(f"*/{COMPARISON_FILE}"), *root.glob(f"*/*/{COMPARISON_FILE}")]):
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if document.get("kind") == "hpo-retrain-comparison":
            found.append((path.parent, document))
    return found
