from __future__ import annotations

import json
import math

import numpy as np
import pytest
from ray.tune.search.sample import Categorical, Float, Integer

from hpo.space import (
    discretize,
    finite_points,
    grid_points,
    grid_size,
    grid_space,
    grid_values,
    max_points,
    optuna_define_by_run,
    optuna_distribution,
    sample_points,
    tune_domain,
    tune_space,
    unit_features,
)
from hpo.spec import Param


def p(**kwargs) -> Param:
    return Param.model_validate(kwargs)


def test_tune_domains_keep_bounds_and_log_scale():
    space = tune_space(
        {
            "lr": p(loguniform={"low": 1e-4, "high": 1e-1}),
            "dropout": p(uniform={"low": 0.0, "high": 0.5}),
            "channels": p(randint={"low": 8, "high": 33}),
            "optimizer": p(choice=["sgd", "adam"]),
        },
        fixed={"conv_layers": 2},
    )
    assert space["conv_layers"] == 2
    lr, dropout, channels, optimizer = (
        space[k] for k in ("lr", "dropout", "channels", "optimizer")
    )
    assert isinstance(lr, Float) and (lr.lower, lr.upper) == (1e-4, 1e-1)
    assert "LogUniform" in type(lr.sampler).__name__
    assert isinstance(dropout, Float) and "Log" not in type(dropout.sampler).__name__
    assert isinstance(channels, Integer) and (channels.lower, channels.upper) == (8, 33)
    assert isinstance(optimizer, Categorical) and optimizer.categories == ["sgd", "adam"]


def test_discretize_is_log_spaced_for_log_domains():
    values = discretize(p(loguniform={"low": 1e-5, "high": 1e-1}), 4)
    assert values == pytest.approx([10**-4.5, 10**-3.5, 10**-2.5, 10**-1.5], rel=1e-5)
    ratios = [b / a for a, b in zip(values, values[1:], strict=False)]
    assert all(math.isclose(r, 10.0) for r in ratios)


def test_discretize_linear_integer_and_midpoint():
    assert discretize(p(uniform={"low": 0.0, "high": 0.6}), 3) == [0.1, 0.3, 0.5]
    assert discretize(p(uniform={"low": 0.0, "high": 0.5}), 1) == [0.25]
    assert discretize(p(loguniform={"low": 1e-4, "high": 1e-2}), 1) == [1e-3]
    assert discretize(p(randint={"low": 1, "high": 5}), 10) == [1, 2, 3, 4]  # high exclusive
    assert discretize(p(randint={"low": 0, "high": 100}), 2) == [25, 75]


def test_grid_fits_budget_and_uses_explicit_values():
    space = {
        "lr": p(loguniform={"low": 1e-4, "high": 1e-1}),
        "dropout": p(uniform={"low": 0.0, "high": 0.5}),
        "optimizer": p(choice=["sgd", "adam"]),
        "channels": p(choice=[8, 16, 32], grid=[16]),
    }
    values = grid_values(space, max_trials=9)
    assert values["optimizer"] == ["sgd", "adam"]
    assert values["channels"] == [16]
    assert grid_size(values) <= 9
    # continuous dimensions share the remaining room evenly: 2 x 2 x 2 = 8 <= 9
    assert len(values["lr"]) == 2 and len(values["dropout"]) == 2
    assert grid_size(grid_values(space, max_trials=50)) <= 50


def test_grid_respects_how_many_values_a_dimension_has():
    space = {
        "a": p(randint={"low": 0, "high": 2}),  # only 2 distinct values
        "b": p(uniform={"low": 0, "high": 1}),
    }
    values = grid_values(space, max_trials=7)
    assert values["a"] == [0, 1]
    assert values["b"] == pytest.approx([1 / 6, 0.5, 5 / 6], rel=1e-5)  # 2 x 4 would not fit


def test_grid_space_marks_every_dimension():
    space = grid_space({"lr": [0.1, 0.01], "optimizer": ["sgd"]}, fixed={"seed": 3})
    assert space["seed"] == 3
    assert space["lr"] == {"grid_search": [0.1, 0.01]}
    assert space["optimizer"] == {"grid_search": ["sgd"]}


def test_optuna_distributions_match_the_study_domains():
    from hpo.space import optuna_distribution

    lr = optuna_distribution(p(loguniform={"low": 1e-4, "high": 1e-1}))
    assert (lr.low, lr.high, lr.log) == (1e-4, 1e-1, True)
    width = optuna_distribution(p(randint={"low": 8, "high": 33}))
    assert (width.low, width.high) == (8, 32)  # Tune's high is exclusive, Optuna's inclusive
    assert optuna_distribution(p(choice=["sgd", "adam"])).choices == ("sgd", "adam")
    assert optuna_distribution(p(uniform={"low": 0.0, "high": 0.5})).log is False


