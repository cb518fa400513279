"""Datasets as in-memory tensors with a fixed train/validation/test split per seed.

Small datasets live whole in memory: trials batch them by tensor indexing, which is far
cheaper than a per-sample DataLoader, and the bundle is shipped to trials once through
Ray's object store (`tune.with_parameters`).

Every registered loader (trainables.DATASETS) returns all samples unsplit as `RawData`,
images scaled to [0, 1]; `load_dataset` then keeps the study's `classes`, splits and
scales the inputs, the same way for every dataset.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from trainables import DatasetError

SCALES: tuple[str, ...] = ("standardize", "unit")


class RawData(NamedTuple):
    """What a registered loader returns: every sample, before any split."""

    x: np.ndarray  # float32, N×C×H×W images in [0, 1] (N×C×L signals, N×F feature vectors)
    y: np.ndarray  # integer labels 0..k-1; float32 N×k targets for a regression dataset
    class_names: tuple[str, ...] = ()
    targets: np.ndarray | None = None  # float32 N×k targets of a second, regression head


@dataclass(frozen=True)
class Split:
    x: torch.Tensor
    y: torch.Tensor  # int64 labels, or float32 N×k targets (a regression dataset)
    t: torch.Tensor | None = None  # float32 N×k targets of a second, regression head

    def __len__(self) -> int:
        return len(self.y)

    @property
    def regression(self) -> bool:
        return self.y.is_floating_point()

    def to(self, device: torch.device | str) -> Split:
        t = None if self.t is None else self.t.to(device)
        return Split(self.x.to(device), self.y.to(device), t)

    def take(self, index: torch.Tensor) -> Split:
        """The samples at `index` (a mini-batch)."""
        return Split(self.x[index], self.y[index], None if self.t is None else self.t[index])


@dataclass(frozen=True)
class DataBundle:
    """One dataset split three ways; `input_shape` excludes the batch dimension. For a
    regression dataset `num_classes` is the number of outputs a model needs (targets per
    sample)."""

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    class_names: tuple[str, ...] = ()  # label i's name, where the dataset has names

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    @property
    def regression(self) -> bool:
        return self.train.regression

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}

    def to(self, device: torch.device | str) -> DataBundle:
        """The same bundle with every split's tensors on `device` (no copy when there)."""
        parts = {name: getattr(self, name).to(device) for name in ("train", "val", "test")}
        return replace(self, **parts)


def split_arrays(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    *,
    scale: str = "standardize",
    class_names: Sequence[str] = (),
    targets: np.ndarray | None = None,
    labels_per_class: int | None = None,
    subset_seed: int | None = None,
) -> DataBundle:
    """Stratified split (plain for a regression dataset, whose `y` is float), the training
    part cut to `labels_per_class` examples of each class if given (drawn with
    `subset_seed`, default `seed`); then
    `scale="standardize"` standardizes every part with the training part's mean and std,
    `scale="unit"` leaves the values as they are. With both fractions 0 every part is the
    whole set: a toy study of how fast a net fits its training data."""
    # Imported here: trial workers unpickle DataBundles from this module and never split,
    # and scikit-learn's import costs every new worker process about a second.
    from sklearn.model_selection import train_test_split

    if scale not in SCALES:
        raise ValueError(f"scale: expected one of {SCALES}, got {scale!r}")
    # Split indices, not arrays: each part is then copied once (CIFAR-10 is 0.7 GB as float32).
    regression = np.issubdtype(y.dtype, np.floating)
    if val_fraction == 0 and test_fraction == 0:
        train = val = test = np.arange(len(y))
    else:
        try:
            rest, test = train_test_split(
                np.arange(len(y)),
                test_size=test_fraction,
                random_state=seed,
                stratify=None if regression else y,
            )
            train, val = train_test_split(
                rest,
                test_size=val_fraction / (1.0 - test_fraction),
                random_state=seed,
                stratify=None if regression else y[rest],
            )
        except ValueError as error:  # too few samples (of a class) for the fractions
            raise DatasetError(
                f"dataset {name}: {len(y)} samples cannot be split by the study's fractions "
                f"({str(error).splitlines()[0]})"
            ) from None
    if labels_per_class is not None:
        draw = seed if subset_seed is None else subset_seed
        train = labelled_subset(name, train, y, labels_per_class, draw)
    mean, std = 0.0, 1.0
    if scale == "standardize":
        x_train = np.asarray(x[train], dtype=np.float32)
        mean, std = float(x_train.mean()), float(x_train.std()) or 1.0
        del x_train  # CIFAR-10's training part is 0.4 GB: one copy at a time

    def to_split(index: np.ndarray) -> Split:
        xs = np.array(x[index], dtype=np.float32)  # this part's own copy
        if scale == "standardize":
            xs -= mean
            xs /= std
        label_type = torch.float32 if regression else torch.long
        head = None if targets is None else torch.as_tensor(targets[index], dtype=torch.float32)
        return Split(torch.as_tensor(xs), torch.as_tensor(y[index], dtype=label_type), head)

    return DataBundle(
        name=name,
        train=to_split(train),
        val=to_split(val),
        test=to_split(test),
        num_classes=int(y.shape[1]) if regression else int(np.unique(y).size),
        class_names=tuple(class_names),
    )


