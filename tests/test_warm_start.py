"""Warm starts (`init_from`) and run_trial's per-run config overrides."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import ListReporter
from tests.contracts import small
from trainables import HYPERPARAMETER_PREFIX
from trainables.data import load_dataset
from trainables.loop import build_model, train
from trainables.saved import save_model


@pytest.fixture(scope="module")
def digits():
    return small(load_dataset("digits", 0.2, 0.2, seed=0), 64)


@pytest.fixture
def first_step(monkeypatch):
    """The model's tensors when a trial's first epoch starts, before any optimizer step
    (clear it before the trial)."""
    import trainables.loop as loop

    seen: list[dict[str, torch.Tensor]] = []
    epoch = loop.train_epoch

    def spy(model, *args, **kwargs):
        if not seen:
            seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return epoch(model, *args, **kwargs)

    monkeypatch.setattr(loop, "train_epoch", spy)
    return seen


def trained_state(digits, **config) -> dict:
    reporter = ListReporter()
    train("lenet5", {"seed": 1, **config}, digits, reporter, max_epochs=1, threads=1)
    return reporter.states[-1]


def assert_same(loaded: dict[str, torch.Tensor], source: dict[str, torch.Tensor]) -> None:
    assert loaded.keys() == source.keys()
    assert all(torch.equal(loaded[k], source[k]) for k in source)


CONFIG = {"batch_norm": True, "input_batch_norm": True}  # BN buffers must come along too


@pytest.mark.parametrize("form", ["state_dict", "checkpoint", "model_folder"])
def test_warm_start_loads_exactly_the_source_weights(digits, tmp_path, first_step, form):
    state = trained_state(digits, **CONFIG)
    source = {k: v.clone() for k, v in state["model"].items()}
    path = tmp_path / "weights.pt"
    if form == "state_dict":
        torch.save(source, path)
    elif form == "checkpoint":
        torch.save(state, path)
    else:
        model = build_model("lenet5", CONFIG, digits)
        model.load_state_dict(source)
        path = tmp_path / "model"
        save_model(
            path,
            model,
            trainable="lenet5",
            config=CONFIG,
            input_shape=digits.input_shape,
            num_classes=digits.num_classes,
            dataset={"name": "digits"},
        )
    reporter = ListReporter()
    config = {**CONFIG, "seed": 2, "init_from": str(path)}
    first_step.clear()
    train("lenet5", config, digits, reporter, max_epochs=1, threads=1)
    assert_same(first_step[0], source)


def test_a_restored_checkpoint_wins_over_the_warm_start(digits, tmp_path, first_step):
    torch.save(trained_state(digits, **CONFIG)["model"], tmp_path / "other.pt")
    checkpoint = trained_state(digits, **CONFIG, lr=3e-3)
    resumed = ListReporter(checkpoint)
    first_step.clear()
    config = {**CONFIG, "seed": 1, "init_from": str(tmp_path / "other.pt")}
    train("lenet5", config, digits, resumed, max_epochs=2, threads=1)
    assert_same(first_step[0], checkpoint["model"])


def test_a_missing_warm_start_says_what_it_expected(digits, tmp_path):
    missing = tmp_path / "nowhere"
    message = (
        f"init_from: no such file or folder: {missing} (expected an hpo retrain model folder "
        "or a torch state-dict file)"
    )
    with pytest.raises(FileNotFoundError) as raised:
        train("lenet5", {"init_from": str(missing)}, digits, ListReporter(), max_epochs=1)
    assert str(raised.value) == message


def test_weights_of_another_model_give_a_one_line_error(digits, tmp_path):
    torch.save(build_model("cnn", {"channels": 8}, digits).state_dict(), tmp_path / "cnn.pt")
    with pytest.raises(ValueError) as raised:
        train("cnn", {"init_from": str(tmp_path / "cnn.pt")}, digits, ListReporter(), max_epochs=1)
    assert str(raised.value) == (
        f"init_from: {tmp_path / 'cnn.pt'} does not fit the model: '0.0.weight' has shape "
        "(8, 1, 3, 3), the model's (16, 1, 3, 3)"
    )
    torch.save({"conv1.weight": torch.zeros(6, 1, 5, 5)}, tmp_path / "part.pt")
    with pytest.raises(ValueError, match=r"^init_from: .* does not fit the model: no 'conv1.bias'"):
        train(
            "lenet5", {"init_from": str(tmp_path / "part.pt")}, digits, ListReporter(), max_epochs=1
        )


def test_run_trial_overrides_the_config_for_training_and_the_hp_columns(monkeypatch, digits):
    import trainables.tune_trial as tune_trial

    seen = {}

    class Reporter:
        def __init__(self, config, checkpoints):
            seen["reported"] = {f"{HYPERPARAMETER_PREFIX}{k}": v for k, v in config.items()}

    monkeypatch.setattr(tune_trial, "TuneReporter", Reporter)
    monkeypatch.setattr(tune_trial, "run", lambda name, config, *a, **k: seen.update(config))
    config = {"lr": 1e-3, "init_from": ""}
    tune_trial.run_trial(config, digits, "cnn", 1, overrides={"init_from": "/w.pt", "lr_min": 0.1})
    assert seen["init_from"] == "/w.pt" and seen["lr"] == 1e-3 and seen["lr_min"] == 0.1
    assert seen["reported"]["hp/init_from"] == "/w.pt"
    assert config == {"lr": 1e-3, "init_from": ""}  # Tune's own config is left alone
