"""The whole report on synthetic results in the real format: fast, no Ray, no training."""

from __future__ import annotations

import base64
import html
import io
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest
from PIL import Image

from hpo.cli import main
from hpo.records import StudyRecord, read_study_record, write_study_record
from hpo.report import build_report
from hpo.report import figures as fig
from hpo.report.bench import synthetic_study
from hpo.report.build import SECTION_IDS, compute, draw
from hpo.results import load_results
from hpo.spec import parse_study
from hpo.strategies import STRATEGIES
from tests.conftest import REPO, TINY_STUDY

PNG_NAMES = [
    "final_best.png",
    "anytime_epochs.png",
    "anytime_seconds.png",
    "learning_curves.png",
    "hyperparameters.png",
    "parallel_coordinates.png",
    "importance.png",
]
SEEDS = (0, 1, 2)  # as the default study
RUNS = len(STRATEGIES) * len(SEEDS)


def png_names(strategies=STRATEGIES) -> list[str]:
    """The figures of a report: the PBT schedule only where the results have pbt."""
    return PNG_NAMES + (["pbt_schedule.png"] if "pbt" in strategies else [])


@pytest.fixture(scope="module")
def complete(tmp_path_factory):
    """A finished synthetic study (every registered strategy × 3 seeds) and its report."""
    folder = tmp_path_factory.mktemp("complete")
    study_dir = synthetic_study(folder, trials=8 * RUNS, epochs=6, seeds=SEEDS)
    return study_dir, build_report(study_dir)


def images(page: str) -> list[Image.Image]:
    found = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    decoded = []
    for data in found:
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        image.load()  # raises on a truncated or corrupt PNG
        decoded.append(image)
    return decoded


def section(page: str, section_id: str) -> str:
    match = re.search(rf'<section id="{section_id}">(.*?)</section>', page, re.S)
    assert match, f"no section {section_id}"
    return match.group(1)


def test_report_has_every_section_and_its_files(complete):
    study_dir, index = complete
    assert index == study_dir / "report" / "index.html"
    page = index.read_text()
    for number, section_id in enumerate(SECTION_IDS, start=1):
        assert re.search(rf'<section id="{section_id}"><h2>{number}\. ', page), section_id
    decoded = images(page)
    assert len(decoded) == len(png_names())
    assert all(image.width > 300 and image.height > 200 for image in decoded)
    for name in png_names():  # the same figures beside the page
        Image.open(study_dir / "report" / name).load()
    assert 'id="state"' in page and f"Complete: all {RUNS} runs finished" in page


def test_page_is_self_contained(complete):
    page = complete[1].read_text()
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", page)  # only data: and anchors
    assert "http://" not in page and "https://" not in page


def test_leaderboard_csv_agrees_with_trials_csv_and_the_page(complete):
    study_dir, index = complete
    board = pd.read_csv(study_dir / "report" / "leaderboard.csv")
    trials = pd.read_csv(study_dir / "trials.csv")
    record = read_study_record(study_dir)
    assert sorted(board["strategy"]) == sorted(STRATEGIES)
    best = trials.groupby(["strategy", "seed"])["val_accuracy"].max().groupby("strategy")
    tests = {s: [record.run(s, k).best.test["test_accuracy"] for k in SEEDS] for s in STRATEGIES}
    leaderboard = section(index.read_text(), "leaderboard")
    for row in board.itertuples():
        assert row.best_val_accuracy_mean == pytest.approx(best.mean()[row.strategy])
        assert row.best_val_accuracy_std == pytest.approx(best.std()[row.strategy])
        assert row.seeds == len(SEEDS)
        assert row.test_accuracy_mean == pytest.approx(sum(tests[row.strategy]) / len(SEEDS))
        epochs = trials[trials["strategy"] == row.strategy].shape[0] / len(SEEDS)
        assert row.epochs_per_run == pytest.approx(epochs)
        shown = f"{row.best_val_accuracy_mean:.4f} ± {row.best_val_accuracy_std:.4f}"
        assert f"<td>{row.strategy}</td>" in leaderboard and shown in leaderboard
    assert board["mean_rank"].is_monotonic_increasing


def test_other_tables_are_written_beside_the_page(complete):
    report = complete[0] / "report"
    tests = pd.read_csv(report / "pairwise_tests.csv")
    n = len(STRATEGIES)
    assert len(tests) == n * (n - 1) // 2 and set(tests["seeds"]) == {len(SEEDS)}
    configs = pd.read_csv(report / "best_configs.csv")
    assert len(configs) == RUNS and set(configs["selection"]) == {"selected"}
    assert {"config/lr", "val_accuracy", "test_accuracy"} <= set(configs.columns)
    importance = pd.read_csv(report / "importance.csv")
    assert importance["param"].iloc[0] == "lr"  # the synthetic metric depends mostly on lr
    targets = pd.read_csv(report / "time_to_target.csv")
    assert set(targets["target"]) == {"within 0.5 points", "within 1.0 points"}
    page = (report / "index.html").read_text()
    statistics = section(page, "statistics")
    assert "Too few seeds for these tests to mean anything: 3 paired seeds" in statistics
    assert "2/2^3 = 0.25 here" in statistics and "at least 6 seeds" in statistics
    assert "no (cannot be: p ≥ 0.25 with 3 seeds)" in statistics


