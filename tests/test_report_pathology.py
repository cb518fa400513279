"""The gradient-pathology sections of a compared study's page, on hand-made tables and
arrays with known numbers, and on a synthetic results folder written through
hpo.records (no Ray, no training)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from scipy.stats import binomtest

from hpo.compare import load_compare, variants
from hpo.files import write_csv, write_npz
from hpo.records import RunRecord, StudyRecord, run_dir, write_study_record
from hpo.report import compare as rc
from hpo.report import pathology as pt
from hpo.results import best_row, best_trial
from hpo.spec import parse_study

# first-layer norms of the two activations: relu's 280 × sigmoid's
FIRST = {"sigmoid": 1.2e-4, "relu": 3.36e-2}
LAST = 0.05
EPOCHS = 3
SEEDS = (0, 1)


def norm_trials() -> tuple[pd.DataFrame, pd.DataFrame]:
    """trials and runs of two variants × two seeds; each run has a selected trial with
    known norms (the same every epoch) and an unselected one with huge norms."""
    rows, runs = [], []
    for activation, seed in [(a, s) for a in FIRST for s in SEEDS]:
        variant = f"activation={activation}"
        for trial, scale in ((f"{activation}{seed}", 1.0), (f"other{seed}", 1e6)):
            for epoch in range(1, EPOCHS + 1):
                rows.append(
                    {
                        "variant": variant,
                        "activation": activation,
                        "strategy": "grid",
                        "seed": seed,
                        "trial_id": trial,
                        "epoch": epoch,
                        # seed 0 half, seed 1 one and a half: the mean over runs is FIRST
                        "grad_norm/fc1": scale * FIRST[activation] * (0.5 + seed),
                        "grad_norm/fc10": scale * LAST,
                        "grad_norm/fc2": scale * 0.01,
                    }
                )
        runs.append(
            {
                "variant": variant,
                "strategy": "grid",
                "seed": seed,
                "selected_trial": f"{activation}{seed}",
            }
        )
    return pd.DataFrame(rows), pd.DataFrame(runs)


def test_layer_order_is_model_order():
    assert pt.layer_order(["fc10", "fc2", "conv1", "fc1", "conv2"]) == [
        "conv1",
        "conv2",
        "fc1",
        "fc2",
        "fc10",
    ]


def test_grad_norms_of_the_selected_trials_and_the_first_layer_ratio():
    trials, runs = norm_trials()
    selected = pt.selected_rows(trials, runs)
    assert set(selected["trial_id"]) == {"sigmoid0", "sigmoid1", "relu0", "relu1"}
    curves = pt.grad_norm_curves(selected, ["activation"])
    assert list(curves["layer"].unique()) == ["fc1", "fc2", "fc10"]
    assert (curves["runs"] == 2).all() and len(curves) == 2 * 3 * EPOCHS
    table = pt.grad_norm_table(curves, ["activation"]).set_index("activation")
    for activation, first in FIRST.items():
        assert table.loc[activation, "first_layer"] == "fc1"
        assert table.loc[activation, "last_layer"] == "fc10"
        assert table.loc[activation, "first_norm"] == pytest.approx(first)
        assert table.loc[activation, "last_norm"] == pytest.approx(LAST)
        assert table.loc[activation, "first_over_last"] == pytest.approx(first / LAST)
    ratios = pt.first_layer_ratios(table.reset_index(), ["activation"]).set_index("level")
    assert ratios.loc["sigmoid", "ratio"] == pytest.approx(280)
    assert ratios.loc["sigmoid", "largest_level"] == "relu"
    first_epoch, over_training = pt.ratio_sentences(ratios.reset_index())
    assert ratios.loc["sigmoid", "ratio_start"] == pytest.approx(280)  # the same every epoch
    for sentence in (first_epoch, over_training):
        assert "sigmoid 1.2e-4, relu 0.0336" in sentence
        assert "relu's is 280× sigmoid's." in sentence
    assert "in the first epoch" in first_epoch and "over training" in over_training


def test_ratios_per_level_of_the_other_factor():
    table = pd.DataFrame(
        {
            "variant": ["a", "b", "c", "d"],
            "init": ["small", "small", "xavier", "xavier"],
            "activation": ["tanh", "sigmoid", "tanh", "sigmoid"],
            "first_norm": [1e-3, 1e-5, 2e-2, 1e-2],
            "first_norm_start": [1e-3, 1e-6, 2e-2, 1e-2],
        }
    )
    ratios = pt.first_layer_ratios(table, ["init", "activation"])
    by_activation = ratios[ratios["factor"] == "activation"].set_index(["context", "level"])
    assert by_activation.loc[("init=small", "sigmoid"), "ratio"] == pytest.approx(100)
    assert by_activation.loc[("init=small", "sigmoid"), "ratio_start"] == pytest.approx(1000)
    assert by_activation.loc[("init=xavier", "sigmoid"), "ratio"] == pytest.approx(2)
    by_init = ratios[ratios["factor"] == "init"].set_index(["context", "level"])
    assert by_init.loc[("activation=sigmoid", "small"), "ratio"] == pytest.approx(1000)
    assert len(pt.ratio_sentences(ratios)) == 8  # 4 contexts × first epoch, over training


def test_gradient_medians_and_groups_by_the_first_factor():
    views = {
        "init=normal_1, activation=tanh": {
            "grad_init/fc2": np.array([-4.0, 1.0, 2.0]),
            "grad_init/fc1": np.array([0.0, -3.0, 1.0, 5.0]),
            "grad_trained/fc1": np.array([1.0, 1.0, 3.0]),
        }
    }
    medians = pt.gradient_medians(views)
    assert list(medians["layer"]) == ["fc1", "fc2"]
    assert list(medians["median_init"]) == [2.0, 2.0]
    assert medians["median_trained"].iloc[0] == 1.0 and np.isnan(medians["median_trained"].iloc[1])
    assert np.allclose(pt.log_gradients([0.0, -10.0, 0.01]), [1.0, -2.0])  # zeros left out
    levels = {
        f"init={i}, activation={a}": {"init": i, "activation": a}
        for i in ("normal_0.01", "xavier")
        for a in ("tanh", "sigmoid")
    }
    groups = pt.distribution_groups(levels, ["init", "activation"])
    assert list(groups) == ["init=normal_0.01", "init=xavier"]
    assert groups["init=xavier"] == [
        ("activation=tanh", "init=xavier, activation=tanh"),
        ("activation=sigmoid", "init=xavier, activation=sigmoid"),
    ]
    one = pt.distribution_groups({"activation=relu": {"activation": "relu"}}, ["activation"])
    assert one == {"": [("activation=relu", "activation=relu")]}


def collapse_rows(activation: str, depth: int = 10, seeds=(0,)) -> pd.DataFrame:
    rows = []
    for seed in seeds:
        dead = 930 + seed * 10 if activation == "relu" else 120
        low, high = binomtest(dead, 1000).proportion_ci(0.95, method="wilson")
        rows.append(
            {
                "variant": f"activation={activation}",
                "activation": activation,
                "strategy": "grid",
                "seed": seed,
                "epoch": 5,
                "runs": 1000,
                "collapsed_runs": dead,
                "collapse_fraction": dead / 1000,
                "collapse_low": low,
                "collapse_high": high,
                "runs_wall_s": 30.0,
                "config/depth": depth,
                "config/width": 2,
                "config/activation": activation,
            }
        )
    return pd.DataFrame(rows)


def test_collapse_table_published_only_for_relu_at_depth_10_width_2():
    final = pd.concat([collapse_rows("relu"), collapse_rows("leaky_relu")], ignore_index=True)
    table = pt.collapse_table(final, {"collapse_std": 1e-3}, ["activation"]).set_index("activation")
    assert table.loc["relu", "published"] == pt.PUBLISHED
    assert table.loc["leaky_relu", "published"] == ""
    assert table.loc["relu", "collapse_fraction"] == 0.93
    sentences = pt.collapse_sentences(table.reset_index(), 1e-3)
    assert "over the validation inputs is below 0.001" in sentences[0]
    assert "930 of 1,000 runs collapsed" in sentences[1]
    assert "this interval lies above 0.9" in sentences[1]
    assert "Published" not in sentences[2] and "120 of 1,000" in sentences[2]
    shallow = pt.collapse_table(collapse_rows("relu", depth=5), {}, ["activation"])
    assert shallow["published"].iloc[0] == ""


def test_collapse_pools_runs_with_a_wilson_interval():
    pooled = pt.collapse_table(collapse_rows("relu", seeds=(0, 1)), {}).iloc[0]
    assert (pooled["collapsed_runs"], pooled["runs"]) == (1870, 2000)
    interval = binomtest(1870, 2000).proportion_ci(0.95, method="wilson")
    assert pooled["collapse_low"] == pytest.approx(interval.low)
    assert pooled["collapse_high"] == pytest.approx(interval.high)
    assert pooled["runs_wall_s"] == 60.0


def test_collapse_thresholds_count_below_each_criterion():
    stds = np.array([1e-7, 5e-5, 5e-4, 5e-3, 0.5])
    table = pt.collapse_thresholds({"v": {"runs/output_std": stds}, "w": {}}, {"v": 4})
    row = table.iloc[0]
    assert len(table) == 1 and row["epoch"] == 4 and row["runs"] == 5
    assert [row[pt.threshold_column(t)] for t in pt.THRESHOLDS] == [0.8, 0.6, 0.4, 0.2]


def test_iterations_to_fit_sorted_and_never_fit_said():
    final = pd.DataFrame(
        {
            "variant": ["slow"] * 2 + ["never"] * 2 + ["fast"] * 2 + ["partly"] * 2,
            "strategy": "grid",
            "seed": [0, 1] * 4,
            "iterations_to_fit": [900, 1100, 10000, 10000, 100, 300, 400, 10000],
            "fitted": ["True", "True", "False", "False", True, True, True, False],
        }
    )
    runs = pt.fit_runs(final)
    table = pt.fit_table(runs)
    assert list(table["variant"]) == ["fast", "slow", "partly", "never"]
    fast = table.iloc[0]
    assert (fast["mean"], fast["min"], fast["max"]) == (200, 100, 300)
    assert fast["std"] == pytest.approx(np.std([100, 300], ddof=1))
    assert list(table["fitted_runs"]) == [2, 2, 1, 0]
    assert list(table["never_fit"]) == [False, False, False, True]
    sentences = pt.fit_sentences(table)
    order = "fast 200; slow 1,000; partly 5,200; never 10,000"
    assert sentences[0] == f"Mean iterations to fit, fastest first: {order}."
    assert (
        "Never fit the training set within the cap, in any run: never (cap 10,000" in sentences[1]
    )
    assert sentences[2].startswith("partly fit in 1 of 2 runs")


def test_regression_table_means_over_runs():
    final = pd.DataFrame(
        {
            "variant": ["head", "head", "none"],
            "strategy": "grid",
            "seed": [0, 1, 0],
            "train_regression_accuracy": [0.5, 1.0, np.nan],
            "val_regression_accuracy": [0.25, 0.75, np.nan],
        }
    )
    table = pt.regression_table(final)
    assert list(table["variant"]) == ["head"]
    assert table["train_regression_accuracy"].iloc[0] == 0.75
    assert table["val_regression_accuracy"].iloc[0] == 0.5 and table["runs"].iloc[0] == 2


def test_drawing_functions_return_figures():
    trials, runs = norm_trials()
    curves = pt.grad_norm_curves(pt.selected_rows(trials, runs))
    rng = np.random.default_rng(0)
    views = {
        v: {f"grad_init/fc{i}": rng.normal(0, 10.0**-i, 50) for i in (1, 2)} for v in ("a", "b")
    }
    grid = np.linspace(-1, 1, 5)
    boundary = {
        "boundary/x": grid,
        "boundary/y": grid,
        "boundary/probability": (grid[None, :] + 1) / 2 * np.ones((5, 1)),
        "boundary/points": rng.normal(size=(10, 2)),
        "boundary/labels": np.arange(10) % 2,
    }
    final = pd.concat([collapse_rows("relu"), collapse_rows("leaky_relu")], ignore_index=True)
    fits = pd.DataFrame(
        {"variant": ["a", "b"], "seed": [0, 0], "iterations": [5.0, 9.0], "fitted": [True, False]}
    )
    drawn = [
        pt.grad_norm_figure(curves),
        pt.gradient_distribution_figure([("row a", "a"), ("row b", "b")], views, "t"),
        pt.boundary_figure({"x": boundary, "y": boundary}),
        pt.collapse_figure(pt.collapse_curves(final)),
        pt.fit_figure(pt.fit_table(fits), fits),
    ]
    assert all(isinstance(f, Figure) for f in drawn)
    assert len(drawn[0].axes) == 2 and drawn[0].axes[0].get_yscale() == "log"
    assert len(drawn[1].axes) == 2  # a row per variant of the group


# ------------------------------------------------------------ on the page
STUDY = {
    "name": "vg",
    "description": "sigmoid vs relu on two moons",
    "trainable": "mlp",
    "dataset": {"name": "moons"},
    "fixed": {"depth": 2, "width": 8, "grad_norm_every": 1, "stop_at_fit": True},
    "space": {},
    "compare": {"activation": ["sigmoid", "relu"]},
    "metric": {"name": "val_accuracy", "mode": "max"},
    "budget": {"max_epochs": EPOCHS, "min_epochs": EPOCHS, "total_epochs": EPOCHS},
    "strategies": ["grid"],
    "seeds": list(SEEDS),
}


def write_variant(directory: Path, variant, parent: StudyRecord, rng) -> None:
    activation = variant.levels["activation"]
    frames, records = [], {}
    for seed in SEEDS:
        frame = pd.DataFrame(
            {
                "strategy": "grid",
                "seed": seed,
                "trial_id": f"t{seed}",
                "status": "finished",
                "epoch": range(1, EPOCHS + 1),
                "train_loss": 0.5,
                "train_accuracy": 0.8,
                "val_loss": 0.5,
                "val_accuracy": [0.7, 0.8, 0.9],
                "lr": 0.5,
                "cum_epochs": range(1, EPOCHS + 1),
                "wall_s": 1.0,
                "grad_norm/fc1": FIRST[activation] * (0.5 + seed),
                "grad_norm/fc2": 0.02,
                "grad_norm/fc3": LAST,
                "iterations_to_fit": [20, 40, 50 + 10 * seed] if activation == "relu" else 60,
                "fitted": [False, False, True] if activation == "relu" else False,
                "config/activation": activation,
            }
        )
        frames.append(frame)
        best = best_trial(best_row(frame, "val_accuracy", "max"), "val_accuracy", {}, EPOCHS)
        record = RunRecord(strategy="grid", seed=seed, started=1.8e9, status="finished", best=best)
        records[record.key] = record
        grid = np.linspace(-1, 1, 6)
        write_npz(
            run_dir(directory, "grid", seed) / "views.npz",
            {
                **{f"grad_init/fc{i}": rng.normal(0, 10.0**-i, 40) for i in (1, 2, 3)},
                **{f"grad_trained/fc{i}": rng.normal(0, 0.1, 40) for i in (1, 2, 3)},
                "boundary/x": grid,
                "boundary/y": grid,
                "boundary/probability": np.tile((grid + 1) / 2, (6, 1)),
                "boundary/points": rng.normal(size=(12, 2)),
                "boundary/labels": np.arange(12) % 2,
            },
        )
    write_csv(directory / "trials.csv", pd.concat(frames, ignore_index=True))
    write_study_record(
        directory, parent.model_copy(update={"study": variant.study, "runs": records})
    )


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    study = parse_study(STUDY, "pathology test study")
    folder = tmp_path_factory.mktemp("pathology") / "vg"
    parent = StudyRecord(study=study, study_file="synthetic (tests)", study_hash="0" * 64)
    write_study_record(folder, parent)
    rng = np.random.default_rng(0)
    for variant in variants(study):
        write_variant(variant.directory(folder), variant, parent, rng)
    return folder


def section_text(page: str, section_id: str) -> str:
    match = re.search(rf'<section id="{section_id}">(.*?)</section>', page, re.S)
    assert match, f"no section {section_id}"
    return re.sub(r"<[^>]+>", " ", re.sub(r"<img[^>]*>", "", match.group(1)))


def test_the_page_shows_the_pathology_sections(study_dir, monkeypatch):
    monkeypatch.setattr(rc, "_build_variant", lambda variant: "skipped in this test")
    page = rc.build_compare_report(study_dir).read_text()
    norms = section_text(page, "gradient-norms")
    assert "relu&#x27;s is 280× sigmoid&#x27;s" in norms
    section_text(page, "gradient-distributions")
    section_text(page, "decision-boundaries")
    fit = section_text(page, "iterations-to-fit")
    assert "activation=relu 55; activation=sigmoid 60" in fit
    assert "activation=sigmoid (cap 60 iterations)" in fit
    assert 'id="collapse"' not in page and 'id="regression-head"' not in page
    report = study_dir / "report"
    for name in ("grad_norms.png", "grad_distribution.png", "decision_boundaries.png"):
        assert (report / name).is_file()
    layers = pd.read_csv(report / "grad_norm_layers.csv").set_index("activation")
    assert layers.loc["sigmoid", "last_layer"] == "fc3"
    assert layers.loc["relu", "first_norm"] == pytest.approx(FIRST["relu"])
    fit_runs = pd.read_csv(report / "iterations_to_fit_runs.csv")
    assert sorted(fit_runs["iterations"]) == [50, 60, 60, 60]
    assert load_compare(study_dir).views  # the views the sections drew were on disk
