"""The gradient-pathology ready studies (issue 16): each runs end to end through the
runners at a tiny size and its report has the sections the study is for."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from hpo.compare import variants
from hpo.compare_run import CompareRunner
from hpo.records import read_run_record, run_dir
from hpo.report import build_report
from hpo.runner import StudyRunner
from hpo.spec import load_study
from tests.conftest import REPO

# Each study's page: a section id it must have, and files beside it.
EXPECTED = {
    "vanishing_gradients": (
        "gradient-norms",
        ["grad_norms.png", "decision_boundaries.png", "grad_norm_ratios.csv"],
    ),
    "vanishing_gradients_init": (
        "gradient-distributions",
        ["grad_distribution_init-normal_0.1.png", "grad_distribution_init-xavier.png"],
    ),
    "dying_relu": ("collapse", ["collapse.csv", "collapse.png", "collapse_thresholds.csv"]),
    "toy_convergence": ("iterations-to-fit", ["iterations_to_fit.csv", "iterations_to_fit.png"]),
    "toy_lines": ("iterations-to-fit", ["iterations_to_fit.csv"]),
    "toy_detection": ("regression-head", ["regression.csv"]),
    "neuron_landscape": ("landscape", ["landscape_l2_loss.csv", "landscape_ce_grad_w.csv"]),
}
# Tiny sizes: the fewest epochs, seeds, runs, levels and grid points that still exercise
# the study.
SHRINK = {
    "dying_relu": {"runs": 40},
    "toy_convergence": {"passes": 5},
    "toy_lines": {"passes": 2},
    "vanishing_gradients": {"passes": 2, "grad_norm_every": 1},
}
TINY_LEVELS = {
    "vanishing_gradients": {"activation": ["sigmoid", "relu"]},
    "vanishing_gradients_init": {"init": ["normal_0.1", "xavier"]},
}


def tiny(name: str, tmp_path) -> tuple:
    data = yaml.safe_load((REPO / "studies" / f"{name}.yaml").read_text())
    data["seeds"] = [0]
    for factor, kept in TINY_LEVELS.get(name, {}).items():
        levels = data["compare"][factor]
        data["compare"][factor] = (
            [v for v in levels if v in kept]
            if isinstance(levels, list)
            else {k: v for k, v in levels.items() if k in kept}
        )
    data["fixed"] = {**data.get("fixed", {}), **SHRINK.get(name, {})}
    epochs = 1 if name == "neuron_landscape" else 2
    points = 1
    for param in data.get("space", {}).values():
        param["grid"] = param["grid"][::5]  # 4 of 17 values
        points *= len(param["grid"])
    data["budget"] = {"max_epochs": epochs, "min_epochs": epochs, "total_epochs": epochs * points}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, load_study(path)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPECTED))
def test_pathology_study_runs_and_reports(name, tmp_path, ray_session):
    path, study = tiny(name, tmp_path)
    runner_type = CompareRunner if study.compare else StudyRunner
    runner_type(path, tmp_path / "results", echo=lambda line: None).run()
    folder = tmp_path / "results" / study.name
    for variant in variants(study) if study.compare else []:
        for seed in study.seeds:
            run = read_run_record(run_dir(variant.directory(folder), "grid", seed))
            assert run is not None and run.status == "finished", (variant.label, seed)
    page = build_report(folder).read_text()
    section, files = EXPECTED[name]
    assert f'id="{section}"' in page, section
    for name_ in files:
        assert (folder / "report" / name_).is_file(), name_
    if name == "dying_relu":
        collapse = pd.read_csv(folder / "report" / "collapse.csv")
        assert set(collapse["runs"]) == {40}
        assert "Lu et al. 2019" in page
