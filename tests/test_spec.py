from __future__ import annotations

import pytest

from hpo.spec import StudyError, load_study, parse_study, resolved
from hpo.strategies import STRATEGIES


def test_default_study_is_valid():
    from tests.conftest import REPO

    study = load_study(REPO / "studies" / "digits_cnn.yaml")
    assert study.trainable == "cnn" and study.dataset.name == "digits"
    assert study.strategies == list(STRATEGIES) and study.seeds == [0, 1, 2]
    assert study.budget.max_epochs == 9 and study.budget.reduction_factor == 3


def test_defaults_are_filled_in(write_study, study_dict):
    del study_dict["metric"], study_dict["seeds"]
    study = load_study(write_study(study_dict))
    data = resolved(study)
    assert data["metric"] == {"name": "val_accuracy", "mode": "max"}
    assert data["strategies"] == list(STRATEGIES)  # default: every registered strategy
    assert data["seeds"] == [0]
    assert data["resources"] == {"cpu": 1.0, "gpu": 0.0}
    assert data["space"]["lr"] == {"loguniform": {"low": 1e-3, "high": 3e-2}}


def _set(study: dict, dotted: str, value) -> dict:
    *parents, last = dotted.split(".")
    node = study
    for key in parents:
        node = node.setdefault(key, {})
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return study


_DELETE = object()

BAD_FIELDS = [
    ("budgte", {"max_epochs": 3}, "budgte: unknown field"),
    ("trainable", "transformer", "trainable: unknown trainable 'transformer'"),
    ("dataset.name", "imagenet", "dataset.name: unknown dataset 'imagenet'"),
    ("strategies", ["random", "bayes"], "strategies: unknown strategy 'bayes'"),
    ("space", {}, "space: must name at least one hyperparameter"),
    ("space.lr", {"uniform": {"low": 0.1, "high": 0.01}}, "space.lr.uniform: low must be < high"),
    ("space.lr", {"loguniform": {"low": 0, "high": 0.1}}, "space.lr.loguniform: low must be > 0"),
    ("budget.max_epochs", -3, "budget.max_epochs: Input should be greater than 0"),
    ("budget.total_epochs", 2, "budget: total_epochs must be >= max_epochs"),
    ("budget.min_epochs", 9, "budget: min_epochs must be <= max_epochs"),
    ("metric.name", "f1", "metric.name: trainable 'cnn' does not report 'f1'"),
    (
        "space.lrr",
        {"uniform": {"low": 0.1, "high": 1}},
        "space.lrr: trainable 'cnn' has no hyperparameter 'lrr'",
    ),
    (
        "space.lr",
        {"uniform": {"low": 0.1, "high": 1}, "choice": [0.1]},
        "space.lr: expected exactly one of uniform, loguniform, randint, lograndint,"
        " quniform, qloguniform, choice (got uniform, choice)",
    ),
    (
        "space.optimizer",
        {"choice": ["adam", "rmsprop"]},
        "space.optimizer: 'rmsprop' is not one of",
    ),
    (
        "space.lr",
        {"loguniform": {"low": 1e-3, "high": 1e-1}, "grid": [0.5]},
        "space.lr: grid values [0.5] lie outside the loguniform domain",
    ),
    ("fixed.lr", 0.1, "fixed.lr: is both fixed and searched"),
    ("fixed.activation", "gelu", "fixed.activation: 'gelu' is not one of"),
    ("seeds", [1, 1], "seeds: seeds must be distinct"),
    ("dataset.test_fraction", 1.5, "dataset.test_fraction: Input should be less than 1"),
    ("resources.cpu", 0, "resources.cpu: Input should be greater than 0"),
    ("name", _DELETE, "name: required field is missing"),
    ("space.lr.loguniform.hgh", 1, "space.lr.loguniform.hgh: unknown field"),
    (
        "strategy_options",
        {"optuna": {"n_startup": 4}},
        "strategy_options.optuna.n_startup: unknown option of 'optuna'; expected some of",
    ),
    (  # a PBT option given to the TPE strategy
        "strategy_options",
        {"optuna": {"perturbation_interval": 2}},
        "strategy_options.optuna.perturbation_interval: unknown option of 'optuna'",
    ),
    (
        "strategy_options",
        {"random": {"n_startup_trials": 4}},
        "strategy_options.random: strategy 'random' takes no options",
    ),
    (
        "strategy_options",
        {"optuna": {"n_startup_trials": 0}},
        "strategy_options.optuna.n_startup_trials: Input should be greater than 0",
    ),
    ("strategy_options", {"tpe": {}}, "strategy_options.tpe: unknown strategy"),
]


