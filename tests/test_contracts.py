"""Every registered trainable, dataset and strategy keeps the contracts of tests/contracts.py;
every study file in studies/ validates and its strategies' plans fit its budget. A new
component is picked up from its registry: if it breaks a contract, its name is in the id."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from torch import nn

from hpo.spec import StudyError, load_study, parse_study
from hpo.strategies import STRATEGIES, Strategy
from hpo.strategies.plan import Plan, TunerPlan
from tests import contracts
from tests.conftest import REPO, TINY_STUDY
from tests.dataset_files import DATASET_FILES
from trainables import (
    ALLOW_CUSTOM_ENV,
    DATASETS,
    EPOCH_METRICS,
    LOOP_DEFAULTS,
    TRAINABLES,
    DatasetInfo,
    TrainableInfo,
    data_conflict,
)
from trainables.data import DataBundle, RawData, load_dataset

# What a trainable needs to train on some datasets (squared error on regression targets),
# and what keeps a check small (8 batched nets, not 1,000).
TEST_CONFIG = {"batched_mlp": {"runs": 8}}


def pair_config(trainable: str, dataset: str) -> dict:
    config = dict(TEST_CONFIG.get(trainable, {}))
    if DATASETS[dataset].task == "regression" and "loss" in TRAINABLES[trainable].defaults:
        config["loss"] = "squared_error"
    return config


PAIRS = [
    (trainable, dataset)
    for trainable, info in TRAINABLES.items()
    for dataset, data in DATASETS.items()
    if info.input_ranks
    and data.input_rank in info.input_ranks
    and data_conflict(trainable, dataset, pair_config(trainable, dataset)) is None
]
STUDY_FILES = sorted((REPO / "studies").glob("*.yaml"))
BUDGETS = {
    "R4-eta2": {"max_epochs": 4, "min_epochs": 1, "reduction_factor": 2, "total_epochs": 16},
    "R9-eta3": {"max_epochs": 9, "min_epochs": 1, "reduction_factor": 3, "total_epochs": 90},
    "R27-r3": {"max_epochs": 27, "min_epochs": 3, "reduction_factor": 3, "total_epochs": 300},
    "one-trial": {"max_epochs": 5, "min_epochs": 5, "reduction_factor": 2, "total_epochs": 5},
}


@pytest.fixture(scope="module")
def load(tmp_path_factory):
    """`load(name)`: the loader options that read the dataset's example files (written
    once per module; CIFAR-10's checksum patch stays on while the module runs)."""
    options: dict[str, dict] = {}
    with pytest.MonkeyPatch.context() as patch:

        def get(name: str) -> dict:
            if name not in DATASET_FILES:
                pytest.fail(f"{name}: no example files (add a writer to tests/dataset_files.py)")
            if name not in options:
                options[name] = DATASET_FILES[name](tmp_path_factory.mktemp(name), patch)
            return options[name]

        yield get


@pytest.fixture(scope="module")
def bundle(load):
    """`bundle(trainable, dataset)`: the dataset as that trainable's trials see it."""
    cache: dict[tuple, DataBundle] = {}

    def get(trainable: str, dataset: str) -> DataBundle:
        if (trainable, dataset) not in cache:
            scale = TRAINABLES[trainable].input_scale
            fraction = 0.2 if DATASETS[dataset].splittable else 0.0
            cache[trainable, dataset] = load_dataset(
                dataset, fraction, fraction, 0, scale=scale, **load(dataset)
            )
        return cache[trainable, dataset]

    return get


# ------------------------------------------------------------------- datasets
@pytest.mark.parametrize("name", list(DATASETS))
def test_dataset(load, name):
    contracts.check_dataset(name, load(name))


# ----------------------------------------------------------------- trainables
@pytest.mark.parametrize("name", list(TRAINABLES))
def test_trainable_registration(name):
    contracts.check_trainable_registration(name)


@pytest.mark.parametrize(("trainable", "dataset"), PAIRS, ids=[f"{t}-{d}" for t, d in PAIRS])
def test_trainable_trains_on_every_dataset_it_takes(bundle, trainable, dataset):
    data, config = bundle(trainable, dataset), pair_config(trainable, dataset)
    contracts.check_trainable_builds(trainable, data, config)
    state = contracts.check_trainable_epoch(trainable, contracts.small(data), config)
    contracts.check_trainable_round_trip(trainable, data, state, config)


@pytest.mark.parametrize("name", list(TRAINABLES))
def test_every_allowed_value_runs(bundle, name):
    dataset = next(d for t, d in PAIRS if t == name)
    contracts.check_trainable_choices(name, bundle(name, dataset), pair_config(name, dataset))


def test_every_trainable_takes_some_dataset():
    assert {t for t, _ in PAIRS} == set(TRAINABLES)


