from __future__ import annotations

import subprocess
import sys

import yaml

from hpo.cli import main
from hpo.strategies import STRATEGIES


def test_validate_prints_resolved_study_and_plans(write_study, study_dict, capsys):
    assert main(["validate", str(write_study(study_dict))]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["study"]["name"] == "tiny"
    assert printed["study"]["strategies"] == list(STRATEGIES)
    assert printed["plans"]["random"]["num_samples"] == 4
    assert printed["plans"]["sha"]["rungs"][-1][1] == 4


def test_bad_study_is_one_line_exit_2_no_traceback(write_study, study_dict):
    study_dict["space"]["lr"] = {"loguniform": {"low": -1, "high": 0.1}}
    path = write_study(study_dict)
    done = subprocess.run(
        [sys.executable, "-m", "hpo.cli", "validate", str(path)], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert (
        done.stderr
        == f"hpo validate: error: {path}: space.lr.loguniform: low must be > 0 (got -1.0)\n"
    )
    assert done.stdout == ""


def test_run_with_invalid_study_writes_nothing(write_study, study_dict, tmp_path, capsys):
    study_dict["budget"]["total_epochs"] = -5
    results = tmp_path / "results"
    assert main(["run", str(write_study(study_dict)), "--results", str(results)]) == 2
    assert "budget.total_epochs: Input should be greater than 0" in capsys.readouterr().err
    assert not results.exists()


def test_run_rejects_unknown_strategy_subset(write_study, study_dict, tmp_path, capsys):
    results = tmp_path / "results"
    code = main(
        ["run", str(write_study(study_dict)), "--strategies", "tpe", "--results", str(results)]
    )
    assert code == 2
    assert "--strategies: 'tpe' is not a registered strategy" in capsys.readouterr().err
    assert not results.exists()
    study_dict["strategies"] = ["random"]  # registered, but not this study's
    code = main(
        ["run", str(write_study(study_dict)), "--strategies", "asha", "--results", str(results)]
    )
    assert code == 2
    assert "--strategies: 'asha' is not one of the study's strategies (random)" in (
        capsys.readouterr().err
    )
    assert not results.exists()


def test_unwritable_results_fails_before_any_trial(write_study, study_dict, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["run", str(write_study(study_dict)), "--results", str(blocker)]) == 2
    assert "results folder is not writable" in capsys.readouterr().err


def test_missing_study_file(tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing.yaml"), "--results", str(tmp_path)]) == 2
    assert "missing.yaml: no such study file" in capsys.readouterr().err


def test_changed_study_file_needs_fresh(write_study, study_dict, tmp_path, capsys):
    from hpo.records import StudyRecord, write_study_record
    from hpo.spec import parse_study

    results = tmp_path / "results"
    (results / "tiny" / "random" / "seed-0").mkdir(parents=True)
    older = StudyRecord(study=parse_study(study_dict), study_file="x.yaml", study_hash="older")
    write_study_record(results / "tiny", older)
    assert main(["run", str(write_study(study_dict)), "--results", str(results)]) == 2
    assert "holds results of a different version" in capsys.readouterr().err
    assert (results / "tiny" / "random" / "seed-0").exists()  # nothing deleted without --fresh


def test_unreadable_study_record_needs_fresh(write_study, study_dict, tmp_path, capsys):
    results = tmp_path / "results"
    (results / "tiny" / "random" / "seed-0").mkdir(parents=True)
    (results / "tiny" / "study.json").write_text('{"study_hash": "no study", "runs": {}}')
    assert main(["run", str(write_study(study_dict)), "--results", str(results)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "study.json: study: required field is missing" in error
    assert "use --fresh to start over" in error
    assert (results / "tiny" / "random" / "seed-0").exists()


def test_validate_never_imports_ray(write_study, study_dict):
    """`hpo validate` checks a study and prints every strategy's plan without Ray (nor
    Optuna or torch): the registries are plain data, the plans pure arithmetic."""
    script = (
        "import sys\n"
        "for name in ('ray', 'optuna', 'torch'):\n"
        "    sys.modules[name] = None  # any import of them raises ImportError\n"
        "from hpo.cli import main\n"
        f"sys.exit(main(['validate', {str(write_study(study_dict))!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert list(yaml.safe_load(done.stdout)["plans"]) == list(STRATEGIES)  # the study's default


def test_submit_refuses_object_storage_results(write_study, study_dict, capsys):
    """`hpo run` writes through local paths: s3://… would become a local "s3:" folder in
    the job's directory. Refused before any cluster is contacted (nothing listens here)."""
    study = str(write_study(study_dict))
    code = main(
        ["submit", study, "--results", "s3://bucket/hpo", "--address", "http://127.0.0.1:9"]
    )
    assert code == 2
    error = capsys.readouterr().err
    assert "--results s3://bucket/hpo: object storage is not supported yet" in error
