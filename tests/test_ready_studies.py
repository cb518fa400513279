"""The coursework's ready studies (issue 15): each runs end to end at a tiny size — every
variant, warm starts and range-test bounds included — and its report has the figures and
per-level tables that the study is for."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import yaml

from hpo.compare import load_compare, variant_of, variants
from hpo.compare_run import CompareRunner
from hpo.records import read_run_record, run_dir
from hpo.report import build_report
from hpo.runner import selected_state
from hpo.spec import load_study, parse_study
from tests.conftest import REPO, run_hpo

READY = ["optimizers", "regularization", "lenet5_normalization", "lr_range", "logistic_lr"]
# What each study's page must show beyond the per-factor sections (figure files).
FIGURES = {
    "optimizers": ["curves_optimizer.png", "curves_batch_norm.png"],
    "regularization": ["curves_regularizer.png", "curves_dropout.png"],
    "lenet5_normalization": ["curves_normalization.png", "bn_gamma.png", "bn_beta.png"],
    "lr_range": [
        "curves_policy.png",
        "lr_range_policy-range_test.png",
        "batch_size_policy-batch_size_sweep.png",
    ],
    "logistic_lr": ["curves_method.png", "lr_lines_method-gd.png", "lr_lines_method-sgd.png"],
}


# Levels a tiny version keeps (the others are alike in kind): each level with a space of
# its own or a link to another level, and its source; lr_range and logistic_lr run whole.
TINY_LEVELS = {
    "optimizers": {"optimizer": ["momentum", "adam"]},
    "regularization": {"regularizer": ["l2", "l1_from_l2"]},
    "lenet5_normalization": {"normalization": ["b_bn_input_hidden", "c_dropout"]},
}


def tiny(name: str, tmp_path) -> tuple:
    """The study at one seed and the fewest epochs and levels that still exercise every
    kind of level it has."""
    data = yaml.safe_load((REPO / "studies" / f"{name}.yaml").read_text())
    for factor, kept in TINY_LEVELS.get(name, {}).items():
        data["compare"][factor] = {k: v for k, v in data["compare"][factor].items() if k in kept}
    study = parse_study(data)
    epochs = 2 if name == "lr_range" else 1  # a range test needs points within each decade
    grid = max(
        (
            len(param.choice)
            for v in variants(study)
            for param in v.study.space.values()
            if param.choice is not None
        ),
        default=1,
    )
    data["seeds"] = [0]
    data["budget"] = {"max_epochs": epochs, "min_epochs": epochs, "total_epochs": epochs * grid}
    if name == "logistic_lr":  # SGD with one sample per step: keep the five rates, fewer steps
        data["dataset"]["val_fraction"], data["dataset"]["test_fraction"] = 0.4, 0.4
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))  # factors in the study's order
    return path, load_study(path)


@pytest.mark.slow
@pytest.mark.parametrize("name", READY)
def test_ready_study_runs_and_reports(name, tmp_path, ray_session):
    path, study = tiny(name, tmp_path)
    runner = CompareRunner(path, tmp_path / "results", echo=lambda line: None)
    runner.run()
    folder = tmp_path / "results" / study.name
    for variant in variants(study):
        run = read_run_record(run_dir(variant.directory(folder), study.strategies[0], 0))
        assert run is not None and run.status == "finished", variant.label
        if "warm_start" in variant.sources:
            assert_starts_from_source(folder, study, variant, run)
        if "lr_from" in variant.sources:
            assert 0 < run.overrides["lr_min"] < run.overrides["lr"]
    page = build_report(folder).read_text()
    report = folder / "report"
    for figure in FIGURES[name]:
        assert (report / figure).is_file(), figure
    compared = load_compare(folder)
    for factor in study.compare:
        levels = pd.read_csv(report / f"levels_{factor}.csv")
        # every level has its runs' test accuracy, and the page names the factor
        assert list(dict.fromkeys(levels[factor].astype(str))) == compared.levels(factor)
        assert levels["test_accuracy_mean"].between(0, 1).all()
        assert f"Factor: {factor}" in page
    if name == "lr_range":
        # the bounds the page marks are the ones the lr_from runs trained with
        bounds = pd.read_csv(report / "lr_bounds.csv")
        mine = bounds[(bounds["strategy"] == "grid") & (bounds["seed"] == 0)].iloc[0]
        assert 0 < mine["lr_min"] < mine["lr_max"]
        for variant in variants(study):
            if "lr_from" in variant.sources:
                run = read_run_record(run_dir(variant.directory(folder), "grid", 0))
                assert run.overrides["lr"] == pytest.approx(mine["lr_max"])
                assert run.overrides["lr_min"] == pytest.approx(mine["lr_min"])
    status = run_hpo("status", str(folder))  # the CLI reads a compared folder too
    assert status.returncode == 0, status.stderr
    assert all(v.label in status.stdout for v in variants(study))


def assert_starts_from_source(folder, study, variant, run) -> None:
    """The warm-started run's trials start from exactly the selected model of the source
    level's run of the same strategy and seed."""
    source = variant_of(study, variant.sources["warm_start"])
    source_dir = run_dir(source.directory(folder), run.strategy, run.seed)
    source_run = read_run_record(source_dir)
    _, state = selected_state(source_dir, source_run.best.trial_id, "val_accuracy", "max")
    init = run.overrides["init_from"]
    saved = torch.load(init, weights_only=True)
    assert saved.keys() == state["model"].keys()
    assert all(torch.equal(saved[k], state["model"][k]) for k in saved)
    assert run.best.config["init_from"] == init  # and its trials say where they started
