"""The report of a study that compares factors, on a synthetic results folder written
through hpo.records (no Ray, no training): optimizer [sgd, adam] × batch_norm [false,
true], 2 strategies × 3 seeds, adam and batch norm better by known amounts."""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hpo.compare import CompareResults, load_compare, variants
from hpo.files import write_csv, write_npz, write_text
from hpo.records import RunRecord, StudyRecord, run_dir, write_study_record
from hpo.report import build_report
from hpo.report import compare as rc
from hpo.report import compare_figures as cf
from hpo.report import compare_tables as ct
from hpo.results import best_row, best_trial
from hpo.spec import parse_study

STRATEGIES = ("grid", "random")
SEEDS = (0, 1, 2)
EPOCHS = 4
TRIALS = 3  # ordinary trials per run
STUDY = {
    "name": "cmp",
    "description": "optimizer × batch norm on digits",
    "trainable": "cnn",
    "dataset": {"name": "digits"},
    "fixed": {"channels": 8, "hidden_units": 16},
    "space": {"lr": {"loguniform": {"low": 1.0e-3, "high": 3.0e-2}}},
    "compare": {"optimizer": ["sgd", "adam"], "batch_norm": [False, True]},
    "metric": {"name": "val_accuracy", "mode": "max"},
    "budget": {"max_epochs": EPOCHS, "min_epochs": 1, "reduction_factor": 2, "total_epochs": 12},
    "strategies": list(STRATEGIES),
    "seeds": list(SEEDS),
    "max_concurrent_trials": 2,
}
RANGE_VARIANT = "optimizer=sgd, batch_norm=False"  # its grid runs also run range tests
ITERATION_VARIANT = "optimizer=adam, batch_norm=True"  # its trials record mini-batches
BATCH_VARIANT = "optimizer=adam, batch_norm=False"  # its trials try 4 batch sizes
LAYERS = ("input", "conv1", "conv2")


def range_loss(lr: float) -> float:
    """Flat at 2.3 below 1e-4, falling log-linearly to 0.1 at 1e-2, then rising."""
    decades = math.log10(lr)
    if lr < 1e-4:
        return 2.3
    if lr <= 1e-2:
        return 2.3 - 2.2 * (decades + 4) / 2
    return 0.1 + 2.0 * (decades + 2)


def trial_rows(variant, strategy, seed, rng) -> tuple[list[dict], dict]:
    """trials.csv rows of one run and the config per trial."""
    levels = variant.levels
    base = 0.8 + 0.05 * (levels["optimizer"] == "adam") + 0.01 * (levels["batch_norm"] == "True")
    rows, configs = [], {}
    for index in range(TRIALS):
        trial_id = f"{strategy[:2]}{seed}_{index}"
        batch = [0, 16, 32, 64][index + seed % 2] if variant.label == BATCH_VARIANT else 64
        config = {
            **variant.study.fixed,
            "lr": [1e-3, 3e-3, 1e-2][index],
            "batch_size": batch,
            "lr_policy": "constant",
        }
        configs[trial_id] = config
        ceiling = base - 0.02 * index + rng.normal(0, 0.005)
        for epoch in range(1, EPOCHS + 1):
            val = ceiling - 0.3 * 0.5**epoch
            rows.append(row(strategy, seed, trial_id, epoch, config, val, 1.0 - val))
    if variant.label == RANGE_VARIANT and strategy == "grid":
        for index, start in enumerate((1e-6, 1e-5, 1e-4, 1e-3, 1e-2)):
            trial_id = f"rt{seed}_{index}"
            config = {
                **variant.study.fixed,
                "lr": start,
                "batch_size": 64,
                "lr_policy": "range_test",
            }
            configs[trial_id] = config
            for epoch in range(1, EPOCHS + 1):
                end = start * 10 ** (epoch / EPOCHS)
                middle = math.sqrt(end * start * 10 ** ((epoch - 1) / EPOCHS))
                loss = range_loss(middle) + rng.normal(0, 0.02)
                rows.append(row(strategy, seed, trial_id, epoch, config, 0.2, loss, lr=end))
    return rows, configs


def row(strategy, seed, trial_id, epoch, config, val, loss, lr=None) -> dict:
    return {
        "strategy": strategy,
        "seed": seed,
        "trial_id": trial_id,
        "status": "finished",
        "epoch": epoch,
        "train_loss": loss,
        "train_accuracy": min(1.0, val + 0.04 + 0.01 * math.log2(config["batch_size"] or 1024)),
        "val_loss": loss + 0.05,
        "val_accuracy": val,
        "lr": config["lr"] if lr is None else lr,
        "epoch_time_s": 0.1,
        "diverged": False,
        **{f"config/{k}": v for k, v in config.items()},
    }


