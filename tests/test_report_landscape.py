"""The landscape section of a two-parameter grid study: detection, tables, gaps, shared
axes, and the section with its files in a real report. Hand-made trials, no Ray."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

import trainables
from hpo.files import write_csv
from hpo.records import BestTrial, RunRecord, StudyRecord, write_study_record
from hpo.report import build_report
from hpo.report import landscape as ls
from hpo.report.build import LANDSCAPE_SECTION, SECTION_IDS, compute
from hpo.results import load_results
from hpo.spec import parse_study
from trainables import EPOCH_METRICS, LOOP_DEFAULTS, TrainableInfo

PROBE = "landscape_probe"  # a neuron_landscape look-alike, registered only in these tests
EXTRA = ("output", "l2_loss", "l2_grad_w", "ce_loss", "ce_grad_w")
WEIGHTS = [-4.0, -2.0, 0.0, 2.0, 4.0]
BIASES = [-1.0, 0.0, 1.0]


@pytest.fixture
def probe(monkeypatch):
    """A trainable declaring the neuron's extra metrics, as neuron_landscape will."""
    info = TrainableInfo(
        PROBE,
        "trainables.models:build_logistic",
        {**LOOP_DEFAULTS, "weight": 0.0, "bias": 0.0},
        metrics=EPOCH_METRICS + EXTRA,
    )
    monkeypatch.setitem(trainables.TRAINABLES, PROBE, info)
    return info


def study(space: dict, strategies=("grid",), seeds=(0,), trainable="cnn", metric="val_loss"):
    return parse_study(
        {
            "name": "landscape",
            "trainable": trainable,
            "dataset": {"name": "digits"},
            "space": space,
            "metric": {"name": metric, "mode": "min"},
            "budget": {"max_epochs": 1, "min_epochs": 1, "total_epochs": 30},
            "strategies": list(strategies),
            "seeds": list(seeds),
        },
        "test",
    )


LR = {"loguniform": {"low": 1e-4, "high": 1e-1}, "grid": [1e-4, 1e-3, 1e-2, 1e-1]}
DROPOUT = {"uniform": {"low": 0.0, "high": 0.5}, "grid": [0.0, 0.25, 0.5]}
KERNEL = {"randint": {"low": 2, "high": 7}, "grid": [2, 4, 6]}
OPTIMIZER = {"choice": ["sgd", "momentum", "adam"]}


def neuron(weight: float, bias: float) -> dict[str, float]:
    """The driving study's numbers: one sigmoid neuron, input 1, target 0.5."""
    out = 1 / (1 + math.exp(-(weight + bias)))
    return {
        "output": out,
        "l2_loss": 0.5 * (out - 0.5) ** 2,
        "l2_grad_w": (out - 0.5) * out * (1 - out),
        "ce_loss": -(0.5 * math.log(out) + 0.5 * math.log(1 - out)),
        "ce_grad_w": out - 0.5,
    }


def trial_rows(points, seed=0, strategy="grid", epochs=1, shift=0.0) -> list[dict]:
    """trials.csv rows of one run: a trial per (weight, bias), `epochs` epochs each; the
    metrics at the last epoch are the neuron's (earlier epochs are off by 10)."""
    rows = []
    for index, (weight, bias) in enumerate(points):
        for epoch in range(1, epochs + 1):
            values = {k: v + shift + 10 * (epoch < epochs) for k, v in neuron(weight, bias).items()}
            rows.append(
                {
                    "strategy": strategy,
                    "seed": seed,
                    "trial_id": f"{strategy}{seed}_{index:03d}",
                    "status": "finished",
                    "epoch": epoch,
                    "train_loss": values["l2_loss"],
                    "train_accuracy": np.nan,
                    "val_loss": values["l2_loss"],
                    "val_accuracy": np.nan,
                    "lr": 0.1,
                    "epoch_time_s": 0.01,
                    "diverged": False,
                    "config/weight": weight,
                    "config/bias": bias,
                    **values,
                }
            )
    return rows


def neuron_study(seeds=(0,), strategies=("grid",)):
    space = {
        "weight": {"uniform": {"low": -4.0, "high": 4.0}, "grid": WEIGHTS},
        "bias": {"uniform": {"low": -1.0, "high": 1.0}, "grid": BIASES},
    }
    return study(space, strategies, seeds, trainable=PROBE, metric="l2_loss")


GRID = [(w, b) for w in WEIGHTS for b in BIASES]
GRID_ROWS = pd.DataFrame(trial_rows([(1e-3, 0.25)]))  # a grid trial, for detection only


