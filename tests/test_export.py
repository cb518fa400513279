"""Export selects by validation only; retrain round trip gives back exactly what it measured."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import yaml

from hpo.export import export, select
from hpo.records import BestTrial, RunRecord, StudyRecord, write_study_record
from hpo.spec import StudyError, load_study, parse_study
from tests.conftest import TINY_STUDY

NAN = math.nan


def rows(strategy, seed, trial, vals, status="finished", start=0):
    return [
        {
            "strategy": strategy,
            "seed": seed,
            "trial_id": trial,
            "status": status,
            "epoch": epoch,
            "val_accuracy": val,
            "cum_epochs": start + epoch,
            "wall_s": 0.5 * (start + epoch),
            "config/lr": 0.01 if trial.endswith("a") else 0.02,
            "config/optimizer": "adam",
        }
        for epoch, val in enumerate(vals, start=1)
    ]


@pytest.fixture
def trials() -> pd.DataFrame:
    table = (
        rows("random", 0, "r0a", [0.90, 0.95, 0.95])  # tie: the earlier epoch 2 is chosen
        + rows("random", 0, "r0b", [0.999, NAN], status="diverged", start=3)  # never chosen
        + rows("random", 1, "r1a", [0.93, 0.95])
        + rows("sha", 0, "s0a", [0.96, 0.97])
        + rows("sha", 1, "s1a", [0.96])
        + rows("sha", 1, "s1b", [0.955, 0.96], start=1)  # ties s1a's 0.96 later in the run
    )
    return pd.DataFrame(table)


def finished(strategy, seed, trial_id, value, test, config=None) -> RunRecord:
    best = BestTrial(
        trial_id=trial_id,
        epoch=2,
        cum_epochs=2,
        metric="val_accuracy",
        value=value,
        config=config or {},
        test=test,
    )
    return RunRecord(strategy=strategy, seed=seed, started=0.0, status="finished", best=best)


@pytest.fixture
def study_dir(tmp_path, trials):
    study = parse_study({**TINY_STUDY, "strategies": ["random", "sha"], "seeds": [0, 1]})
    config = {"lr": 0.01, "optimizer": "adam", "channels": 8, "hidden_units": 16}
    runs = [
        # test accuracy of sha seed 1 is the highest: selection must not look at it
        finished("random", 0, "r0a", 0.95, {"test_accuracy": 0.91}),
        finished("sha", 0, "s0a", 0.97, {"test_accuracy": 0.94, "test_loss": 0.2}, config),
        finished("sha", 1, "s1a", 0.96, {"test_accuracy": 0.999}),
    ]
    record = StudyRecord(
        study=study,
        study_file="tiny.yaml",
        study_hash="abc",
        versions={"ray": "x"},
        runs={run.key: run for run in runs},
    )
    write_study_record(tmp_path, record)
    trials.to_csv(tmp_path / "trials.csv", index=False)
    return tmp_path


def test_default_is_best_strategy_by_mean_validation(trials):
    row = select(trials, "val_accuracy", "max")
    # means over seeds: sha (0.97 + 0.96) / 2 = 0.965 > random (0.95 + 0.95) / 2
    assert (row["strategy"], row["seed"], row["trial_id"], row["epoch"]) == ("sha", 0, "s0a", 2)


def test_ties_pick_the_earliest_epoch_and_diverged_trials_never(trials):
    row = select(trials, "val_accuracy", "max", strategy="random", seed=0)
    assert (row["trial_id"], row["epoch"]) == ("r0a", 2)  # not the diverged 0.999
    tied = select(trials, "val_accuracy", "max", strategy="sha", seed=1)
    assert tied["trial_id"] == "s1a"


def test_min_mode_and_seed_choice(trials):
    trials["val_loss"] = 1 - trials["val_accuracy"]
    row = select(trials, "val_loss", "min", strategy="random")
    assert (row["seed"], row["trial_id"]) == (0, "r0a")  # seeds tie at 0.05: lower seed


def test_export_writes_config_with_provenance(study_dir):
    path = export(study_dir)
    document = yaml.safe_load(path.read_text())
    assert path.name == "best-sha-seed0.yaml"
    assert document["kind"] == "hpo-best-config"
    assert (document["strategy"], document["seed"], document["trial_id"]) == ("sha", 0, "s0a")
    assert document["validation"] == {
        "metric": "val_accuracy",
        "mode": "max",
        "value": 0.97,
        "epoch": 2,
        "max_epochs": 4,
    }
    assert document["test"] == {
        "accuracy": 0.94,
        "loss": 0.2,
        "metrics": {"test_accuracy": 0.94, "test_loss": 0.2},  # every test metric measured
    }
    assert document["config"]["channels"] == 8
    assert document["dataset"]["split_seed"] == 0 and document["study_hash"] == "abc"
    assert [p.name for p in study_dir.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_export_json_and_as_study(study_dir, tmp_path):
    as_json = export(study_dir, fmt="json", out=tmp_path / "best.json")
    assert json.loads(as_json.read_text())["trial_id"] == "s0a"
    study_file = export(study_dir, as_study_file=True, out=tmp_path / "one.yaml")
    study = load_study(study_file)  # a valid study
    assert study.strategies == ["random"] and study.seeds == [0]
    assert study.budget.total_epochs == study.budget.max_epochs == 4
    assert {**study.fixed, **{k: p.choice[0] for k, p in study.space.items()}} == {
        "lr": 0.01,
        "optimizer": "adam",
        "channels": 8,
        "hidden_units": 16,
    }


def test_nothing_finished_is_an_error_and_writes_nothing(study_dir):
    trials = pd.read_csv(study_dir / "trials.csv")
    trials["val_accuracy"] = NAN
    trials.to_csv(study_dir / "trials.csv", index=False)
    before = sorted(p.name for p in study_dir.iterdir())
    with pytest.raises(StudyError, match="no trial has a finite val_accuracy"):
        export(study_dir)
    assert sorted(p.name for p in study_dir.iterdir()) == before


def test_unknown_strategy_and_missing_folder(study_dir, tmp_path):
    with pytest.raises(StudyError, match="--strategy: 'tpe'"):
        export(study_dir, strategy="tpe")
    with pytest.raises(StudyError, match="no such folder"):
        export(tmp_path / "nothing")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_round_trip_export_retrain_load(study_dir, tmp_path, ray_session):
    from hpo.retrain import predict, retrain
    from trainables import load_model
    from trainables.data import load_dataset
    from trainables.loop import evaluate

    exported = export(study_dir)
    out = retrain(exported, epochs=3, seeds=[0, 1], out=tmp_path / "retrained")
    metrics = json.loads((out / "metrics.json").read_text())
    assert [s["seed"] for s in metrics["seeds"]] == [0, 1]
    assert metrics["epochs"] == 3 and metrics["trained_on"] == "train+val"
    assert (out / "curve.png").stat().st_size > 0
    assert len(pd.read_csv(out / "curves.csv")) == 6
    data = load_dataset("digits", 0.2, 0.2, seed=0)  # the exported run's split
    for seed_result, folder in zip(metrics["seeds"], ["seed-0", "seed-1"], strict=True):
        model = load_model(out / folder)
        assert not model.training
        _, accuracy = evaluate(model, data.test)
        assert accuracy == seed_result["test_accuracy"]  # exactly what was measured
    assert predict(out)["test_accuracy"] == metrics["seeds"][0]["test_accuracy"]
    mean = sum(s["test_accuracy"] for s in metrics["seeds"]) / 2
    assert metrics["test_accuracy"]["mean"] == pytest.approx(mean)
    assert 0.8 < mean <= 1.0


def test_retrain_rejects_a_file_that_is_not_an_export(tmp_path):
    from hpo.retrain import load_export

    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(TINY_STUDY))
    with pytest.raises(StudyError, match="not an hpo export"):
        load_export(path)


def test_a_comparison_of_two_variants_over_sizes(study_dir, ray_session):
    from scipy import stats

    from hpo.retrain_compare import Variant, compare_retrains

    exported = export(study_dir)
    variants = [Variant("as-is"), Variant("slow", {"lr": 0.0005})]
    out = compare_retrains(
        exported, variants, [5, None], epochs=2, seeds=[0, 1, 2], out=study_dir / "compare"
    )
    rows = pd.read_csv(out / "comparison.csv")
    assert len(rows) == 2 * 2 * 3 and set(rows["status"]) == {"finished"}
    assert set(rows.loc[rows["labels_per_class"] == "5", "train_examples"]) == {50}
    assert set(rows["epochs"]) == {2}
    document = json.loads((out / "comparison.json").read_text())
    assert document["labels_per_class"] == ["5", "all"]
    for pair in document["paired"]:  # the first variant minus the other, paired by seed
        size = rows[rows["labels_per_class"] == pair["labels_per_class"]]
        wide = size.pivot(index="seed", columns="variant", values="test_accuracy")
        assert pair["mean_difference"] == pytest.approx((wide["as-is"] - wide["slow"]).mean())
        assert pair["t_test_p"] == pytest.approx(
            stats.ttest_rel(wide["as-is"], wide["slow"]).pvalue
        )
    assert (out / "comparison.png").stat().st_size > 0
    metrics = json.loads((out / "5" / "slow" / "metrics.json").read_text())
    assert metrics["config"]["lr"] == 0.0005 and metrics["trained_on"] == "train"
    page = (study_dir / "report" / "index.html").read_text()  # the study's report shows it
    assert "Retrained variants compared" in page and "compare/comparison.png" in page