def write_variant(directory: Path, variant, parent: StudyRecord, rng) -> None:
    frames, runs = [], {}
    for strategy, seed in itertools.product(STRATEGIES, SEEDS):
        rows, configs = trial_rows(variant, strategy, seed, rng)
        frame = pd.DataFrame(rows)
        frame["cum_epochs"] = np.arange(1, len(frame) + 1)
        frame["wall_s"] = 0.5 * frame["cum_epochs"]
        frames.append(frame)
        best = best_row(frame, "val_accuracy", "max")
        test = float(best["val_accuracy"]) + rng.normal(0, 0.01)
        record = RunRecord(
            strategy=strategy,
            seed=seed,
            started=1.8e9,
            status="finished",
            wall_s=10.0,
            trials=int(frame["trial_id"].nunique()),
            epochs=len(frame),
            errors=0,
            data_sizes={"train": 1078, "val": 359, "test": 360},
            best=best_trial(best, "val_accuracy", {"test_accuracy": test, "test_loss": 1.0 - test}),
        )
        runs[record.key] = record
        folder = run_dir(directory, strategy, seed)
        if variant.levels["batch_norm"] == "True":
            write_npz(folder / "views.npz", bn_views(variant, strategy, seed))
        if variant.label == ITERATION_VARIANT:
            write_iterations(folder, configs)
    write_csv(directory / "trials.csv", pd.concat(frames, ignore_index=True))
    record = parent.model_copy(update={"study": variant.study, "runs": runs})
    write_study_record(directory, record)


def bn_views(variant, strategy, seed) -> dict[str, np.ndarray]:
    """Known batch-norm parameters: gamma of layer i is 1 + i/10, beta −i/10, plus a
    little spread; adam's a little larger."""
    shift = 0.05 if variant.levels["optimizer"] == "adam" else 0.0
    views = {}
    for i, layer in enumerate(LAYERS):
        spread = np.linspace(-0.01, 0.01, 8)
        views[f"bn_gamma/{layer}"] = 1 + i / 10 + shift + spread
        views[f"bn_beta/{layer}"] = -i / 10 + spread
    views["image"] = np.zeros((1, 8, 8))  # not a bn_ key: left out of the violins
    return views


def write_iterations(folder: Path, configs: dict) -> None:
    """result.json lines with mini-batch losses, as trials with record_iterations write."""
    for trial_id, config in configs.items():
        lines = [
            {
                "trial_id": trial_id,
                "epoch": epoch,
                "iteration_index": [2 * epoch - 1, 2 * epoch],
                "iteration_loss": [2.0 / (2 * epoch - 1), 2.0 / (2 * epoch)],
                "iteration_lr": [config["lr"], config["lr"]],
            }
            for epoch in range(1, EPOCHS + 1)
        ]
        write_text(folder / trial_id / "result.json", "".join(json.dumps(x) + "\n" for x in lines))


def compared_study(directory: Path, skip: tuple[str, ...] = ()) -> Path:
    """The compared study's folder: its study.json, and every variant not in `skip`."""
    study = parse_study(STUDY, "compared test study")
    study_dir = directory / "cmp"
    parent = StudyRecord(
        study=study,
        study_file="synthetic (tests)",
        study_hash="0" * 64,
        started_at="2027-01-01T00:00:00+00:00",
        ended_at="2027-01-01T01:00:00+00:00",
    )
    write_study_record(study_dir, parent)
    rng = np.random.default_rng(0)
    for variant in variants(study):
        if variant.label not in skip:
            write_variant(variant.directory(study_dir), variant, parent, rng)
    return study_dir


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    return compared_study(tmp_path_factory.mktemp("compare"))


@pytest.fixture(scope="module")
def cmp(study_dir):
    return load_compare(study_dir)


@pytest.fixture(scope="module")
def page(study_dir) -> str:
    return build_report(study_dir).read_text()


def runs_of(cmp) -> pd.DataFrame:
    """The runs as the records say, independently of the report's tables."""
    rows = []
    for v in cmp.variants:
        for run in v.record.runs.values():
            rows.append(
                {
                    **v.variant.levels,
                    "variant": v.variant.label,
                    "strategy": run.strategy,
                    "seed": run.seed,
                    "val": run.best.value,
                    "test": run.best.test["test_accuracy"],
                    "lr": run.best.config["lr"],
                }
            )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ tables
