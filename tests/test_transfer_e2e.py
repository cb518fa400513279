"""A tiny fine-tuning study through `hpo run` and `hpo report`: weights from a local file,
two freezing policies, two strategies; the report shows the policies and conv1."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import torchvision
import yaml

from hpo.records import read_run_record
from tests.conftest import run_hpo as hpo

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_tiny_fine_tuning_study_runs_and_reports(tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "resnet18-source.pt"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    study = {
        "name": "tiny_transfer",
        "trainable": "resnet_transfer",
        "dataset": {"name": "digits", "classes": [0, 1, 2], "split_seed": 0},
        "fixed": {"weights": str(weights), "image_size": 16, "batch_size": 128},
        "space": {
            "freeze": {"choice": ["head", "head+conv1+layer1.0.conv1"]},
            "lr": {"loguniform": {"low": 1.0e-3, "high": 1.0e-2}},
        },
        "budget": {"max_epochs": 2, "total_epochs": 6},
        "strategies": ["random", "asha"],
        "seeds": [0],
        "max_concurrent_trials": 2,
    }
    study_file = tmp_path / "tiny_transfer.yaml"
    study_file.write_text(yaml.safe_dump(study))
    done = hpo("run", str(study_file), "--results", str(tmp_path / "results"))
    assert done.returncode == 0, done.stderr[-3000:]
    study_dir = tmp_path / "results" / "tiny_transfer"
    trials = pd.read_csv(study_dir / "trials.csv")
    assert set(trials["strategy"]) == {"random", "asha"}
    assert set(trials["config/freeze"]) <= {"head", "head+conv1+layer1.0.conv1"}
    for strategy in ("random", "asha"):
        run = read_run_record(study_dir / strategy / "seed-0")
        assert run.status == "finished" and run.best.test["test_accuracy"] is not None
        assert (study_dir / strategy / "seed-0" / "views.npz").exists()
    page = (study_dir / "report" / "index.html").read_text()
    assert "conv1_filters.png" in page and 'id="choices-table"' in page
    assert "head+conv1+layer1.0.conv1" in page


def test_missing_weights_fail_before_any_trial(tmp_path, monkeypatch):
    study = {
        "name": "no_weights",
        "trainable": "resnet_transfer",
        "dataset": {"name": "digits"},
        "fixed": {"weights": "imagenet"},
        "space": {"lr": {"loguniform": {"low": 1.0e-3, "high": 1.0e-2}}},
        "budget": {"max_epochs": 1, "total_epochs": 1},
        "strategies": ["random"],
    }
    study_file = tmp_path / "no_weights.yaml"
    study_file.write_text(yaml.safe_dump(study))
    env_home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(env_home))  # run_hpo passes the environment on
    done = hpo("run", str(study_file), "--results", str(tmp_path / "results"))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "resnet18-f37072fd.pth not found" in done.stderr and str(env_home) in done.stderr
    assert not (tmp_path / "results").exists()