# ------------------------------------------------------------ richer domains
QUNIFORM = {"quniform": {"low": 0.1, "high": 0.5, "q": 0.1}}
QLOG = {"qloguniform": {"low": 1e-4, "high": 1e-2, "q": 1e-4}}
LOGINT = {"lograndint": {"low": 2, "high": 300}}


def on_q_grid(value: float, domain: dict) -> bool:
    """Within [low, high], a multiple of q, and the short float it stands for."""
    (bounds,) = domain.values()
    steps = value / bounds["q"]
    return (
        bounds["low"] <= value <= bounds["high"]
        and abs(steps - round(steps)) < 1e-9
        and value == float(f"{value:.12g}")
        and len(repr(value)) <= 8
    )


def test_ray_domains_of_quantized_and_log_integer_kinds_stay_on_their_grid():
    rng = np.random.RandomState(0)
    for domain in (QUNIFORM, QLOG):
        values = tune_domain(p(**domain)).sample(size=500, random_state=rng)
        assert all(on_q_grid(v, domain) for v in values)
        assert {0.1, 0.5} <= set(values) if domain is QUNIFORM else True  # both bounds reached
    ints = tune_domain(p(**LOGINT)).sample(size=500, random_state=rng)
    assert all(float(v).is_integer() and 2 <= v < 300 for v in ints)
    assert np.median(ints) < 40  # log scale: the geometric middle is ~24


def test_discretize_new_kinds_gives_distinct_grid_values():
    assert discretize(p(**QUNIFORM), 2) == [0.2, 0.4]
    assert discretize(p(**QUNIFORM), 9) == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert max_points(p(**QUNIFORM)) == 5 and max_points(p(**QLOG)) == 100
    for points in (1, 3, 7, 40, 100):
        values = discretize(p(**QLOG), points)
        assert len(set(values)) == len(values) == points
        assert all(on_q_grid(v, QLOG) for v in values)
    assert discretize(p(**QLOG), 3) == [0.0002, 0.001, 0.0047]  # log-spaced
    ints = discretize(p(lograndint={"low": 1, "high": 10}), 8)  # crowded at the low end
    assert ints == sorted(set(ints)) and len(ints) == 8 and ints[0] >= 1 and ints[-1] <= 9
    assert discretize(p(**LOGINT), 3) == [5, 24, 130]  # exp of the log cells' centres
    assert max_points(p(**LOGINT)) == 298


def test_optuna_distributions_of_the_new_kinds():
    integers = optuna_distribution(p(**LOGINT))
    assert (integers.low, integers.high, integers.log) == (2, 299, True)
    steps = optuna_distribution(p(**QUNIFORM))
    assert (steps.low, steps.high, steps.step, steps.log) == (0.1, 0.5, 0.1, False)
    log = optuna_distribution(p(**QLOG))  # Optuna has no log scale with a step
    assert (log.low, log.high, log.step, log.log) == (1e-4, 1e-2, None, True)


def ask_and_tell(space: dict, asks: int, seed: int = 0, startup: int = 8) -> list[dict]:
    """Drive the define-by-run search with a real TPE study; the objective prefers
    momentum ≈ 0.9 and high lr, so the model phase has something to learn."""
    import optuna
    from optuna.samplers import TPESampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize", sampler=TPESampler(seed=seed, n_startup_trials=startup)
    )
    search, configs = optuna_define_by_run(space), []
    for _ in range(asks):
        trial = study.ask()
        config = search(trial)
        configs.append(config)
        study.tell(trial, -abs(config.get("momentum", 0.5) - 0.9) + math.log(config["lr"]))
    return configs


def test_define_by_run_proposes_each_domain_natively_on_its_grid():
    space = {
        "lr": p(loguniform={"low": 1e-4, "high": 1e-1}),
        "dropout": p(**QUNIFORM),
        "weight_decay": p(**QLOG),
        "width": p(**LOGINT),
    }
    configs = ask_and_tell(space, 30)
    assert all(list(c) == list(space) for c in configs)
    assert all(
        on_q_grid(c["dropout"], QUNIFORM) and on_q_grid(c["weight_decay"], QLOG) for c in configs
    )
    assert all(isinstance(c["width"], int) and 2 <= c["width"] < 300 for c in configs)


# ------------------------------------------------------------ conditions
def conditional_space() -> dict[str, Param]:
    return {
        "lr": p(loguniform={"low": 1e-4, "high": 1e-1}),
        "optimizer": p(choice=["sgd", "momentum", "adam"]),
        "momentum": p(uniform={"low": 0.5, "high": 0.99}, when={"optimizer": "momentum"}),
        # a chain: dampening only for SGD with momentum, and only without Nesterov
        "nesterov": p(choice=[True, False], when={"optimizer": "momentum"}),
        "dampening": p(**QUNIFORM, when={"nesterov": False, "optimizer": ["momentum"]}),
    }