# --------------------------------------------------------------- detection
@pytest.mark.parametrize(
    ("first", "second", "log"),
    [(LR, DROPOUT, (True, False)), (KERNEL, DROPOUT, (False, False))],
)
def test_two_numeric_grid_params_are_a_landscape(first, second, log):
    spec = study({"lr": first, "dropout": second})
    axes = ls.grid_axes(spec)
    assert axes is not None and ls.is_two_parameter_grid(GRID_ROWS, spec)
    assert [a.name for a in axes] == ["lr", "dropout"]
    assert (axes[0].log, axes[1].log) == log
    assert axes[1].values == (0.0, 0.25, 0.5)


def test_axes_without_explicit_grid_are_the_grid_strategys_values():
    spec = study(
        {"lr": {"loguniform": {"low": 1e-4, "high": 1e-1}}, "dropout": DROPOUT}
    )  # 30 full trials / 3 dropout values → 10 lr values, log-spaced cell centres
    x, y = ls.grid_axes(spec)
    assert len(x.values) == 10 and x.log
    assert x.values[0] == pytest.approx(10 ** (-4 + 0.15), rel=1e-5)
    assert np.allclose(np.diff(np.log10(x.values)), 0.3, rtol=1e-4)


@pytest.mark.parametrize(
    ("space", "strategies"),
    [
        ({"lr": LR}, ("grid",)),  # one parameter
        ({"lr": LR, "dropout": DROPOUT, "kernel_size": KERNEL}, ("grid",)),  # three
        ({"lr": LR, "dropout": DROPOUT}, ("random",)),  # the grid did not run
        ({"lr": LR, "optimizer": OPTIMIZER}, ("grid",)),  # a choice parameter
        ({"lr": LR, "dropout": {**DROPOUT, "grid": [0.0, 0.5]}}, ("grid",)),  # 2 values
    ],
    ids=["one-param", "three-params", "random-only", "choice-param", "two-values"],
)
def test_other_studies_have_no_landscape(space, strategies):
    spec = study(space, strategies)
    rows = pd.DataFrame(trial_rows([(1e-3, 0.0)], strategy=strategies[0]))
    assert not ls.is_two_parameter_grid(rows, spec)
    assert ls.landscape(rows, spec) is None


def test_a_parameter_held_at_one_grid_value_does_not_count():
    spec = study({"lr": LR, "dropout": DROPOUT, "kernel_size": {**KERNEL, "grid": [3]}})
    assert [a.name for a in ls.grid_axes(spec)] == ["lr", "dropout"]


def test_grid_study_whose_grid_has_not_reported_has_no_landscape():
    spec = study({"lr": LR, "dropout": DROPOUT}, ("grid", "random"))
    rows = pd.DataFrame(trial_rows([(1e-3, 0.0)], strategy="random"))
    assert ls.landscape(rows, spec) is None


# ------------------------------------------------------------------ tables
def test_metrics_are_the_study_metric_and_the_declared_extras_present(probe):
    trials = pd.DataFrame(trial_rows(GRID)).drop(columns=["ce_grad_w"])
    drawn, missing = ls.landscape_metrics(trials, neuron_study())
    assert drawn == ["l2_loss", "output", "l2_grad_w", "ce_loss"]
    assert missing == ["ce_grad_w"]
    cnn = study({"lr": LR, "dropout": DROPOUT})
    assert ls.landscape_metrics(trials, cnn) == (["val_loss"], [])


def test_table_holds_each_grid_trials_final_epoch(probe):
    rows = trial_rows(GRID, epochs=3) + trial_rows(GRID, strategy="random")
    rows += trial_rows([(0.5, 0.5)], strategy="grid")  # off the grid: left out
    land = ls.landscape(pd.DataFrame(rows), neuron_study(strategies=("grid", "random")))
    assert list(land.tables) == ["l2_loss", *[m for m in EXTRA if m != "l2_loss"]]
    table = land.tables["output"]
    assert list(table.columns) == ls.COLUMNS and len(table) == len(GRID)
    for row in table.itertuples():
        assert row.value == pytest.approx(neuron(row.x, row.y)["output"])  # epoch 3's
    assert set(table["seeds"]) == {1}
    assert land.seeds == [0] and not land.seeds_differ
    low = ls.extremes(land.tables["l2_loss"])
    assert low.low == pytest.approx(0.0) and (low.low_x, low.low_y) == (0.0, 0.0)
    assert (low.high_x, low.high_y) == (4.0, 1.0)  # sigmoid(5), farthest from 0.5


