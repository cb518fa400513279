"""The progress board of `hpo run`, fed synthetic Tune events: no Ray cluster, no sleeps."""

from __future__ import annotations

import io
import math
import pickle
import re
from types import SimpleNamespace

import pytest
from rich.console import Console

from hpo import progress
from hpo.progress import ProgressCallback, RunState, StudyProgress

KEY = "asha/seed-0"
STAMP = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} ")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def board(mode: str = "plain", interval: float = 15.0) -> tuple[StudyProgress, io.StringIO, Clock]:
    out, clock = io.StringIO(), Clock()
    return StudyProgress(mode, stream=out, plain_interval_s=interval, clock=clock), out, clock


def start(b: StudyProgress, mode: str = "max", total: int = 16, max_epochs: int = 4) -> None:
    b.run_started(KEY, "     asha seed 0", total, max_epochs, "val_accuracy", mode)


def trial(trial_id: str, **attrs: object) -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id, **attrs)


def report(cb: ProgressCallback, t: SimpleNamespace, value: float, epoch: int) -> None:
    t.last_result = {"val_accuracy": value, "training_iteration": epoch}
    cb.on_trial_result(0, [], t, t.last_result)


def test_counts_trials_epochs_and_best():
    b, _, _ = board()
    cb = ProgressCallback(KEY)
    with b:
        start(b)
        a, c, d = trial("a"), trial("c"), trial("d")
        for t in (a, c, d, a):  # a restarted after a pause: still one running trial
            cb.on_trial_start(0, [], t)
        for epoch in (1, 2, 3, 4):
            report(cb, a, 0.5 + epoch / 10, epoch)
        report(cb, c, 0.95, 1)
        report(cb, d, math.nan, 1)
        cb.on_trial_complete(0, [], a)  # reached max_epochs
        cb.on_trial_complete(0, [], c)  # stopped at epoch 1 of 4
        state = b.snapshot(KEY)
    assert (state.epochs, state.total_epochs) == (6, 16)
    assert (state.running, state.finished, state.stopped, state.errored) == (1, 1, 1, 0)
    assert state.best == 0.95


def test_best_with_mode_min_ignores_non_finite():
    b, _, _ = board()
    cb = ProgressCallback(KEY)
    with b:
        start(b, mode="min")
        t = trial("a")
        for value in (0.4, math.inf, 0.2, 0.3, math.nan):
            report(cb, t, value, 1)
        cb.on_trial_result(0, [], t, {"val_accuracy": "n/a"})
        assert b.snapshot(KEY).best == 0.2
        assert b.snapshot(KEY).epochs == 6


def test_line_shows_budget_eta_and_caps_epochs():
    state = RunState("  x", 10, 4, "loss", "min", started=0.0, epochs=4, epochs_at_start=2)
    assert "left ?" not in state.line(now=60.0)
    assert "1:00 elapsed · ~3:00 left" in state.line(now=60.0)  # 2 epochs/min, 6 left
    assert "best loss —" in state.line(now=60.0)
    fresh = RunState("  x", 10, 4, "loss", "min", started=0.0, epochs=2, epochs_at_start=2)
    assert "left ?" in fresh.line(now=5.0)
    over = RunState("  x", 10, 4, "loss", "min", started=0.0, epochs=12)
    assert "epochs 10/10" in over.line(now=5.0)


def test_plain_status_lines_are_rate_bounded_and_timestamped():
    b, out, clock = board(interval=15.0)
    cb = ProgressCallback(KEY)
    with b:
        start(b)
        t = trial("a")
        cb.on_trial_start(0, [], t)
        for step in range(40):  # 40 reports over 39 s: at most one status per 15 s
            clock.now += 1.0 if step else 0.0
            report(cb, t, 0.5, 1)
        b.message("hello")
        b.run_ended(KEY, "done")
    lines = out.getvalue().splitlines()
    assert all(STAMP.match(line) for line in lines)
    status = [line for line in lines if re.search(r"epochs \d+/16", line)]
    assert len(status) == 2  # at 15 s and 30 s
    assert "seed 0: running …" in lines[0] and lines[-2].endswith("hello")


def test_error_traceback_printed_once_with_trial_id_and_path(tmp_path):
    b, out, _ = board()
    cb = ProgressCallback(KEY)
    staging, results = tmp_path / "staging", tmp_path / "results"
    staging.mkdir()
    results.mkdir()
    error = staging / "error.txt"  # Ray writes it here first, syncs it to results later
    error.write_text("\n".join(f"frame {i}" for i in range(30)) + "\nValueError: boom\n")
    t = trial("trial_42", error_file=str(error), path=str(results))
    with b:
        start(b)
        cb.on_trial_start(0, [], t)
        cb.on_trial_recover(0, [], t)  # Tune retries it…
        cb.on_trial_start(0, [], t)
        cb.on_trial_error(0, [], t)  # …then gives up
        state = b.snapshot(KEY)
    text = out.getvalue()
    assert text.count("ValueError: boom") == 1
    assert "trial_42" in text and f"full log: {results / 'error.txt'}" in text
    assert "frame 29" in text and "frame 10" not in text  # only the tail
    assert (state.running, state.errored) == (0, 1)


