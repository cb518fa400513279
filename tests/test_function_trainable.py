"""A user's own Ray Tune function trainable, run as it is (issue 17): validation, the
checks on its reports, and studies of tests/quadratic.py (a noisy quadratic with a known
optimum) through `hpo run` and the Python API."""

from __future__ import annotations

import copy
import json
import math
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml

import hpo
from hpo.spec import StudyError, parse_study
from tests import quadratic
from tests.conftest import REPO
from trainables import ALLOW_CUSTOM_ENV
from trainables.user_function import ReportChecks, ReportError, measure, signature_problem


def quadratic_study(**changes) -> dict:
    return {**copy.deepcopy(quadratic.STUDY), **changes}


# ----------------------------------------------------------------- validation (fast)
def test_a_function_trainable_is_told_from_a_model_builder_by_its_signature():
    assert signature_problem(quadratic.train) is None

    def build(config, input_shape, num_classes):
        return None

    assert "model builder" in signature_problem(build)
    assert "takes (nothing)" in signature_problem(lambda: None)


def test_only_a_function_trainable_may_leave_out_the_dataset():
    data = quadratic_study(trainable="cnn", space={"lr": {"loguniform": {"low": 0.01, "high": 1}}})
    with pytest.raises(StudyError, match=r"^study: dataset: required for trainable 'cnn'"):
        parse_study(data)


def test_a_study_file_alone_never_imports_the_function(monkeypatch):
    monkeypatch.delenv(ALLOW_CUSTOM_ENV, raising=False)
    with pytest.raises(StudyError, match="--allow-custom"):
        parse_study(quadratic_study())


def test_a_function_study_takes_any_names_and_metric(monkeypatch):
    monkeypatch.setenv(ALLOW_CUSTOM_ENV, "1")
    study = parse_study(quadratic_study(fixed={"sleep_s": 0.0}))
    assert study.runs_function and study.dataset is None and study.metric.name == "loss"
    with pytest.raises(StudyError, match=r"trainable: cannot import no_such_module"):
        parse_study(quadratic_study(trainable="no_such_module:train"))
    with pytest.raises(StudyError, match=r"trainable: tests.faults:build_flaky takes \(config"):
        parse_study(quadratic_study(trainable="tests.faults:build_flaky"))


def test_the_python_api_takes_the_callable_as_consent(monkeypatch):
    monkeypatch.delenv(ALLOW_CUSTOM_ENV, raising=False)
    data = quadratic_study()
    del data["trainable"]
    study = hpo.Study.from_dict(data, trainable=quadratic.train)
    assert study.trainable == "tests.quadratic:train" and study.runs_function
    with pytest.raises(StudyError, match="^study: trainable: .* model builder"):
        hpo.Study.from_dict(data, trainable=lambda config, shape, classes: None)


def test_hpo_exports_its_public_names():
    assert set(hpo.__all__) >= {"Study", "run", "Results", "load_results", "StudyError"}
    assert all(hasattr(hpo, name) for name in hpo.__all__)


# ------------------------------------------------------------ report checks (fast)
def checked(metric: str = "loss"):
    sent: list[dict] = []
    checks = ReportChecks(
        lambda metrics, checkpoint=None: sent.append(metrics), metric, "t_00001", {"hp/x": 1.0}
    )
    return checks, sent


def test_reports_pass_with_hpo_columns_and_a_diverged_flag():
    checks, sent = checked()
    checks({"loss": 0.5, "extra": 3})
    checks({"loss": float("nan")})
    assert [row["diverged"] for row in sent] == [False, True]
    assert sent[0]["hp/x"] == 1.0 and sent[0]["extra"] == 3 and "report_time" in sent[0]


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        ({"loss": "high"}, r"trial t_00001: metric 'loss' is 'high' \(str\), not a number"),
        ({"mse": 1.0}, r"trial t_00001: the study's metric 'loss' is not in .*\['mse'\]"),
        ({"loss": 1.0, "note": None}, r"metric 'note' is None"),
    ],
)
def test_an_unusable_report_names_the_trial_and_the_metric(metrics, message):
    checks, sent = checked()
    with pytest.raises(ReportError, match=message):
        checks(metrics)
    assert sent == []


def test_evaluate_results_are_test_metrics():
    assert measure(lambda config, checkpoint: {"loss": 1, "test_mae": 2.0}, {}, None) == {
        "test_loss": 1.0,
        "test_mae": 2.0,
    }
    with pytest.raises(ReportError, match="evaluate returned float"):
        measure(lambda config, checkpoint: 0.5, {}, None)


# ------------------------------------------------------------ real runs (slow)
def run_in(folder, *args: str) -> subprocess.CompletedProcess:
    """`hpo ARGS` run from `folder`, where the user's module lies."""
    return subprocess.run(
        [sys.executable, "-m", "hpo.cli", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(folder), "PYTHONPATH": str(REPO)},
    )