@pytest.mark.parametrize(
    ("strategy", "field", "value", "message"),
    [
        (
            "pbt",
            "space",
            {"optimizer": {"choice": ["momentum", "adam"]}},
            "strategies: pbt perturbs continuous hyperparameters, and the space has none",
        ),
        ("bohb", "budget.min_epochs", 4, "budget.min_epochs: bohb stops trials at rungs"),
    ],
)
def test_a_strategy_the_study_cannot_run_is_refused(
    write_study, study_dict, strategy, field, value, message
):
    path = write_study(_set({**study_dict, "strategies": ["random", strategy]}, field, value))
    with pytest.raises(StudyError) as caught:
        load_study(path)
    assert str(caught.value).startswith(f"{path}: {message}"), caught.value


def test_options_of_a_strategy_the_study_does_not_run(write_study, study_dict):
    study_dict.update(strategies=["random"], strategy_options={"pbt": {"quantile_fraction": 0.5}})
    with pytest.raises(StudyError, match=r"strategy_options\.pbt: 'pbt' is not in this study"):
        load_study(write_study(study_dict))


def test_strategy_options_reach_the_plan(write_study, study_dict):
    study_dict.update(strategy_options={"optuna": {"n_startup_trials": 3}})
    study = load_study(write_study(study_dict))
    assert STRATEGIES["optuna"].plan(study, 0).notes["startup_trials"] == 3
    study_dict["strategy_options"] = {}
    default = load_study(write_study(study_dict))  # 16 // 4 = 4 trials: a third, at least 2
    assert STRATEGIES["optuna"].plan(default, 0).notes["startup_trials"] == 2