def test_error_file_found_in_trial_folder(tmp_path):
    (tmp_path / "error.txt").write_text("RuntimeError: no attribute\n")
    b, out, _ = board()
    with b:
        start(b)
        ProgressCallback(KEY).on_trial_error(0, [], trial("t1", path=str(tmp_path)))
    assert "RuntimeError: no attribute" in out.getvalue()
    assert f"full log: {tmp_path / 'error.txt'}" in out.getvalue()


def test_quiet_prints_only_errors(tmp_path):
    (tmp_path / "error.txt").write_text("KeyError: x\n")
    b, out, clock = board(mode="quiet", interval=0.0)
    cb = ProgressCallback(KEY)
    with b:
        start(b)
        t = trial("t1", path=str(tmp_path))
        cb.on_trial_start(0, [], t)
        clock.now += 100
        report(cb, t, 0.5, 1)
        b.message("not shown")
        b.message("shown", error=True)
        cb.on_trial_error(0, [], t)
        b.run_ended(KEY, "asha seed 0 finished")
        b.run_ended("other", "other run failed", status="failed")
    text = out.getvalue()
    assert "not shown" not in text and "epochs" not in text and "finished" not in text
    assert "shown" in text and "KeyError: x" in text and "other run failed" in text


def test_run_ended_prints_summary_and_forgets_the_run():
    b, out, _ = board()
    with b:
        start(b)
        b.run_ended(KEY, "     asha seed 0  done: best 0.97", status="finished")
        with pytest.raises(KeyError):
            b.snapshot(KEY)
    last = out.getvalue().splitlines()[-1]
    assert STAMP.match(last) and last.endswith("asha seed 0  done: best 0.97")


def test_callback_pickles_and_ignores_unknown_runs():
    b, out, _ = board()
    cb = ProgressCallback(KEY)
    ProgressCallback(KEY).on_trial_start(0, [], trial("a"))  # no board: nothing happens
    with b:
        start(b)
        assert progress.active_board() is b
        restored = pickle.loads(pickle.dumps(cb))
        assert vars(restored) == {"key": KEY}
        restored.on_trial_start(0, [], trial("a"))
        stranger = ProgressCallback("random/seed-9")
        stranger.on_trial_start(0, [], trial("b"))
        stranger.on_trial_error(0, [], trial("b"))
        assert b.snapshot(KEY).running == 1
    assert progress.active_board() is None
    assert "random" not in out.getvalue()


def test_runs_left_unended_print_their_last_line_on_exit():
    b, out, _ = board()
    with b:
        start(b)
        ProgressCallback(KEY).on_trial_start(0, [], trial("a"))
    assert "asha seed 0  epochs 0/16  trials 1 running" in out.getvalue().splitlines()[-1]


def test_auto_mode_follows_the_stream():
    assert StudyProgress(stream=io.StringIO()).mode == "plain"
    with pytest.raises(ValueError):
        StudyProgress("fancy")


def test_live_rows_and_summary():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160)
    clock = Clock()
    b = StudyProgress("live", stream=out, console=console, clock=clock)
    cb = ProgressCallback(KEY)
    with b:
        start(b)
        t = trial("a")
        cb.on_trial_start(0, [], t)
        for epoch in (1, 2, 3):
            report(cb, t, 0.9, epoch)
        clock.now += 30
        b._live.refresh()  # what the refresh thread does twice a second
        row = out.getvalue()
        b.run_ended(KEY, "     asha seed 0  finished · best val_accuracy 0.9")
        b.message("a note")
        rendered = Console(file=io.StringIO(), width=160)
        with rendered.capture() as after:
            rendered.print(b._rows())
    assert "asha seed 0" in row and "epochs 3/16" in row and "best val_accuracy 0.9" in row
    assert "0:30 elapsed" in row
    assert "epochs" not in after.get()  # the ended run has no live row left
    ended = out.getvalue()[len(row) :]
    assert "asha seed 0  finished · best val_accuracy 0.9" in ended and "a note" in ended


@pytest.mark.slow
def test_hpo_run_in_a_terminal_shows_live_rows_then_the_summary(tmp_path):
    """`hpo run` in a pseudo-terminal, as a user sees it: live rows with the run's epochs
    of its budget and best so far, then the run's summary line and the leaderboard."""
    import os
    import sys

    import pexpect
    import yaml

    from tests import quadratic
    from tests.conftest import REPO

    study = {**quadratic.STUDY, "name": "watched", "fixed": {"sleep_s": 0.3}}
    study["strategies"] = ["random"]
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump(study))
    command = [
        "-m", "hpo.cli", "run", str(study_file), "--allow-custom",
        "--results", str(tmp_path / "results"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "160", "TERM": "xterm"}
    child = pexpect.spawn(sys.executable, command, env=env, timeout=300, encoding="utf-8")
    child.expect(pexpect.EOF)
    child.close()
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", child.before)  # cursor moves, colours
    (tmp_path / "screen.txt").write_text(screen)
    assert child.exitstatus == 0, screen[-3000:]
    rows = re.findall(r"random seed 0 .*epochs (\d+)/16 .*best loss (\S+)", screen)
    assert rows, screen[-3000:]
    assert any(0 < int(epochs) < 16 and best != "—" for epochs, best in rows)  # mid-run
    assert "random seed 0: 4 trials, 16 epochs, best loss" in screen
    assert "strategy" in screen and "results:" in screen  # the leaderboard after it