def test_level_table_numbers(cmp):
    table = ct.level_table(cmp, "optimizer")
    assert list(table["optimizer"]) == ["sgd", "sgd", "adam", "adam"]  # level order
    assert list(table["batch_norm"]) == ["False", "True", "False", "True"]
    truth = runs_of(cmp)
    for row in table.to_dict("records"):
        mine = truth[truth["variant"] == row["variant"]]
        assert row["runs_finished"] == row["runs_planned"] == len(STRATEGIES) * len(SEEDS)
        assert row["best_val_mean"] == pytest.approx(mine["val"].mean())
        assert row["best_val_std"] == pytest.approx(mine["val"].std())
        assert row["test_accuracy_mean"] == pytest.approx(mine["test"].mean())
        assert row["test_accuracy_std"] == pytest.approx(mine["test"].std())
        assert row["test_loss_mean"] == pytest.approx(1 - mine["test"].mean())
        best = mine.sort_values("val", ascending=False).iloc[0]
        assert (row["selected_strategy"], row["selected_seed"]) == (best["strategy"], best["seed"])
        assert row["config/lr"] == best["lr"]  # the tuned lr of this variant
    assert [c for c in table.columns if c.startswith("config/")] == ["config/lr"]  # searched


def test_factor_tests_match_scipy(cmp):
    tests = ct.factor_tests(cmp, "optimizer")
    truth = runs_of(cmp)
    assert list(tests["outcome"]) == ["test_accuracy", "best_val"]
    for outcome, column in (("test_accuracy", "test"), ("best_val", "val")):
        wide = truth.pivot_table(
            index=["strategy", "seed", "batch_norm"], columns="optimizer", values=column
        )
        expected = stats.wilcoxon(wide["sgd"], wide["adam"], alternative="two-sided")
        row = tests[tests["outcome"] == outcome].iloc[0]
        assert (row["test"], row["level_a"], row["level_b"]) == ("wilcoxon", "sgd", "adam")
        assert row["blocks"] == len(STRATEGIES) * len(SEEDS) * 2
        assert row["p_value"] == pytest.approx(expected.pvalue)
        assert row["p_adjusted"] == pytest.approx(expected.pvalue)  # one pair: no correction
        assert row["difference"] == pytest.approx((wide["sgd"] - wide["adam"]).mean())
        assert row["better"] == "adam" and row["significant"] and row["note"] == ""


def test_verdict_names_the_winner_its_lead_and_p(cmp):
    tests = ct.factor_tests(cmp, "optimizer")
    verdict = ct.factor_verdict(cmp, "optimizer", tests)
    truth = runs_of(cmp).groupby("optimizer")["test"].mean()
    p = tests.iloc[0]["p_value"]
    assert verdict.startswith(
        f"optimizer: adam has the best mean test accuracy, {truth['adam']:.4f}"
    )
    assert f"{truth['adam'] - truth['sgd']:.4f} above the runner-up sgd" in verdict
    assert f"over 12 blocks: p = {p:.3g}, significant at 0.05" in verdict
    assert verdict.endswith("significant at 0.05.") and ". " not in verdict  # one sentence


def three_levels(blocks: int, seed: int = 1) -> CompareResults:
    """A CompareResults with one factor of three levels (momentum best) and `blocks`
    strategy × seed blocks, built from tables only."""
    spec = {**STUDY, "compare": {"optimizer": ["sgd", "momentum", "adam"]}}
    record = StudyRecord(study=parse_study(spec, "three levels"), study_file="t", study_hash="0")
    rng = np.random.default_rng(seed)
    rows = [
        {
            "optimizer": level,
            "variant": f"optimizer={level}",
            "strategy": "grid",
            "seed": k,
            "run_status": "finished",
            "best_val": value,
            "test_accuracy": value,
        }
        for k in range(blocks)
        for level, value in zip(
            ("sgd", "momentum", "adam"),
            0.8 + rng.normal(0, 0.01, 3) + np.array([0.0, 0.03, 0.02]),
            strict=True,
        )
    ]
    return CompareResults(Path("."), record, [], pd.DataFrame(rows), pd.DataFrame(), pd.DataFrame())


