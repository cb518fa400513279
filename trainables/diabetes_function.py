"""An example of a user's own Ray Tune function trainable, written as Ray Tune's
quick-start writes one and knowing nothing of hpo: a small PyTorch MLP regressing disease
progression one year on from ten baseline measurements (scikit-learn's bundled diabetes
data, 442 patients, offline). It reports mean squared errors, so its study minimizes.

`studies/diabetes_function.yaml` tunes it: `hpo run studies/diabetes_function.yaml
--allow-custom`. `evaluate(config, checkpoint)` beside `train` is what hpo uses for the
held-out test measurement and for `hpo retrain`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from ray import tune
from torch import nn

SPLIT_SEED = 0  # one fixed train/validation/test split: 60 % / 20 % / 20 %


def load_split(part: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One part (train, val or test) of the diabetes data, features and target
    standardized with the training part's statistics (so an MSE of 1 is the variance)."""
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(SPLIT_SEED))
    cut1, cut2 = int(0.6 * len(x)), int(0.8 * len(x))
    parts = {"train": order[:cut1], "val": order[cut1:cut2], "test": order[cut2:]}
    train = parts["train"]
    x_mean, x_std = x[train].mean(0), x[train].std(0)
    y_mean, y_std = y[train].mean(), y[train].std()
    rows = parts[part]
    return (x[rows] - x_mean) / x_std, (y[rows] - y_mean) / y_std


def make_model(config: dict) -> nn.Module:
    width = int(config.get("width", 32))
    layers: list[nn.Module] = []
    inputs = 10
    for _ in range(int(config.get("depth", 2))):
        layers += [nn.Linear(inputs, width), nn.ReLU(), nn.Dropout(config.get("dropout", 0.0))]
        inputs = width
    return nn.Sequential(*layers, nn.Linear(inputs, 1))


def make_optimizer(model: nn.Module, config: dict) -> torch.optim.Optimizer:
    lr, decay = config["lr"], config.get("weight_decay", 0.0)
    if config.get("optimizer", "adam") == "sgd":
        momentum = config.get("momentum", 0.0)  # searched only where the optimizer is sgd
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=decay)
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=decay)


def mse(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float(nn.functional.mse_loss(model(x).squeeze(1), y))


def train(config: dict) -> None:
    """One report per epoch; resumes from the last checkpoint (pause, retry, PBT)."""
    x, y = load_split("train")
    x_val, y_val = load_split("val")
    model, start = make_model(config), 0
    optimizer = make_optimizer(model, config)
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / "state.pt", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["epoch"]
    batch = int(config.get("batch_size", 32))
    for epoch in range(start + 1, 10_000):  # hpo's budget decides when a trial stops
        model.train()
        for rows in torch.randperm(len(x)).split(batch):
            optimizer.zero_grad()
            loss = nn.functional.mse_loss(model(x[rows]).squeeze(1), y[rows])
            loss.backward()
            optimizer.step()
        with tempfile.TemporaryDirectory() as folder:
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
            torch.save({**state, "epoch": epoch}, Path(folder) / "state.pt")
            tune.report(
                {"train_mse": mse(model, x, y), "val_mse": mse(model, x_val, y_val)},
                checkpoint=tune.Checkpoint.from_directory(folder),
            )


def evaluate(config: dict, checkpoint: tune.Checkpoint) -> dict:
    """The checkpoint's model on the held-out test part: {"test_mse": …}."""
    model = make_model(config)
    with checkpoint.as_directory() as folder:
        model.load_state_dict(torch.load(Path(folder) / "state.pt", weights_only=True)["model"])
    x_test, y_test = load_split("test")
    return {"test_mse": mse(model, x_test, y_test)}