def test_partial_study_says_so_and_still_reports(tmp_path):
    study_dir = synthetic_study(tmp_path, trials=60, epochs=5, strategies=["grid", "sha", "optuna"])
    record = read_study_record(study_dir)
    record.ended_at = None
    record.runs["sha/seed-1"].status, record.runs["sha/seed-1"].best = "running", None
    del record.runs["optuna/seed-1"]  # never started
    description = "<b>bold</b> & <script>alert(1)</script>"
    record.study = record.study.model_copy(update={"description": description})
    write_study_record(study_dir, record)
    trials = pd.read_csv(study_dir / "trials.csv")
    trials = trials[~((trials["strategy"] == "optuna") & (trials["seed"] == 1))]
    errored = trials["trial_id"] == trials["trial_id"].iloc[0]
    trials.loc[errored, "status"] = "errored"
    trials.to_csv(study_dir / "trials.csv", index=False)

    page = build_report(study_dir).read_text()
    state = re.search(r'<div class="banner warn" id="state">(.*?)</div>', page).group(1)
    assert "Not finished: 4 of 6 runs finished (1 running, 1 not started)" in state
    assert "Partly failed: 1 trials errored" in state
    assert "<script>alert" not in page and html.escape("<script>alert(1)</script>") in page
    configs = pd.read_csv(study_dir / "report" / "best_configs.csv")
    sha = configs[(configs["strategy"] == "sha") & (configs["seed"] == 1)].iloc[0]
    assert sha["selection"] == "provisional" and pd.isna(sha["test_accuracy"])
    board = pd.read_csv(study_dir / "report" / "leaderboard.csv").set_index("strategy")
    assert board.loc["optuna", "seeds"] == 1 and board.loc["sha", "test_accuracy_seeds"] == 1
    assert len(images(page)) == len(png_names(["grid", "sha", "optuna"]))
    assert (
        html.escape("PBT's hyperparameter schedule") not in page
        and not (study_dir / "report" / "pbt_schedule.png").exists()
    )


def test_report_of_a_copied_folder_reads_only_the_copy(tmp_path):
    original = synthetic_study(tmp_path / "elsewhere", trials=24, epochs=3)
    copy = tmp_path / "copied" / "synthetic"
    shutil.copytree(original, copy)
    shutil.rmtree(original)
    assert main(["report", str(copy)]) == 0
    page = (copy / "report" / "index.html").read_text()
    assert str(copy.resolve()) in page and "elsewhere" not in page