def test_three_levels_friedman_and_holm():
    cmp = three_levels(8)
    tests = ct.factor_tests(cmp, "optimizer")
    mine = tests[tests["outcome"] == "test_accuracy"]
    wide = cmp.runs.pivot_table(index="seed", columns="optimizer", values="test_accuracy")
    friedman = mine.iloc[0]
    assert friedman["test"] == "friedman" and friedman["blocks"] == 8
    expected = stats.friedmanchisquare(wide["sgd"], wide["momentum"], wide["adam"])
    assert friedman["p_value"] == pytest.approx(expected.pvalue)
    pairs = mine.iloc[1:]
    assert [(r.level_a, r.level_b) for r in pairs.itertuples()] == [
        ("sgd", "momentum"),
        ("sgd", "adam"),
        ("momentum", "adam"),
    ]
    raw = [
        stats.wilcoxon(wide[a], wide[b]).pvalue
        for a, b in zip(pairs["level_a"], pairs["level_b"], strict=True)
    ]
    assert list(pairs["p_value"]) == pytest.approx(raw)
    order = np.argsort(raw)  # Holm: the smallest × 3, the next × 2 (never below it), the last × 1
    holm = np.empty(3)
    holm[order[0]] = min(1, 3 * raw[order[0]])
    holm[order[1]] = max(holm[order[0]], min(1, 2 * raw[order[1]]))
    holm[order[2]] = max(holm[order[1]], raw[order[2]])
    assert list(pairs["p_adjusted"]) == pytest.approx(holm)
    assert list(pairs["significant"]) == [p < 0.05 for p in holm]
    assert "momentum has the best mean test accuracy" in ct.factor_verdict(cmp, "optimizer", tests)


def test_too_few_blocks_are_not_testable_and_said_plainly():
    cmp = three_levels(3)
    tests = ct.factor_tests(cmp, "optimizer")
    pairs = tests[(tests["test"] == "wilcoxon") & (tests["outcome"] == "test_accuracy")]
    assert set(pairs["note"]) == {"not testable: 3 pairs"} and not pairs["significant"].any()
    verdict = ct.factor_verdict(cmp, "optimizer", tests)
    assert "not testable: 3 pairs, too few for p < 0.05" in verdict
    two = ct.factor_tests(three_levels(2), "optimizer")
    assert two.iloc[0]["note"] == "not testable: 2 complete blocks"


def test_holm_keeps_nan_and_order():
    adjusted = ct.holm([0.01, np.nan, 0.04, 0.03])
    assert np.isnan(adjusted[1])
    assert list(adjusted[[0, 3, 2]]) == pytest.approx([0.03, 0.06, 0.06])


# ----------------------------------------------------------------- figures
def test_curves_figure_shares_y_per_row(cmp):
    figure = cf.factor_curves_figure(cmp.curves, "optimizer", cmp.levels("optimizer"))
    axes = np.array(figure.axes).reshape(len(ct.CURVE_METRICS), 2)
    for row in axes:
        assert row[0].get_shared_y_axes().joined(row[0], row[1])
        assert row[0].get_ylim() == row[1].get_ylim()
    assert not axes[0, 0].get_shared_y_axes().joined(axes[0, 0], axes[1, 0])
    runs = len(STRATEGIES) * len(SEEDS) * 2  # of each optimizer: both batch_norm levels
    assert len(axes[0, 0].lines) == runs + 1  # one per run, and the mean
    means = ct.curve_means(cmp.curves, "optimizer")
    adam = cmp.curves[(cmp.curves["optimizer"] == "adam") & (cmp.curves["epoch"] == 2)]
    mean = means[(means["optimizer"] == "adam") & (means["epoch"] == 2)].iloc[0]
    assert mean["val_accuracy"] == pytest.approx(adam["val_accuracy"].mean())
    assert mean["runs"] == runs
    thick = axes[ct.CURVE_METRICS.index("val_accuracy"), 1].lines[-1]
    assert list(thick.get_ydata()) == pytest.approx(
        list(means[means["optimizer"] == "adam"]["val_accuracy"])
    )


def test_violin_data_come_from_the_views(cmp):
    found = rc.special_sections(cmp)
    assert set(found.bn_views) == {"optimizer=sgd, batch_norm=True", ITERATION_VARIANT}
    gamma = ct.bn_values(found.bn_views, "gamma")
    assert list(dict.fromkeys(gamma["layer"])) == list(LAYERS)  # order as stored
    conv2 = gamma[(gamma["variant"] == ITERATION_VARIANT) & (gamma["layer"] == "conv2")]
    assert len(conv2) == 8 and conv2["value"].mean() == pytest.approx(1.25)
    beta = ct.bn_values(found.bn_views, "beta")
    assert beta.groupby("layer", sort=False)["value"].mean().to_list() == pytest.approx(
        [0.0, -0.1, -0.2]
    )
    figure = cf.bn_violin_figure(found.bn_views, "gamma")
    assert len(figure.axes) == 1  # one y-axis for every layer and variant


