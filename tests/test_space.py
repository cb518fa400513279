from __future__ import annotations

import math

import pytest
from ray.tune.search.sample import Categorical, Float, Integer

from hpo.space import discretize, grid_size, grid_space, grid_values, tune_space
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
