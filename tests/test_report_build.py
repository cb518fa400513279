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
from hpo.report.build import SECTION_IDS
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


@pytest.fixture(scope="module")
def complete(tmp_path_factory):
    """A finished synthetic study (6 strategies × 2 seeds) and its report."""
    study_dir = synthetic_study(tmp_path_factory.mktemp("complete"), trials=96, epochs=6)
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
    assert len(decoded) == len(PNG_NAMES)
    assert all(image.width > 300 and image.height > 200 for image in decoded)
    for name in PNG_NAMES:  # the same figures beside the page
        Image.open(study_dir / "report" / name).load()
    assert 'id="state"' in page and "Complete: all 12 runs finished" in page


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
    tests = {s: [record.run(s, k).best.test["test_accuracy"] for k in (0, 1)] for s in STRATEGIES}
    leaderboard = section(index.read_text(), "leaderboard")
    for row in board.itertuples():
        assert row.best_val_accuracy_mean == pytest.approx(best.mean()[row.strategy])
        assert row.best_val_accuracy_std == pytest.approx(best.std()[row.strategy])
        assert row.test_accuracy_mean == pytest.approx(sum(tests[row.strategy]) / 2)
        assert row.epochs_per_run == trials[trials["strategy"] == row.strategy].shape[0] / 2
        shown = f"{row.best_val_accuracy_mean:.4f} ± {row.best_val_accuracy_std:.4f}"
        assert f"<td>{row.strategy}</td>" in leaderboard and shown in leaderboard
    assert board["mean_rank"].is_monotonic_increasing


def test_other_tables_are_written_beside_the_page(complete):
    report = complete[0] / "report"
    tests = pd.read_csv(report / "pairwise_tests.csv")
    assert len(tests) == 15 and set(tests["seeds"]) == {2}  # 6 strategies: 15 pairs
    configs = pd.read_csv(report / "best_configs.csv")
    assert len(configs) == 12 and set(configs["selection"]) == {"selected"}
    assert {"config/lr", "val_accuracy", "test_accuracy"} <= set(configs.columns)
    importance = pd.read_csv(report / "importance.csv")
    assert importance["param"].iloc[0] == "lr"  # the synthetic metric depends mostly on lr
    targets = pd.read_csv(report / "time_to_target.csv")
    assert set(targets["target"]) == {"within 0.5 points", "within 1.0 points"}
    page = (report / "index.html").read_text()
    assert "give weak evidence" in section(page, "statistics")


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
    assert len(images(page)) == len(PNG_NAMES)


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