@pytest.mark.slow
def test_every_strategy_tunes_a_users_function_through_hpo_run(tmp_path):
    shutil.copy(REPO / "tests" / "quadratic.py", tmp_path / "my_quadratic.py")
    study = quadratic_study(
        trainable="my_quadratic:train",
        budget={"max_epochs": 2, "min_epochs": 1, "reduction_factor": 2, "total_epochs": 8},
    )
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    refused = run_in(tmp_path, "run", "study.yaml")
    assert refused.returncode == 2 and "--allow-custom" in refused.stderr

    done = run_in(tmp_path, "run", "study.yaml", "--results", "results", "--allow-custom")
    assert done.returncode == 0, done.stderr[-3000:]
    results = hpo.load_results(tmp_path / "results" / "quadratic")
    trials = results.trials
    assert set(trials["strategy"]) == set(hpo.STRATEGIES)  # every registered strategy ran
    assert (trials["status"] != "errored").all()  # no inactive shift was ever proposed
    shifted = trials["config/kind"] == "shifted"
    assert trials.loc[shifted, "config/shift"].notna().all()
    assert trials.loc[~shifted, "config/shift"].isna().all()
    assert set(trials["config/y"]) <= {0.0, 0.25, 0.5, 0.75, 1.0}
    assert trials["config/k"].between(1, 15).all()
    for key, run in results.record.runs.items():  # each run selected its lowest loss
        mine = trials[(trials["strategy"] == run.strategy)]
        assert run.status == "finished" and run.best.value == pytest.approx(mine["loss"].min())
        assert run.best.test["test_loss"] == pytest.approx(
            quadratic.true_loss(run.best.config) + 1 / run.best.checkpoint_epoch
        ), key
    board = results.leaderboard()
    assert list(board["best_val_mean"]) == sorted(board["best_val_mean"])  # lowest first
    best = results.best()
    assert best.validation.value == pytest.approx(trials["loss"].min())
    assert (
        "test loss" in done.stdout and (tmp_path / "results/quadratic/report/index.html").exists()
    )
    exported = run_in(tmp_path, "export", "results/quadratic")
    assert exported.returncode == 0, exported.stderr
    document = yaml.safe_load((tmp_path / exported.stdout.strip()).read_text())
    assert document["validation"]["value"] == pytest.approx(best.validation.value)
    assert document["dataset"] is None and "test_loss" in document["test"]["metrics"]
    assert ("shift" in document["config"]) == (document["config"]["kind"] == "shifted")
    retrained = run_in(
        tmp_path, "retrain", exported.stdout.strip(), "--seeds", "0,1", "--allow-custom"
    )
    assert retrained.returncode == 0, retrained.stderr[-3000:]
    assert "test loss" in retrained.stdout  # the module's evaluate, once per seed
    metrics = json.loads(
        (tmp_path / retrained.stdout.split("results: ")[1].strip() / "metrics.json").read_text()
    )
    assert [seed["status"] for seed in metrics["seeds"]] == ["finished", "finished"]
    epochs = document["validation"]["epoch"]  # retrained as long as the selected epoch
    assert metrics["test"]["test_loss"]["mean"] == pytest.approx(
        quadratic.true_loss(document["config"]) + 1 / epochs
    )


def unusable_study(function: str) -> dict:
    return quadratic_study(
        name=function,
        trainable=f"tests.quadratic:{function}",
        space={"x": {"choice": [-1.0, 1.0]}},  # grid: x = -1 reports well, then x = 1
        strategies=["grid"],
        budget={"max_epochs": 2, "total_epochs": 4},
        max_concurrent_trials=1,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("reports_text", r"trial \w+: metric 'loss' is 'high' \(str\), not a number"),
        ("never_reports", r"trial \w+: the function returned without reporting anything"),
    ],
)
def test_an_unusable_function_fails_its_run_and_keeps_finished_trials(
    ray_session, tmp_path, monkeypatch, function, message
):
    monkeypatch.setenv(ALLOW_CUSTOM_ENV, "1")  # as --allow-custom (or hpo.run's allow_custom)
    with pytest.raises(StudyError, match=message):
        hpo.run(unusable_study(function), results_dir=tmp_path, echo=str)
    run = yaml.safe_load((tmp_path / function / "grid/seed-0/hpo_run.json").read_text())
    assert run["status"] == "failed" and re.search(message, run["error"])
    if function == "reports_text":  # x = -1 finished before x = 1 failed: it is kept
        trials = pd.read_csv(tmp_path / function / "trials.csv")
        kept = trials[trials["config/x"] == -1.0]
        assert list(kept["epoch"]) == [1, 2] and math.isclose(kept["loss"].iloc[-1], 2.0)


def readme_python_example() -> str:
    """The README's Python API example, as a user copies it."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.slow
def test_the_readmes_python_example_runs_as_written(ray_session, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme_example"}  # as a notebook's: not importable
    exec(compile(readme_python_example(), "README.md", "exec"), namespace)
    results = namespace["results"]
    assert isinstance(results, hpo.Results)  # and every strategy tuned `train`:
    assert list(results.runs) == [f"{name}/seed-0" for name in hpo.STRATEGIES]
    assert {run.status for run in results.record.runs.values()} == {"finished"}
    board = results.leaderboard()
    assert board["best_val_mean"].iloc[0] == pytest.approx(results.trials["loss"].min())
    assert results.best_config.keys() == {"x", "y"} and abs(results.best_config["x"] - 2) < 2
    assert (tmp_path / "results" / "readme_example" / "report" / "index.html").is_file()
    assert "readme_example" in capsys.readouterr().out
