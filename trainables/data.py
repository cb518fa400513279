"""Datasets as in-memory tensors with a fixed train/validation/test split per seed.

Small datasets live whole in memory: trials batch them by tensor indexing, which is far
cheaper than a per-sample DataLoader, and the bundle is shipped to trials once through
Ray's object store (`tune.with_parameters`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Split:
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class DataBundle:
    """One dataset split three ways; `input_shape` excludes the batch dimension."""

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def split_arrays(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> DataBundle:
    """Stratified split, then standardize with statistics of the training part only."""
    # Imported here: trial workers unpickle DataBundles from this module and never split,
    # and scikit-learn's import costs every new worker process about a second.
    from sklearn.model_selection import train_test_split

    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest,
        y_rest,
        test_size=val_fraction / (1.0 - test_fraction),
        random_state=seed,
        stratify=y_rest,
    )
    mean, std = float(x_train.mean()), float(x_train.std()) or 1.0

    def to_split(xs: np.ndarray, ys: np.ndarray) -> Split:
        features = torch.as_tensor((xs - mean) / std, dtype=torch.float32)
        return Split(features, torch.as_tensor(ys, dtype=torch.long))

    return DataBundle(
        name=name,
        train=to_split(x_train, y_train),
        val=to_split(x_val, y_val),
        test=to_split(x_test, y_test),
        num_classes=int(np.unique(y).size),
    )


def load_digits_bundle(val_fraction: float, test_fraction: float, seed: int) -> DataBundle:
    """scikit-learn's bundled 1,797 8x8 handwritten digits, as 1x8x8 images."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32)[:, None, :, :]
    return split_arrays("digits", images, digits.target, val_fraction, test_fraction, seed)


def load_mnist1d_bundle(val_fraction: float, test_fraction: float, seed: int) -> DataBundle:
    """MNIST-1D generated locally (4,000 + 1,000 signals of length 40), pooled and re-split
    so that every dataset follows the study's fractions; shape 1x40 (Conv1d)."""
    from mnist1d.data import get_dataset_args, make_dataset

    data = make_dataset(get_dataset_args())
    signals = np.concatenate([data["x"], data["x_test"]]).astype(np.float32)[:, None, :]
    labels = np.concatenate([data["y"], data["y_test"]])
    return split_arrays("mnist1d", signals, labels, val_fraction, test_fraction, seed)


def load_dataset(name: str, val_fraction: float, test_fraction: float, seed: int) -> DataBundle:
    from trainables import DATASETS, resolve

    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    return resolve(DATASETS[name])(val_fraction, test_fraction, seed)
