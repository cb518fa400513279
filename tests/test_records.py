"""study.json and hpo_run.json: one typed record each, one writer, one reader; files from
before records had a format are upgraded; newer or foreign files are one-line errors."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from hpo.files import staged_folder, write_json, write_text
from hpo.records import (
    RECORD_FORMAT,
    RUN_MARKER,
    STUDY_FILE,
    BestTrial,
    RunRecord,
    StudyRecord,
    read_run_record,
    read_study_record,
    write_run_record,
    write_study_record,
)
from hpo.spec import StudyError, parse_study
from tests.conftest import TINY_STUDY

DATA = Path(__file__).parent / "data"


def a_record() -> StudyRecord:
    best = BestTrial(
        trial_id="t1",
        epoch=3,
        cum_epochs=7,
        metric="val_accuracy",
        value=0.9,
        config={"lr": 0.01},
        test={"test_accuracy": 0.88, "test_loss": 0.3},
        checkpoint_epoch=3,
    )
    run = RunRecord(strategy="random", seed=0, started=1.0, status="finished", best=best)
    return StudyRecord(
        study=parse_study(TINY_STUDY), study_file="tiny.yaml", study_hash="h", runs={run.key: run}
    )


def test_study_record_round_trips(tmp_path):
    record = a_record()
    write_study_record(tmp_path, record)
    saved = json.loads((tmp_path / STUDY_FILE).read_text())
    assert saved["format"] == RECORD_FORMAT and saved["study"]["space"]["lr"] == {
        "loguniform": {"low": 1e-3, "high": 3e-2}
    }
    assert read_study_record(tmp_path) == record


def test_run_record_round_trips_and_a_missing_one_is_none(tmp_path):
    run = a_record().runs["random/seed-0"]
    write_run_record(tmp_path, run)
    assert read_run_record(tmp_path) == run
    assert read_run_record(tmp_path / "absent") is None


def test_a_study_json_from_before_records_is_upgraded(tmp_path):
    """A real study.json of hpo before this change (trimmed to two runs)."""
    shutil.copy(DATA / "study-before-format-1.json", tmp_path / STUDY_FILE)
    record = read_study_record(tmp_path)
    sha = record.run("sha", 0)
    assert record.study.name == "digits_cnn" and record.versions["ray"] == "2.60.0"
    assert sha.status == "finished" and sha.trials == 94 and sha.statuses["finished"] == 3
    assert sha.best.metric == "val_accuracy" and sha.best.value == pytest.approx(0.98888888)
    assert sha.best.test == {"test_loss": pytest.approx(0.0677959601), "test_accuracy": 0.975}
    assert sha.best.config["optimizer"] == "adam" and sha.best.checkpoint_epoch == 23
    assert record.machine.hostname == "vm"


def test_a_run_marker_from_before_records_is_upgraded(tmp_path):
    shutil.copy(DATA / "hpo_run-before-format-1.json", tmp_path / RUN_MARKER)
    run = read_run_record(tmp_path)
    assert (run.strategy, run.seed, run.wall_s) == ("sha", 0, pytest.approx(129.8935453))
    assert run.best.trial_id == "c17e8_00039" and run.best.test["test_accuracy"] == 0.975


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            {"format": RECORD_FORMAT + 1},
            "written by a newer hpo (format 2); this hpo reads format 1",
        ),
        ({"format": "one"}, "format: expected 1, got 'one'"),
        ({"format": 1, "study_hash": "h"}, "study: required field is missing"),
        ([1, 2], "expected a JSON object written by hpo run"),
        ("{not json", "unreadable (JSONDecodeError"),
    ],
)
def test_foreign_or_newer_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / STUDY_FILE
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(StudyError) as caught:
        read_study_record(tmp_path)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_newer_run_marker_is_refused(tmp_path):
    write_json(tmp_path / RUN_MARKER, {"format": 7, "strategy": "x"})
    with pytest.raises(StudyError, match="written by a newer hpo"):
        read_run_record(tmp_path)


# ----------------------------------------------------------------- the writer
def test_written_files_get_the_normal_umask_and_no_temporary_file_is_left(tmp_path):
    previous = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "x")
        write_study_record(tmp_path, a_record())
        with staged_folder(tmp_path / "out") as staging:
            (staging / "inside.txt").write_text("y")
    finally:
        os.umask(previous)
    for path in (tmp_path / "a.txt", tmp_path / STUDY_FILE):
        assert path.stat().st_mode & 0o777 == 0o644, path
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "out", STUDY_FILE]


def test_a_failed_write_leaves_the_old_file_and_nothing_else(tmp_path):
    write_text(tmp_path / "kept.txt", "old")
    with pytest.raises(TypeError):
        write_json(tmp_path / "kept.txt", {1j: "a complex key is not JSON"})
    assert (tmp_path / "kept.txt").read_text() == "old"
    with pytest.raises(RuntimeError), staged_folder(tmp_path / "kept-folder") as staging:
        (staging / "half").write_text("…")
        raise RuntimeError("crash while writing")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.txt"]