def test_range_test_section_finds_the_bounds(cmp):
    found = rc.special_sections(cmp)
    assert set(found.range_curve["variant"]) == {RANGE_VARIANT}
    assert len(found.range_curve) == len(SEEDS) * 5 * EPOCHS
    pooled = found.range_bounds[found.range_bounds["scope"] == "all runs"].iloc[0]
    assert 1e-4 <= pooled["lr_min"] <= 2.5e-4  # the 10 % point of this curve is 1.6e-4
    assert 1e-2 / 2 <= pooled["lr_max"] <= 1e-2 * 2
    per_run = found.range_bounds[found.range_bounds["scope"] != "all runs"]
    assert list(per_run["scope"]) == [f"grid seed {k}" for k in SEEDS]
    assert per_run["lr_max"].between(1e-2 / 2, 1e-2 * 2).all()


def test_learning_rate_and_batch_size_sections(cmp):
    found = rc.special_sections(cmp)
    x, lines = found.lr_lines[ITERATION_VARIANT]
    assert x == "iteration" and len(lines) == len(STRATEGIES) * len(SEEDS) * TRIALS * 2 * EPOCHS
    assert set(lines["config_lr"]) == {1e-3, 3e-3, 1e-2}
    assert found.lr_lines["optimizer=sgd, batch_norm=True"][0] == "epoch"  # a grid over 3 lrs
    sizes = found.batch_sizes
    assert set(sizes["variant"]) == {BATCH_VARIANT}
    assert set(sizes["batch_size"]) == {16, 32, 64, 1078}  # 0: a full batch, the train split
    assert (sizes["epoch"] == EPOCHS).all()
    assert sizes["gap"].to_numpy() == pytest.approx(
        (sizes["train_accuracy"] - sizes["val_accuracy"]).to_numpy()
    )
    assert BATCH_VARIANT not in set(found.reference_gaps["variant"])
    assert len(found.reference_gaps) == 3


# -------------------------------------------------------------------- page
def section(page: str, section_id: str) -> str:
    match = re.search(rf'<section id="{section_id}">(.*?)</section>', page, re.S)
    assert match, f"no section {section_id}"
    return match.group(1)


def test_build_report_writes_the_comparison_page(study_dir, cmp, page):
    report = study_dir / "report"
    for factor in ("optimizer", "batch_norm"):
        part = section(page, f"factor-{factor}")
        assert f'id="levels-{factor}"' in part and f'id="tests-{factor}"' in part
        assert html_text(ct.factor_verdict(cmp, factor)) in part
        levels = pd.read_csv(report / f"levels_{factor}.csv")
        assert len(levels) == 4 and "best_val_accuracy_mean" in levels
        assert len(pd.read_csv(report / f"factor_tests_{factor}.csv")) == 2
        assert (report / f"curves_{factor}.png").is_file()
    for special in ("lr-range-test", "batch-norm", "learning-rates", "batch-size"):
        section(page, special)
    assert len(pd.read_csv(report / "lr_range.csv")) == len(SEEDS) * 5 * EPOCHS
    links = section(page, "variant-reports")
    for variant in cmp.variants:
        href = f"../variants/{variant.variant.slug}/report/index.html"
        assert f'href="{href}"' in links
        assert (report / href).resolve().is_file()  # each variant's own report was built
    assert "Complete: every run of all 4 variants finished." in page


def html_text(text: str) -> str:
    import html

    return html.escape(text)


def test_a_variant_without_trials_is_said_so(tmp_path):
    study_dir = compared_study(tmp_path, skip=(RANGE_VARIANT, BATCH_VARIANT))
    started = variants(parse_study(STUDY, "x"))[0]
    assert started.label == RANGE_VARIANT
    empty = StudyRecord(study=started.study, study_file="t", study_hash="0")
    write_study_record(started.directory(study_dir), empty)  # started, no trial reported yet
    page = build_report(study_dir).read_text()
    links = section(page, "variant-reports")
    assert f"{RANGE_VARIANT}: no report (" in links and "no trial has reported yet" in links
    assert f"{BATCH_VARIANT}: no report (not started)" in links
    assert "Not finished: 2 of 4 variants complete, 1 partly run, 1 not started" in page
    report = study_dir / "report"
    optimizer = pd.read_csv(report / "factor_tests_optimizer.csv").iloc[0]
    assert optimizer["blocks"] == len(STRATEGIES) * len(SEEDS)  # the batch_norm=True pairs
    assert pd.isna(optimizer["note"])  # 6 pairs: testable
    batch_norm = pd.read_csv(report / "factor_tests_batch_norm.csv").iloc[0]
    assert batch_norm["blocks"] == 0 and batch_norm["note"] == "not testable: 0 pairs"
    assert "lr-range-test" not in page and "batch-size" not in page
