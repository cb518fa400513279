"""The report of a real tiny study (`hpo run` through Ray Tune, then `hpo report`), checked
against the saved results, from a copied folder, and in a headless browser."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from hpo.records import read_study_record
from hpo.report.build import SECTION_IDS
from hpo.strategies import STRATEGIES
from tests import browser
from tests.conftest import run_hpo as hpo

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def reported(tiny_study_run) -> Path:
    """The one real run of these tests: the tiny study, every registered strategy (the
    session's `hpo run`, shared with test_end_to_end), then `hpo report` of it."""
    _, study_dir, _ = tiny_study_run
    done = hpo("report", str(study_dir))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == str(study_dir / "report" / "index.html")
    return study_dir


def test_every_section_and_image_and_one_leaderboard_row_per_strategy(reported):
    page = (reported / "report" / "index.html").read_text()
    assert re.findall(r'<section id="([^"]+)">', page) == list(SECTION_IDS)
    assert f"Complete: all {len(STRATEGIES)} runs finished" in page
    pngs = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(pngs) == len(png_files(reported)) >= 7  # the PBT schedule where pbt ran
    for data in pngs:
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        image.load()
        assert image.width > 300 and image.height > 200
    board = pd.read_csv(reported / "report" / "leaderboard.csv")
    assert sorted(board["strategy"]) == sorted(STRATEGIES) and len(board) == len(STRATEGIES)


def test_numbers_agree_with_trials_csv_and_study_json(reported):
    trials = pd.read_csv(reported / "trials.csv")
    record = read_study_record(reported)
    board = pd.read_csv(reported / "report" / "leaderboard.csv").set_index("strategy")
    page = (reported / "report" / "index.html").read_text()
    leaderboard = re.search(r'<section id="leaderboard">(.*?)</section>', page, re.S).group(1)
    for strategy in STRATEGIES:
        mine = trials[trials["strategy"] == strategy]
        run = record.run(strategy, 0)
        row = board.loc[strategy]
        assert row["best_val_accuracy_mean"] == pytest.approx(mine["val_accuracy"].max())
        assert row["best_val_accuracy_mean"] == pytest.approx(run.best.value)
        assert row["test_accuracy_mean"] == pytest.approx(run.best.test["test_accuracy"])
        assert row["trials_per_run"] == mine["trial_id"].nunique() == run.trials
        assert row["epochs_per_run"] == len(mine) == run.epochs
        assert row["wall_s_per_run"] == pytest.approx(run.wall_s)
        cells = (
            f'<td>{strategy}</td><td>1 of 1</td><td class="num">1</td>'
            f"<td>{row['best_val_accuracy_mean']:.4f} (1 seed)</td>"
            f"<td>{row['test_accuracy_mean']:.4f} (1 seed)</td>"
        )
        assert cells in leaderboard
    ranks = board["mean_rank"]
    best = board["best_val_accuracy_mean"]
    assert ranks[best.idxmax()] == ranks.min()


def test_report_of_results_copied_to_another_directory(reported, tmp_path):
    copy = tmp_path / "moved" / "tiny"
    shutil.copytree(reported, copy)
    shutil.rmtree(copy / "report")
    hidden = reported.with_name("tiny-hidden")
    reported.rename(hidden)  # the original must not be needed
    try:
        done = hpo("report", str(copy))
    finally:
        hidden.rename(reported)
    assert done.returncode == 0, done.stderr[-3000:]
    page = (copy / "report" / "index.html").read_text()
    assert str(copy.resolve()) in page
    original = (reported / "report" / "leaderboard.csv").read_text()
    assert (copy / "report" / "leaderboard.csv").read_text() == original


def test_page_opens_in_headless_chromium_without_errors(reported, tmp_path):
    if browser.chromium() is None or not _has_websocket_client():
        if os.environ.get("CI"):
            pytest.fail("chromium or websocket-client missing: `make test` installs both")
        pytest.skip("chromium or websocket-client not installed (make test installs them)")
    index = reported / "report" / "index.html"
    visit = browser.visit(index)
    assert visit.errors == []
    assert visit.title == "HPO study report: tiny"
    assert visit.sections == list(SECTION_IDS)
    assert len(visit.images) == len(png_files(reported))
    assert all(w > 0 and h > 0 and complete for w, h, complete in visit.images), visit.images
    assert visit.requests[0] == index.resolve().as_uri()
    assert all(url.startswith(("file:", "data:")) for url in visit.requests)
    shot = Image.open(io.BytesIO(visit.screenshot))
    shot.load()
    (tmp_path / "screenshot.png").write_bytes(visit.screenshot)
    assert shot.width >= 1000 and len(shot.convert("L").getcolors(256) or []) > 10


def png_files(study_dir: Path) -> list[Path]:
    """The figures written beside the page (each is also embedded in it)."""
    return sorted((study_dir / "report").glob("*.png"))


def _has_websocket_client() -> bool:
    try:
        import websocket  # noqa: F401
    except ImportError:
        return False
    return True