def labelled_subset(
    name: str, train: np.ndarray, y: np.ndarray, per_class: int, seed: int
) -> np.ndarray:
    """`per_class` indices of each class of `train`, drawn at random with `seed` (the
    same examples for every config of a study seed), in `train`'s order."""
    if np.issubdtype(y.dtype, np.floating):
        raise DatasetError(f"dataset.labels_per_class: {name} has no class labels")
    classes, counts = np.unique(y[train], return_counts=True)
    if per_class > counts.min():
        raise DatasetError(
            f"dataset.labels_per_class: {per_class} is more than the {counts.min()} training "
            f"examples of {name}'s smallest class (label {classes[counts.argmin()]})"
        )
    shuffled = np.random.default_rng(seed).permutation(train)
    keep = np.concatenate([shuffled[y[shuffled] == c][:per_class] for c in classes])
    return np.sort(keep)


def digits_arrays() -> RawData:
    """scikit-learn's bundled 1,797 8x8 handwritten digits, as 1x8x8 images in [0, 1]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32)[:, None, :, :] / 16  # grey levels 0..16
    return RawData(images, digits.target, tuple(str(d) for d in range(10)))


def mnist1d_arrays() -> RawData:
    """MNIST-1D generated locally (4,000 + 1,000 signals of length 40), pooled and re-split
    so that every dataset follows the study's fractions; shape 1x40 (Conv1d)."""
    from mnist1d.data import get_dataset_args, make_dataset

    data = make_dataset(get_dataset_args())
    signals = np.concatenate([data["x"], data["x_test"]]).astype(np.float32)[:, None, :]
    labels = np.concatenate([data["y"], data["y_test"]])
    return RawData(signals, labels, tuple(str(d) for d in range(10)))


def data_root(data_dir: str | Path | None = None) -> Path:
    """Where torchvision-format files live: `data_dir`, else $HPO_DATA_DIR, else ./data."""
    return Path(data_dir or os.environ.get("HPO_DATA_DIR") or "data").expanduser().resolve()


def select_classes(name: str, raw: RawData, classes: Sequence[int]) -> RawData:
    """Only the samples labelled `classes`, relabelled 0..k-1 in the listed order."""
    if np.issubdtype(raw.y.dtype, np.floating):
        raise DatasetError(f"dataset {name}: a regression dataset has no classes to select")
    wanted = [int(c) for c in classes]
    labels = np.unique(raw.y)
    if len(wanted) < 2 or len(set(wanted)) != len(wanted):
        raise DatasetError(f"dataset {name}: classes must list at least 2 distinct labels")
    absent = [c for c in wanted if c not in labels]
    if absent:
        raise DatasetError(
            f"dataset {name}: classes {absent} are not among its labels "
            f"{int(labels.min())}..{int(labels.max())}"
        )
    keep = np.isin(raw.y, wanted)
    relabel = np.full(int(labels.max()) + 1, -1, dtype=np.int64)
    relabel[wanted] = np.arange(len(wanted))
    names = tuple(raw.class_names[c] for c in wanted) if raw.class_names else ()
    targets = None if raw.targets is None else raw.targets[keep]
    return RawData(raw.x[keep], relabel[raw.y[keep]], names, targets)


def options_from(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The loader options of a dataset section as saved in exports and model descriptions
    (absent or null ones left out), ready for `load_dataset(..., **options)`."""
    from trainables import LOADER_OPTIONS

    return {key: spec[key] for key in LOADER_OPTIONS if spec.get(key) is not None}


def load_dataset(
    name: str,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    *,
    scale: str = "standardize",
    data_dir: str | Path | None = None,
    download: bool = False,
    path: str | Path | None = None,
    image_size: int | None = None,
    classes: Sequence[int] | None = None,
    labels_per_class: int | None = None,
    subset_seed: int | None = None,
) -> DataBundle:
    """Load a registered dataset, keep `classes`, split it by `seed`, keep
    `labels_per_class` training examples of each class (drawn with `subset_seed`, default
    `seed`), and scale it.

    `data_dir` (torchvision formats; default $HPO_DATA_DIR, else ./data) and `download`
    apply to mnist, fashion_mnist and cifar10; `path` and `image_size` to image_folder.
    Raises DatasetError with one line saying what is missing where."""
    from trainables import DATASETS, resolve

    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    info = DATASETS[name]
    given = {"data_dir": data_dir, "download": download, "path": path, "image_size": image_size}
    for option, value in given.items():
        if option not in info.options and value is not None and value is not False:
            raise DatasetError(f"dataset {name}: takes no {option} option")
        if option in info.required and value is None:
            raise DatasetError(f"dataset {name}: {option} is required")
    options = {option: given[option] for option in info.options}
    if "data_dir" in options:
        options["data_dir"] = data_root(data_dir)
    raw = resolve(info.loader)(**options)
    if classes is not None:
        raw = select_classes(name, raw, classes)
    return split_arrays(
        name,
        raw.x,
        raw.y,
        val_fraction,
        test_fraction,
        seed,
        scale=scale,
        class_names=raw.class_names,
        targets=raw.targets,
        labels_per_class=labels_per_class,
        subset_seed=subset_seed,
    )
