from __future__ import annotations

import torch

from trainables.data import load_dataset


def test_digits_split_sizes_and_determinism():
    a = load_dataset("digits", 0.2, 0.2, seed=0)
    b = load_dataset("digits", 0.2, 0.2, seed=0)
    c = load_dataset("digits", 0.2, 0.2, seed=1)
    assert a.sizes() == {"train": 1077, "val": 360, "test": 360}
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.train.y, b.train.y)
    assert not torch.equal(a.test.x, c.test.x)  # the seed changes the split


def test_splits_are_disjoint_and_stratified():
    data = load_dataset("digits", 0.2, 0.2, seed=3)
    rows = {tuple(x.flatten().tolist()) for x in data.train.x}
    assert not any(tuple(x.flatten().tolist()) in rows for x in data.test.x[:50])
    counts = torch.bincount(data.test.y, minlength=10)
    assert int(counts.min()) >= 34 and int(counts.max()) <= 38  # ~36 of each digit


def test_standardized_with_training_statistics():
    data = load_dataset("digits", 0.2, 0.2, seed=0)
    assert abs(float(data.train.x.mean())) < 1e-4
    assert abs(float(data.train.x.std()) - 1.0) < 1e-3


def test_mnist1d_is_generated_locally():
    data = load_dataset("mnist1d", 0.2, 0.2, seed=0)
    assert data.input_shape == (1, 40) and data.num_classes == 10
    assert sum(data.sizes().values()) == 5000