def test_seeds_give_the_first_or_their_mean(probe):
    same = ls.landscape(
        pd.DataFrame(trial_rows(GRID, seed=0) + trial_rows(GRID, seed=1)), neuron_study((0, 1))
    )
    assert not same.seeds_differ and set(same.tables["output"]["seeds"]) == {2}
    assert "seed 0 (its 2 seeds gave the same values)" in ls._seed_text(same)
    rows = trial_rows(GRID, seed=0) + trial_rows(GRID, seed=1, shift=0.2)
    mean = ls.landscape(pd.DataFrame(rows), neuron_study((0, 1)))
    assert mean.seeds_differ and "mean over 2 seeds" in ls._seed_text(mean)
    for row in mean.tables["output"].itertuples():
        assert row.value == pytest.approx(neuron(row.x, row.y)["output"] + 0.1)


def test_diverged_errored_nan_and_unrun_points_are_gaps(probe):
    frame = pd.DataFrame(trial_rows(GRID[1:], seed=0) + trial_rows(GRID[1:], seed=1))
    diverged, errored, infinite = GRID[3], GRID[5], GRID[7]
    at = {
        point: frame["config/weight"].eq(point[0]) & frame["config/bias"].eq(point[1])
        for point in (diverged, errored, infinite)
    }
    one_seed = at[diverged] & frame["seed"].eq(1)  # the other seed's finite value is not used
    frame.loc[one_seed, ["status", *EXTRA]] = ["diverged", *[np.nan] * len(EXTRA)]
    frame.loc[at[errored], "status"] = "errored"  # its last values are no measurement
    frame.loc[at[infinite], "output"] = np.inf
    land = ls.landscape(frame, neuron_study((0, 1)))
    table = land.tables["output"].set_index(["x", "y"])
    assert table["value"].isna().sum() == 4
    for point in (GRID[0], diverged, errored, infinite):
        assert math.isnan(table.loc[point, "value"])
    assert table.loc[GRID[0], "seeds"] == 0  # never run
    assert table["value"].dropna().size == len(GRID) - 4
    assert not land.seeds_differ  # a gap is no difference between seeds
    matrix = ls.surface(land.tables["output"], land.x, land.y)
    assert matrix.shape == (len(BIASES), len(WEIGHTS))
    assert math.isnan(matrix[BIASES.index(GRID[0][1]), WEIGHTS.index(GRID[0][0])])
    assert "4 of 15 grid points have no value" in ls.caption(land, "output")
    land.tables["output"]["value"] = np.nan
    assert ls.extremes(land.tables["output"]) is None
    assert "no grid point has a finite value" in ls.caption(land, "output")
    ls.landscape_figure(land.tables["output"], land.x, land.y, "output")  # draws all gaps


def test_config_values_are_snapped_to_the_grid(probe):
    frame = pd.DataFrame(trial_rows(GRID))
    frame["config/weight"] = frame["config/weight"] * (1 + 1e-9)  # CSV rounding
    frame.loc[0, "config/bias"] = np.nan  # a config without the value: on no grid point
    table = ls.landscape(frame, neuron_study()).tables["output"]
    assert sorted(set(table["x"])) == WEIGHTS
    assert table["value"].isna().sum() == 1 and table["seeds"].sum() == len(GRID) - 1


# --------------------------------------------------------------- drawing
def test_every_figure_spans_the_same_grid_and_its_own_values(probe):
    land = ls.landscape(pd.DataFrame(trial_rows(GRID)), neuron_study())
    drawn = ls.figures(land)
    assert sorted(drawn) == sorted(f"landscape_{m}.png" for m in land.tables)
    limits, ranges = set(), {}
    for name, figure in drawn.items():
        surface_ax, heat_ax = figure.axes[:2]
        limits.add(
            (surface_ax.get_xlim(), surface_ax.get_ylim(), heat_ax.get_xlim(), heat_ax.get_ylim())
        )
        ranges[name] = heat_ax.collections[0].get_clim()
        assert surface_ax.name == "3d" and len(figure.axes) == 3  # + the colour bar
    assert limits == {((-4.0, 4.0), (-1.0, 1.0), (-5.0, 5.0), (-1.5, 1.5))}
    output = land.tables["output"]["value"]
    assert ranges["landscape_output.png"] == pytest.approx((output.min(), output.max()))
    assert ranges["landscape_output.png"] != ranges["landscape_l2_loss.png"]