def well_formed(config: dict) -> bool:
    """Each conditional parameter present exactly where its condition holds."""
    momentum = config["optimizer"] == "momentum"
    dampening = momentum and config.get("nesterov") is False
    return (
        ("momentum" in config) == momentum
        and ("nesterov" in config) == momentum
        and ("dampening" in config) == dampening
    )


def test_grid_points_are_the_valid_combinations_and_are_counted_as_such():
    space = conditional_space()
    values = grid_values(space, max_trials=12)
    points = grid_points(space, values)
    assert all(well_formed(point) for point in points)
    assert len(points) == grid_size(values, space) <= 12
    assert len({json.dumps(point, sort_keys=True) for point in points}) == len(points)
    # lr × (sgd + adam + momentum × (nesterov + no nesterov × dampening)): never the product
    lr, momentum, dampening = (len(values[n]) for n in ("lr", "momentum", "dampening"))
    assert len(points) == lr * (2 + momentum * (1 + dampening)) < grid_size(values)
    assert points[0] == {"lr": values["lr"][0], "optimizer": "sgd"}


def test_a_parameter_that_is_never_active_does_not_grow_the_grid():
    space = {
        **conditional_space(),
        "optimizer": p(choice=["sgd", "momentum", "adam"], grid=["adam"]),
    }
    values = grid_values(space, max_trials=6)
    assert grid_points(space, values) == [{"lr": v, "optimizer": "adam"} for v in values["lr"]]
    assert len(values["lr"]) == 6 and len(values["momentum"]) == 1


def test_samples_have_only_active_parameters_and_repeat_for_a_seed():
    space = conditional_space()
    configs = sample_points(space, 60, seed=5)
    assert configs == sample_points(space, 60, seed=5) != sample_points(space, 60, seed=6)
    assert all(well_formed(c) for c in configs)
    assert {c["optimizer"] for c in configs} == {"sgd", "momentum", "adam"}
    assert any("dampening" in c for c in configs)
    assert all(on_q_grid(c["dampening"], QUNIFORM) for c in configs if "dampening" in c)
    assert all(
        type(c["lr"]) is float and type(c["nesterov"]) is bool for c in configs if "nesterov" in c
    )


def test_optuna_suggests_a_conditional_parameter_only_where_it_is_active():
    configs = ask_and_tell(conditional_space(), 30, startup=8)
    assert all(well_formed(c) for c in configs)
    assert {c["optimizer"] for c in configs[8:]} >= {"momentum"}  # TPE's phase has them too
    assert any("momentum" in c for c in configs[8:]) and any("momentum" not in c for c in configs)


def test_finite_points_and_features_of_a_conditional_space():
    space = {
        "optimizer": p(choice=["sgd", "momentum"]),
        "nesterov": p(choice=[True, False], when={"optimizer": "momentum"}),
    }
    assert finite_points(space) == [
        {"optimizer": "sgd"},
        {"optimizer": "momentum", "nesterov": True},
        {"optimizer": "momentum", "nesterov": False},
    ]
    space["momentum"] = p(uniform={"low": 0.5, "high": 1.0}, when={"optimizer": "momentum"})
    assert finite_points(space) is None
    half = 1 / math.sqrt(2)
    assert unit_features(space, {"optimizer": "sgd"}) == [half, 0.0, 0.0, 0.0, 0.0]
    full = {"optimizer": "momentum", "nesterov": False, "momentum": 0.75}
    assert unit_features(space, full) == [0.0, half, 0.0, half, 0.5]


def test_a_conditional_parameter_has_no_tune_domain_in_param_space():
    space = tune_space(conditional_space(), fixed={"channels": 8})
    assert set(space) == {"channels", "lr", "optimizer"}


def test_a_table_samples_a_conditional_space_with_only_active_parameters(study_dict):
    from hpo.spec import parse_study
    from hpo.tabulate import sample_configs

    study_dict["space"]["optimizer"] = {"choice": ["sgd", "momentum", "adam"]}
    study_dict["space"]["momentum"] = {
        "uniform": {"low": 0.5, "high": 0.99},
        "when": {"optimizer": "momentum"},
    }
    study = parse_study(study_dict)
    configs = sample_configs(study, 30, seed=2)
    assert configs == sample_configs(study, 30, seed=2)
    assert all(("momentum" in c) == (c["optimizer"] == "momentum") for c in configs)
    assert any("momentum" in c for c in configs)