@pytest.mark.parametrize("case", ["missing", "empty", "no trials", "bad json"])
def test_report_on_a_folder_without_results_is_one_error_line_exit_2(tmp_path, capsys, case):
    folder = tmp_path / "results" / "study"
    if case != "missing":
        folder.mkdir(parents=True)
    if case == "no trials":
        study = parse_study({**TINY_STUDY, "name": "study"})
        write_study_record(folder, StudyRecord(study=study, study_file="s.yaml", study_hash="h"))
        (folder / "trials.csv").write_text("")
    if case == "bad json":
        (folder / "study.json").write_text("{not json")
    assert main(["report", str(folder)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hpo report: error: ")
    assert str(folder) in lines[0]
    expected = {
        "missing": "no such folder",
        "empty": "no study.json",
        "no trials": "trials.csv is missing or empty",
        "bad json": "study.json: unreadable (JSONDecodeError",
    }[case]
    assert expected in lines[0] and not (folder / "report").exists()


def test_cli_error_exit_code_without_traceback(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "hpo.cli", "report", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and "no such folder" in done.stderr


def test_each_strategy_has_one_colour_in_every_figure(complete):
    colors = fig.strategy_colors(["random", "grid", "custom"])
    assert colors == {**fig.strategy_colors(), "custom": colors["custom"]}
    assert len(set(colors.values())) == len(colors)
    from matplotlib.colors import to_rgb

    from hpo.report import tables as tab

    trials = pd.read_csv(complete[0] / "trials.csv")
    curves = tab.anytime_on_grid(tab.anytime(trials, "val_accuracy", "max"), "cum_epochs")
    figure = fig.anytime_figure(curves, "cum_epochs", "val_accuracy", colors)
    ax = figure.axes[0]
    legend = {t.get_text(): to_rgb(h.get_color()) for t, h in zip(
        ax.get_legend().get_texts(), ax.get_legend().legend_handles, strict=True)}  # fmt: skip
    assert legend == {s: pytest.approx(colors[s]) for s in STRATEGIES}
    assert ax.get_xlabel() and ax.get_ylabel() == "best val_accuracy so far"
    drawn = fig.anytime_figure(curves, "cum_epochs", "val_accuracy", colors, ax=ax)
    assert drawn is figure  # draws into the given axes


@pytest.fixture(scope="module")
def drawn(complete):
    """The complete study's tables and figures, for checks of what they state."""
    report = compute(load_results(complete[0]))
    return report, draw(report)


def test_hyperparameter_figure_and_importance_state_their_fidelity(complete, drawn):
    study_dir, index = complete
    report, figures = drawn
    trials = pd.read_csv(study_dir / "trials.csv")
    last = trials[trials["epoch"] == 6].dropna(subset=["val_accuracy"])  # max_epochs: 6
    fidelity = report.fidelity
    assert (fidelity.epoch, fidelity.reason, fidelity.trials) == (6, "max_epochs", len(last))
    assert fidelity.describe().startswith(f"at epoch 6 (max_epochs): {len(last)} trials that")
    title = figures["hyperparameters.png"].get_suptitle()
    assert fidelity.describe() in title
    importance = figures["importance.png"].axes[0].get_title().replace("\n", " ")
    assert f"val_accuracy {fidelity.describe()}" in importance
    page = section(index.read_text(), "hyperparameters")
    assert page.count(html.escape(fidelity.describe())) >= 4  # text and every caption
    assert "left out:" in page
    at = pd.read_csv(study_dir / "report" / "trials_at_fidelity.csv")
    assert len(at) == len(last)
    assert sorted(at["val_accuracy_at_epoch_6"]) == pytest.approx(sorted(last["val_accuracy"]))


def test_proposals_say_per_strategy_how_many_trials_were_model_based(complete):
    study_dir, index = complete
    trials = pd.read_csv(study_dir / "trials.csv")
    table = pd.read_csv(study_dir / "report" / "proposals.csv").set_index("strategy")
    assert sorted(table.index) == sorted(STRATEGIES) and set(table["seeds"]) == {len(SEEDS)}
    page = section(index.read_text(), "proposals")
    for strategy, mine in trials.groupby("strategy"):
        labels = mine.groupby(["seed", "trial_id"])["proposed_by"].first()
        assert table.loc[strategy, "trials"] == len(labels)
        assert table.loc[strategy, "model"] == (labels == "model").sum()
        assert (
            f"{strategy}: {(labels == 'model').sum()} of {len(labels)} trials model-based" in page
        )
    assert table.loc["grid", "model_share_mean"] == 0
    assert table.loc["optuna", "model_share_min"] > 0


def test_leaderboard_shows_decision_time_beside_wall_time(complete):
    study_dir, index = complete
    record = read_study_record(study_dir)
    board = pd.read_csv(study_dir / "report" / "leaderboard.csv").set_index("strategy")
    leaderboard = section(index.read_text(), "leaderboard")
    assert "decision time (s, share of wall)" in leaderboard
    for strategy in STRATEGIES:
        seconds = [getattr(record.run(strategy, k), "decision_s", None) for k in SEEDS]
        measured = [s for s in seconds if s is not None]
        shown = board.loc[strategy, "decision_s_per_run"]
        if measured:
            assert shown == pytest.approx(sum(measured) / len(measured))
            assert f"{shown:.1f} (" in leaderboard
        else:
            assert pd.isna(shown) and "not measured" in leaderboard


def test_results_from_before_proposals_and_decision_time_say_not_recorded(tmp_path):
    study_dir = synthetic_study(tmp_path, trials=24, epochs=3, strategies=["grid", "optuna"])
    trials = pd.read_csv(study_dir / "trials.csv").drop(columns="proposed_by")
    trials.to_csv(study_dir / "trials.csv", index=False)
    record = read_study_record(study_dir)
    for run in record.runs.values():
        if hasattr(run, "decision_s"):
            run.decision_s = None
    write_study_record(study_dir, record)
    page = build_report(study_dir).read_text()
    assert "is not recorded in these results" in section(page, "proposals")
    assert "not measured" in section(page, "leaderboard")
    assert not (study_dir / "report" / "proposals.csv").exists()


def test_anytime_curves_keep_both_axes(drawn):
    figures = drawn[1]
    for name, x in (("anytime_epochs.png", "cum_epochs"), ("anytime_seconds.png", "wall_s")):
        assert {ax.get_xlabel() for ax in figures[name].axes} == {fig.X_LABELS[x]}


def test_pbt_schedule_of_the_best_pbt_trial_per_seed(complete):
    study_dir, index = complete
    trials = pd.read_csv(study_dir / "trials.csv")
    pbt = trials[(trials["strategy"] == "pbt") & (trials["status"] != "diverged")]
    schedule = pd.read_csv(study_dir / "report" / "pbt_schedule.csv")
    for seed, run in pbt.groupby("seed"):
        top = run.sort_values(["val_accuracy", "cum_epochs"], ascending=[False, True]).iloc[0]
        mine = schedule[(schedule["seed"] == seed) & (schedule["param"] == "lr")]
        assert set(mine["trial_id"]) == {top["trial_id"]}
        rows = run[run["trial_id"] == top["trial_id"]].sort_values("epoch")
        assert mine["value"].tolist() == pytest.approx(rows["config/lr"].tolist())
    assert html.escape("PBT's hyperparameter schedule") in section(
        index.read_text(), "hyperparameters"
    )