def test_log_parameter_gets_log_axes_and_geometric_cells():
    x = ls.Axis("lr", (1e-4, 1e-3, 1e-2), log=True)
    y = ls.Axis("dropout", (0.0, 0.25, 0.5), log=False)
    assert np.allclose(np.log10(x.edges), [-4.5, -3.5, -2.5, -1.5])
    assert np.allclose(y.edges, [-0.125, 0.125, 0.375, 0.625])
    table = pd.DataFrame(
        [(a, b, a * 100 + b, 1) for a in x.values for b in y.values], columns=ls.COLUMNS
    )
    figure = ls.landscape_figure(table, x, y, "val_loss")
    surface_ax, heat_ax = figure.axes[:2]
    assert heat_ax.get_xscale() == "log" and heat_ax.get_yscale() == "linear"
    assert surface_ax.get_xscale() == "log"


# ------------------------------------------------------------- the report
UNRECORDED = ("ce_loss", "ce_grad_w")  # fewer figures: a faster test
RECORDED = [m for m in EXTRA if m not in UNRECORDED]


def write_results(folder, probe_info, seeds=(0,), drop=()) -> pd.DataFrame:
    """study.json and trials.csv of a finished neuron grid study (one trial diverged),
    without the `drop` metrics' columns."""
    rows = []
    for seed in seeds:
        run = pd.DataFrame(trial_rows(GRID, seed=seed))
        run.loc[run["trial_id"].str.endswith("_004"), ["status", *EXTRA]] = [
            "diverged",
            *[np.nan] * len(EXTRA),
        ]
        run["diverged"] = run["status"].eq("diverged")
        run["cum_epochs"] = np.arange(1, len(run) + 1)
        run["wall_s"] = run["cum_epochs"] * 0.5
        rows.append(run)
    trials = pd.concat(rows, ignore_index=True).drop(columns=list(drop))
    write_csv(folder / "trials.csv", trials)
    runs = {}
    for seed in seeds:
        own = trials[trials["seed"] == seed]
        best = own.loc[own["l2_loss"].idxmin()]
        run = RunRecord(
            strategy="grid",
            seed=seed,
            status="finished",
            started=1.8e9,
            wall_s=10.0,
            errors=0,
            trials=len(own),
            epochs=len(own),
            statuses=own["status"].value_counts().to_dict(),
            best=BestTrial(
                trial_id=best["trial_id"],
                epoch=1,
                cum_epochs=int(best["cum_epochs"]),
                metric="l2_loss",
                value=float(best["l2_loss"]),
                config={"weight": float(best["config/weight"]), "bias": float(best["config/bias"])},
            ),
        )
        runs[run.key] = run
    record = StudyRecord(
        study=neuron_study(seeds),
        study_file="neuron.yaml",
        study_hash="0" * 64,
        started_at="2027-01-15T08:00:00+00:00",
        ended_at="2027-01-15T08:01:00+00:00",
        runs=runs,
    )
    write_study_record(folder, record)
    return trials


def test_report_of_a_neuron_grid_shows_the_landscape_and_writes_its_files(probe, tmp_path):
    write_results(tmp_path, probe, drop=UNRECORDED)
    page = build_report(tmp_path).read_text()
    ids = re.findall(r'<section id="([^"]+)">', page)
    expected = list(SECTION_IDS)
    expected.insert(SECTION_IDS.index("hyperparameters") + 1, LANDSCAPE_SECTION[0])
    assert ids == expected
    section = re.search(r'<section id="landscape">(.*?)</section>', page, re.S).group(1)
    assert section.count("<img ") == len(EXTRA) - len(UNRECORDED)
    assert "not in trials.csv: ce_loss, ce_grad_w." in section
    assert "l2_loss: minimum 0 at weight = 0, bias = 0; maximum 0.1" in section
    assert "1 of 15 grid points have no value" in section
    report = tmp_path / "report"
    for metric in RECORDED:
        assert (report / f"landscape_{metric}.png").stat().st_size > 10_000
        table = pd.read_csv(report / f"landscape_{metric}.csv")
        assert list(table.columns) == ["weight", "bias", metric, "seeds"]
        assert len(table) == len(GRID) and table[metric].isna().sum() == 1
    l2 = pd.read_csv(report / "landscape_l2_loss.csv")
    assert l2[l2["l2_loss"].isna()][["weight", "bias"]].values.tolist() == [list(GRID[4])]
    assert "landscape_output.csv" in page  # listed in the footer too


def test_results_without_grid_trials_have_no_landscape_tables(probe, tmp_path):
    trials = write_results(tmp_path, probe)
    write_csv(tmp_path / "trials.csv", trials.assign(strategy="random"))  # the grid never ran
    report = compute(load_results(tmp_path))
    assert report.landscape is None
    assert not [name for name in report.csv_tables() if name.startswith("landscape")]