# ----------------------------------------------------------------- strategies
@pytest.mark.parametrize("budget", list(BUDGETS))
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_strategy_plan(name, budget):
    data = {**TINY_STUDY, "budget": BUDGETS[budget], "strategies": [name]}
    if name == "bohb" and budget == "one-trial":  # min_epochs = max_epochs: no rungs
        with pytest.raises(StudyError, match="budget.min_epochs: bohb stops trials at rungs"):
            parse_study(data)
        return
    study = parse_study(data)
    for seed in (0, 7):
        contracts.check_strategy_plan(name, study, seed)


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_strategy_runs_reproducibly_within_its_budget(ray_session, tmp_path, name):
    # One trial at a time because each takes both CPUs of the test session's Ray.
    study = {**TINY_STUDY, "max_concurrent_trials": 1, "resources": {"cpu": 2}}
    contracts.check_strategy_run(name, parse_study(study), tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_strategy_keeps_the_concurrency_cap_where_it_binds(ray_session, tmp_path, name):
    # Two CPUs, one per trial, at most one at a time: the cap, not the cluster, binds.
    study = {**TINY_STUDY, "max_concurrent_trials": 1, "budget": {**TINY_STUDY["budget"]}}
    study["budget"]["total_epochs"] = 8
    contracts.check_strategy_cap(name, parse_study(study), tmp_path)


# ------------------------------------------------------------------ studies
@pytest.mark.parametrize("path", STUDY_FILES, ids=[p.stem for p in STUDY_FILES])
def test_study_file_validates_and_its_plans_fit(path, monkeypatch):
    from hpo.compare import variants

    monkeypatch.setenv(ALLOW_CUSTOM_ENV, "1")  # a function trainable's study: --allow-custom
    study = load_study(path)
    # a compared study runs each variant (combination of levels) as a study of its own
    for runs in [variant.study for variant in variants(study)] if study.compare else [study]:
        for name in runs.strategies:
            contracts.check_strategy_plan(name, runs, runs.seeds[0])


# ------------------------------------- the contracts catch a broken newcomer
def build_three_outputs(config, input_shape, num_classes) -> nn.Module:
    """Broken: ignores num_classes."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 3))


class _Jittered(nn.Module):
    """Broken: an unsaved random buffer changes its outputs, so a saved model does not
    load back as it was."""

    def __init__(self, inputs: int, classes: int):
        super().__init__()
        self.linear = nn.Linear(inputs, classes)
        self.register_buffer("noise", torch.randn(classes), persistent=False)

    def forward(self, x):
        return self.linear(x.flatten(1)) + self.noise


def build_jittered(config, input_shape, num_classes) -> nn.Module:
    return _Jittered(math.prod(input_shape), num_classes)


BROKEN_TRAINABLES = {
    "wrong_head": (
        TrainableInfo(
            "toy", "tests.test_contracts:build_three_outputs", LOOP_DEFAULTS, input_ranks=(2, 3)
        ),
        "logits of shape (4, 3), expected (4, 10)",
    ),
    "unreported_metric": (
        TrainableInfo(
            "toy",
            "trainables.models:build_cnn",
            TRAINABLES["cnn"].defaults,
            metrics=(*EPOCH_METRICS, "val_f1"),
            input_ranks=(2, 3),
        ),
        "never reported the declared metrics ['val_f1']",
    ),
    "unsaved_state": (
        TrainableInfo(
            "toy", "tests.test_contracts:build_jittered", LOOP_DEFAULTS, input_ranks=(2, 3)
        ),
        "the loaded model's outputs differ",
    ),
}


@pytest.mark.parametrize("breakage", list(BROKEN_TRAINABLES))
def test_a_broken_trainable_fails_its_contract_by_name(monkeypatch, bundle, breakage):
    info, message = BROKEN_TRAINABLES[breakage]
    monkeypatch.setitem(TRAINABLES, "toy", info)
    data = contracts.small(bundle("cnn", "digits"))
    with pytest.raises(contracts.ContractError, match=r"^toy: .*" + re.escape(message)):
        contracts.check_trainable_builds("toy", data)
        state = contracts.check_trainable_epoch("toy", data)
        contracts.check_trainable_round_trip("toy", data, state)


def pixels_0_to_255() -> RawData:
    """Broken: pixels not scaled to [0, 1]."""
    rng = np.random.default_rng(0)
    return RawData(rng.integers(0, 256, (60, 1, 4, 4)).astype(np.float32), np.arange(60) % 3)


def test_a_broken_dataset_fails_its_contract_by_name(monkeypatch):
    monkeypatch.setitem(DATASETS, "toy", DatasetInfo("tests.test_contracts:pixels_0_to_255", 3))
    with pytest.raises(
        contracts.ContractError, match=r"^toy: train inputs span \[0, 255\], images"
    ):
        contracts.check_dataset("toy", {})


def plan(study, seed) -> Plan:
    """Broken strategy: plans twice its budget."""
    trials = 2 * study.budget.total_epochs // study.budget.max_epochs
    return Plan(trials, trials, trials * study.budget.max_epochs)


def tuner(study, seed) -> TunerPlan:
    return TunerPlan(plan(study, seed), {})


def test_a_broken_strategy_fails_its_contract_by_name(monkeypatch):
    monkeypatch.setitem(STRATEGIES, "toy", Strategy("toy", "tests.test_contracts", "broken"))
    study = parse_study(TINY_STUDY)
    with pytest.raises(contracts.ContractError, match=r"^toy: plans 32 epochs, the budget is 16"):
        contracts.check_strategy_plan("toy", study)