@pytest.mark.parametrize(("field", "value", "message"), BAD_FIELDS, ids=[b[0] for b in BAD_FIELDS])
def test_bad_field_gives_one_line_naming_it(write_study, study_dict, field, value, message):
    path = write_study(_set(study_dict, field, value))
    with pytest.raises(StudyError) as caught:
        load_study(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: {message}"), text
    assert "\n" not in text


def test_a_trainable_gets_only_data_of_the_shape_it_takes(write_study, study_dict):
    study_dict.update(trainable="resnet_transfer", fixed={}, dataset={"name": "mnist1d"})
    with pytest.raises(StudyError) as caught:
        load_study(write_study(study_dict))
    assert caught.value.args[0].endswith(
        "dataset.name: mnist1d gives C×L signals; trainable 'resnet_transfer' takes C×H×W images"
    )


def test_missing_file(tmp_path):
    with pytest.raises(StudyError, match=r"nope\.yaml: no such study file"):
        load_study(tmp_path / "nope.yaml")


def test_yaml_syntax_error_names_line(write_study):
    path = write_study("name: x\nspace: [unclosed\n")
    with pytest.raises(StudyError, match=r"invalid YAML at line 3, column 1"):
        load_study(path)


def test_top_level_must_be_mapping(write_study):
    with pytest.raises(StudyError, match="expected a mapping of study fields"):
        load_study(write_study("- a\n- b\n"))


def test_default_strategies_are_those_the_study_can_run(write_study, study_dict):
    study_dict["budget"] = {"max_epochs": 3, "min_epochs": 3, "total_epochs": 9}
    study_dict["space"] = {"optimizer": {"choice": ["momentum", "adam"]}}
    study = load_study(write_study(study_dict))
    assert study.strategies == [s for s in STRATEGIES if s not in ("bohb", "pbt")]


PATHOLOGY_ERRORS = [
    (
        "mlp",
        {"name": "fn_abs"},
        {},
        r"fixed\.loss: fn_abs is a regression dataset: set loss: squared_error",
    ),
    ("mlp", {"name": "fn_abs"}, {"loss": "squared_error"}, None),
    (
        "neuron",
        {"name": "neuron_point"},
        {},
        r"dataset\.val_fraction: neuron_point cannot be split",
    ),
    ("neuron", {"name": "neuron_point", "val_fraction": 0, "test_fraction": 0}, {}, None),
    (
        "cnn",
        {"name": "digits"},
        {"regression_head": True},
        r"fixed\.regression_head: digits has no regression targets",
    ),
    (
        "neuron",
        {"name": "digits"},
        {},
        r"dataset\.name: digits gives C×H×W images; trainable 'neuron' takes feature vectors",
    ),
    (
        "neuron",
        {"name": "moons"},
        {},
        r"dataset\.name: moons is a classification dataset; neuron takes regression",
    ),
    (
        "mlp",
        {"name": "moons", "val_fraction": 0.2, "test_fraction": 0},
        {},
        r"both above 0, or both 0",
    ),
]


@pytest.mark.parametrize(("trainable", "dataset", "fixed", "error"), PATHOLOGY_ERRORS)
def test_a_trainable_and_dataset_that_cannot_train_together_fail_in_one_line(
    tmp_path, trainable, dataset, fixed, error
):
    path = tmp_path / "study.yaml"
    study = {
        "name": "s",
        "trainable": trainable,
        "dataset": dataset,
        "fixed": fixed,
        "space": {},
        "budget": {"max_epochs": 1, "total_epochs": 1},
        "strategies": ["grid"],
    }
    import yaml

    path.write_text(yaml.safe_dump(study))
    if error is None:
        load_study(path)
        return
    with pytest.raises(StudyError, match=error) as raised:
        load_study(path)
    assert "\n" not in str(raised.value)


# Richer domains and conditions: each bad form is one line naming the field.
SGD_MOMENTUM = {"uniform": {"low": 0.5, "high": 0.99}, "when": {"optimizer": "momentum"}}
BAD_SPACES = [
    (
        "dropout",
        {"quniform": {"low": 0, "high": 0.5, "q": 0}},
        "space.dropout.quniform: q must be > 0 (got 0.0)",
    ),
    (
        "dropout",
        {"quniform": {"low": 0, "high": 0.5, "q": -0.1}},
        "space.dropout.quniform: q must be > 0 (got -0.1)",
    ),
    (
        "dropout",
        {"quniform": {"low": 0.05, "high": 0.5, "q": 0.1}},
        "space.dropout.quniform: low and high must be multiples of q (got low=0.05, q=0.1)",
    ),
    (
        "weight_decay",
        {"qloguniform": {"low": 1e-4, "high": 0.01005, "q": 1e-4}},
        "space.weight_decay.qloguniform: low and high must be multiples of q (got high=0.01005",
    ),
    (
        "weight_decay",
        {"qloguniform": {"low": 0, "high": 0.01, "q": 1e-4}},
        "space.weight_decay.qloguniform: low must be > 0 (got 0.0)",
    ),
    (
        "hidden_units",
        {"lograndint": {"low": 0, "high": 64}},
        "space.hidden_units.lograndint: low must be > 0 (got 0)",
    ),
    (
        "dropout",
        {"quniform": {"low": 0, "high": 0.5, "q": 0.1}, "grid": [0.15]},
        "space.dropout: grid values [0.15] lie outside the quniform domain",
    ),
    (
        "momentum",
        {**SGD_MOMENTUM, "when": {"optimzer": "momentum"}},
        "space.momentum.when.optimzer: not a searched choice parameter; expected one of "
        "['optimizer']",
    ),
    (
        "momentum",
        {**SGD_MOMENTUM, "when": {"lr": 0.01}},
        "space.momentum.when.lr: not a searched choice parameter",
    ),
    (
        "momentum",
        {**SGD_MOMENTUM, "when": {"optimizer": ["momentum", "nesterov"]}},
        "space.momentum.when.optimizer: 'nesterov' is not one of its choices ['momentum', 'adam']",
    ),
    (
        "momentum",
        {**SGD_MOMENTUM, "when": {"optimizer": []}},
        "space.momentum.when: optimizer: expected at least one value",
    ),
    (
        "momentum",
        {**SGD_MOMENTUM, "when": {"momentum": 0.9}},
        "space.momentum.when.momentum: not a searched choice parameter",
    ),
]


@pytest.mark.parametrize(("name", "entry", "message"), BAD_SPACES)
def test_bad_domain_or_condition_gives_one_line_naming_it(study_dict, name, entry, message):
    study_dict["space"][name] = entry
    with pytest.raises(StudyError) as caught:
        parse_study(study_dict)
    text = str(caught.value)
    assert text.startswith(f"study: {message}"), text
    assert "\n" not in text


def test_a_condition_on_a_fixed_parameter_is_refused(study_dict):
    study_dict["fixed"]["optimizer"] = study_dict["space"].pop("optimizer")["choice"][0]
    study_dict["space"]["momentum"] = SGD_MOMENTUM
    with pytest.raises(StudyError, match=r"space\.momentum\.when\.optimizer: not a searched"):
        parse_study(study_dict)


def test_conditions_may_chain_but_not_form_a_cycle(study_dict):
    study_dict["space"].update(
        activation={"choice": ["relu", "tanh"], "when": {"optimizer": "momentum"}},
        momentum={**SGD_MOMENTUM, "when": {"activation": "tanh"}},  # a chain
    )
    study = parse_study(study_dict)
    assert study.space["momentum"].when == {"activation": ["tanh"]}  # one value → a list
    study_dict["space"]["optimizer"]["when"] = {"activation": "relu"}
    with pytest.raises(StudyError) as caught:
        parse_study(study_dict)
    assert "when" in str(caught.value) and "conditions form a cycle (" in str(caught.value)
    assert str(caught.value).startswith("study: space.optimizer.when.activation:")


def test_pbt_needs_a_continuous_parameter_every_trial_has(study_dict):
    study_dict.pop("strategies", None)
    study_dict["space"] = {
        "optimizer": {"choice": ["momentum", "adam"]},
        "momentum": SGD_MOMENTUM,
        "dropout": {"quniform": {"low": 0, "high": 0.5, "q": 0.1}},
    }
    assert "pbt" not in parse_study(study_dict).strategies  # the default leaves it out
    study_dict["strategies"] = ["random", "pbt"]
    with pytest.raises(StudyError, match=r"strategies: pbt perturbs continuous"):
        parse_study(study_dict)
