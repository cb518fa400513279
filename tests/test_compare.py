"""Compared factors (`compare:`): expansion into variants, validation, and compared runs."""

from __future__ import annotations

import pytest

from hpo.compare import variants
from hpo.spec import StudyError, parse_study
from hpo.strategies import STRATEGIES

TWO_FACTORS = {
    "optimizer": {
        "sgd": None,
        "momentum": {"space": {"momentum": {"uniform": {"low": 0.5, "high": 0.99}}}},
        "adam": {},
    },
    "batch_norm": [False, True],
}


def compared(study_dict, compare=TWO_FACTORS, **fields):
    return parse_study({**study_dict, "compare": compare, **fields})


def test_every_combination_of_levels_is_a_variant_study(study_dict):
    study = compared(study_dict, strategies=["random", "sha"], seeds=[0, 1, 2])
    found = variants(study)
    assert [v.label for v in found] == [
        f"optimizer={o}, batch_norm={b}"
        for o in ("sgd", "momentum", "adam")
        for b in ("False", "True")
    ]
    for variant in found:
        # the factor's value is fixed (the study's searched optimizer is replaced) …
        assert variant.study.fixed["optimizer"] == variant.levels["optimizer"]
        assert variant.study.fixed["batch_norm"] is (variant.levels["batch_norm"] == "True")
        assert "optimizer" not in variant.study.space
        # … a level's space is added, and every variant runs on the study's budget
        assert ("momentum" in variant.study.space) == (variant.levels["optimizer"] == "momentum")
        assert variant.study.budget == study.budget
        assert variant.study.strategies == ["random", "sha"]
        assert variant.study.seeds == [0, 1, 2]
        assert not variant.study.compare
    # levels × strategies × seeds runs, each planned within the same budget
    plans = [
        STRATEGIES[s].plan(v.study, k) for v in found for s in v.study.strategies for k in (0, 1, 2)
    ]
    assert len(plans) == 6 * 2 * 3
    assert all(p.planned_epochs <= study.budget.total_epochs for p in plans)
    assert len({v.slug for v in found}) == 6


def test_a_factor_that_is_no_hyperparameter_names_its_levels_settings(study_dict):
    study = compared(
        study_dict,
        compare={
            "regularizer": {
                "l2": {"space": {"weight_decay": {"loguniform": {"low": 1e-6, "high": 1e-2}}}},
                "l1": {"space": {"l1": {"loguniform": {"low": 1e-7, "high": 1e-3}}}},
                "l1_from_l2": {
                    "warm_start": "l2",
                    "space": {"l1": {"loguniform": {"low": 1e-7, "high": 1e-3}}},
                },
            },
            "dropout": [0.0, 0.5],
        },
    )
    found = variants(study)
    labels = [v.label for v in found]
    # a level that starts from another runs after it
    for variant in found:
        if "warm_start" in variant.sources:
            source = variant.sources["warm_start"]
            assert source == {**variant.levels, "regularizer": "l2"}
            source_label = ", ".join(f"{k}={v}" for k, v in source.items())
            assert labels.index(source_label) < labels.index(variant.label)
    assert "regularizer" not in found[0].study.fixed
    assert {v.study.fixed["dropout"] for v in found} == {0.0, 0.5}


@pytest.mark.parametrize(
    ("compare", "expected"),
    [
        ({"optimizer": ["adam"]}, "compare.optimizer: expected at least 2 distinct levels"),
        ({"optimizer": ["adam", "adam"]}, "compare.optimizer: expected at least 2 distinct"),
        (
            {"optimizer": ["adam", "rmsprop"]},
            "compare[optimizer=rmsprop]: fixed.optimizer: 'rmsprop' is not one of",
        ),
        (
            {"optimizer": {"adam": {"fixed": {"colour": 1}}, "sgd": None}},
            "compare[optimizer=adam]: fixed.colour: trainable 'cnn' has no hyperparameter",
        ),
        (
            {"optimizer": {"adam": {"warm_start": "sgdx"}, "sgd": None}},
            "compare.optimizer.adam.warm_start: expected another level of 'optimizer'",
        ),
        (
            {"variant": ["a", "b"]},
            "compare.variant: names a column of the results; expected another name",
        ),
        (
            {"optimizer": {"adam": {"lr_from": "adam"}, "sgd": None}},
            "compare.optimizer.adam.lr_from: expected another level",
        ),
    ],
)
def test_bad_levels_fail_in_one_line_naming_the_level(study_dict, compare, expected):
    with pytest.raises(StudyError) as error:
        compared(study_dict, compare=compare)
    assert expected in str(error.value)
    assert "\n" not in str(error.value)


def test_a_level_that_searches_nothing_runs_one_grid_trial(study_dict):
    levels = {"optimizer": {"sgd": {"fixed": {"lr": 0.05}}, "adam": {"fixed": {"lr": 0.001}}}}
    data = {**study_dict, "space": {}, "compare": levels}
    with pytest.raises(StudyError, match=r"space: must name at least one.*strategies: \[grid\]"):
        parse_study({**data, "strategies": ["random"]})
    study = parse_study({**data, "strategies": ["grid"]})
    for variant in variants(study):
        assert STRATEGIES["grid"].plan(variant.study, 0).planned_trials == 1
    with pytest.raises(StudyError, match="space: must name at least one"):
        parse_study({**study_dict, "space": {}})


def test_export_of_a_compared_folder_names_its_variant_folders(study_dict, tmp_path):
    from hpo.records import StudyRecord, write_study_record
    from hpo.results import load_results

    study = compared(study_dict)
    write_study_record(tmp_path, StudyRecord(study=study, study_file="s.yaml", study_hash="0"))
    (tmp_path / "variants" / variants(study)[0].slug).mkdir(parents=True)
    with pytest.raises(StudyError, match=r"one folder per variant; use .*variants/optimizer-sgd"):
        load_results(tmp_path)


@pytest.mark.parametrize("command", ["tabulate", "replay"])
def test_tabulate_and_replay_refuse_a_compared_study(command, study_dict, write_study, capsys):
    from hpo.cli import main

    path = write_study({**study_dict, "compare": TWO_FACTORS})
    assert main([command, str(path)]) == 2
    assert f"compare: hpo {command} takes a study without compared factors" in (
        capsys.readouterr().err
    )
