"""`hpo tabulate`: a study's learning-curve table, recorded once as a Ray Tune experiment."""

from __future__ import annotations

import pytest
import yaml

from hpo.spec import StudyError, load_study
from hpo.tabulate import CONFIG_ID, read_table, sample_configs, tabulate
from tests.conftest import TINY_STUDY


def test_the_sample_is_seeded_and_inside_the_space(write_study, study_dict):
    study = load_study(write_study(study_dict))
    configs = sample_configs(study, 20, seed=3)
    assert configs == sample_configs(study, 20, seed=3) != sample_configs(study, 20, seed=4)
    for config in configs:
        assert set(config) == set(study.space)
        assert all(study.space[name].contains(value) for name, value in config.items())
    with pytest.raises(StudyError, match="--configs: expected a positive number"):
        sample_configs(study, 0)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_table_has_every_config_seed_and_epoch_and_is_not_trained_twice(ray_session, tmp_path):
    study = {**TINY_STUDY, "budget": {**TINY_STUDY["budget"], "max_epochs": 2}}
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump(study))
    lines: list[str] = []
    folder = tabulate(study_file, tmp_path / "results", configs=3, seeds=[0, 1], echo=lines.append)
    record, table = read_table(folder)
    assert record.status == "finished" and record.study_hash and record.rows == 3 * 2 * 2
    assert record.configs == sample_configs(load_study(study_file), 3)
    assert sorted(set(zip(table[CONFIG_ID], table["seed"], table["epoch"], strict=True))) == [
        (c, s, e) for c in range(3) for s in (0, 1) for e in (1, 2)
    ]
    configs = table[CONFIG_ID].map(record.configs.__getitem__)  # each row trained its own
    for name in ("lr", "optimizer"):
        assert table[f"config/{name}"].eq(configs.map(lambda c, key=name: c[key])).all()
    assert (table["epoch_time_s"] > 0).all() and table["val_accuracy"].between(0, 1).all()
    seed_differs = table.groupby([CONFIG_ID, "epoch"])["train_loss"].nunique()
    assert (seed_differs == 2).all()  # two training seeds, two curves

    before = (folder / "table.csv").stat().st_mtime_ns
    again: list[str] = []
    tabulate(study_file, tmp_path / "results", configs=3, seeds=[0, 1], echo=again.append)
    assert "nothing to do" in again[-1] and (folder / "table.csv").stat().st_mtime_ns == before

    study_file.write_text(yaml.safe_dump({**study, "description": "another version"}))
    with pytest.raises(StudyError, match="holds a table of another version"):
        tabulate(study_file, tmp_path / "results", configs=3, seeds=[0, 1])


def test_bad_count_is_one_line_and_writes_nothing(write_study, study_dict, tmp_path):
    from tests.conftest import run_hpo

    done = run_hpo(
        "tabulate", str(write_study(study_dict)), "--configs", "0", "--results", str(tmp_path / "r")
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "hpo tabulate: error: --configs: expected a positive number of configurations, got 0"
    ]
    assert not (tmp_path / "r").exists()
