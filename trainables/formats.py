"""Datasets read from files in their usual on-disk formats, through torchvision's readers.

mnist, fashion_mnist and cifar10 come from `torchvision.datasets` under a root folder
(`dataset.data_dir`, --data-dir, $HPO_DATA_DIR, else ./data): their official train and
test parts are pooled and re-split by the study's fractions (the project's convention, as
for mnist1d), so a study's test split is not the official test set. image_folder reads
`torchvision.datasets.ImageFolder(path)`: one sub-folder of images per class.

Missing or unreadable files raise `DatasetError` with one line saying which files go where.
"""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from trainables import DatasetError
from trainables.data import RawData

HINT = (
    "put them there, set dataset.data_dir / --data-dir / HPO_DATA_DIR, "
    "or set dataset.download: true on a machine with network"
)
# What torchvision's readers raise on files that are present but not what they expect.
UNREADABLE = (AssertionError, EOFError, KeyError, OSError, TypeError, ValueError)


def mnist_arrays(*, data_dir: Path, download: bool) -> RawData:
    """MNIST's 70,000 28x28 grey digits as 1x28x28 images in [0, 1]."""
    from torchvision.datasets import MNIST

    return _idx_arrays("mnist", MNIST, data_dir, download)


def fashion_mnist_arrays(*, data_dir: Path, download: bool) -> RawData:
    """Fashion-MNIST's 70,000 28x28 grey clothing images as 1x28x28 images in [0, 1]."""
    from torchvision.datasets import FashionMNIST

    return _idx_arrays("fashion_mnist", FashionMNIST, data_dir, download)


def cifar10_arrays(*, data_dir: Path, download: bool) -> RawData:
    """CIFAR-10's 60,000 32x32 colour images (the python version) as 3x32x32 in [0, 1]."""
    from torchvision.datasets import CIFAR10

    folder = data_dir / CIFAR10.base_folder
    expected = [name for name, _ in CIFAR10.train_list + CIFAR10.test_list]
    expected.append(CIFAR10.meta["filename"])
    archive = data_dir / CIFAR10.filename
    if not folder.exists() and archive.exists():  # the tarball is there but not extracted
        shutil.unpack_archive(archive, data_dir)
    _check_files("cifar10", "CIFAR-10", folder, expected, download, "the python version")
    parts = [
        _read("cifar10", folder, download, partial(CIFAR10, data_dir, train, download=download))
        for train in (True, False)
    ]
    pixels = np.concatenate([part.data for part in parts])  # N×32×32×3 uint8
    x = pixels.transpose(0, 3, 1, 2).astype(np.float32, order="C")
    x /= 255
    labels = np.concatenate([np.asarray(part.targets) for part in parts])
    return RawData(x, labels.astype(np.int64), tuple(parts[0].classes))


def image_folder_arrays(*, path: str | Path, image_size: int) -> RawData:
    """Every image under `path/<class>/`, as RGB resized to image_size², in [0, 1];
    labels follow the sorted class folder names (torchvision's ImageFolder)."""
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    root = Path(path).expanduser().resolve()
    example = f"one sub-folder of images per class, e.g. {root}/cat/001.png"
    if not root.is_dir():
        raise DatasetError(
            f"dataset image_folder: no folder {root} (dataset.path; expected {example})"
        )
    if not any(entry.is_dir() for entry in root.iterdir()):
        raise DatasetError(f"dataset image_folder: no class folders in {root} (expected {example})")
    resize = transforms.Compose(
        [transforms.Resize((image_size, image_size)), transforms.ToTensor()]
    )
    try:
        folder = ImageFolder(root, transform=resize)  # its loader converts to RGB
    except FileNotFoundError as error:  # e.g. a class folder without images
        raise DatasetError(f"dataset image_folder: {root}: {error}".rstrip(". ")) from None
    x = np.empty((len(folder), 3, image_size, image_size), dtype=np.float32)
    for i, (file, _) in enumerate(folder.samples):
        try:
            x[i] = folder[i][0].numpy()
        except UNREADABLE as error:
            raise DatasetError(f"dataset image_folder: cannot read {file} ({error})") from None
    return RawData(x, np.asarray(folder.targets, dtype=np.int64), tuple(folder.classes))


def _idx_arrays(name: str, dataset: type, root: Path, download: bool) -> RawData:
    """Both parts of an MNIST-like torchvision dataset (IDX files in <root>/<Class>/raw)."""
    raw = root / dataset.__name__ / "raw"
    # The exact names torchvision checks: its resources without the .gz.
    expected = [os.path.splitext(os.path.basename(url))[0] for url, _ in dataset.resources]
    _gunzip_missing(raw, expected)
    _check_files(name, dataset.__name__, raw, expected, download, "optionally .gz")
    parts = [
        _read(name, raw, download, partial(dataset, root, train, download=download))
        for train in (True, False)
    ]
    x = np.concatenate([part.data.numpy() for part in parts])[:, None].astype(np.float32)
    x /= 255
    labels = np.concatenate([part.targets.numpy() for part in parts])
    return RawData(x, labels, tuple(parts[0].classes))


def _gunzip_missing(folder: Path, names: Sequence[str]) -> None:
    """Decompress `name.gz` where only it is there: torchvision reads the plain files."""
    for name in names:
        target, packed = folder / name, folder / f"{name}.gz"
        if target.exists() or not packed.exists():
            continue
        partial = folder / f"{name}.part"  # renamed when complete: no half-written file
        with gzip.open(packed, "rb") as source, open(partial, "wb") as sink:
            shutil.copyfileobj(source, sink)
        os.replace(partial, target)


def _check_files(
    name: str, title: str, folder: Path, expected: Sequence[str], download: bool, note: str
) -> None:
    if download:  # torchvision fetches what is missing
        return
    missing = [file for file in expected if not (folder / file).is_file()]
    if not missing:
        return
    what = (
        f"no {title} files in {folder}"
        if len(missing) == len(expected)
        else f"{title} files missing in {folder}: {', '.join(missing)}"
    )
    raise DatasetError(f"dataset {name}: {what} (expected {', '.join(expected)}, {note}); {HINT}")


def _read(name: str, folder: Path, download: bool, make: Callable[[], Any]) -> Any:
    """A torchvision dataset object, its failures turned into one-line DatasetErrors."""
    try:
        return make()
    except (RuntimeError, *UNREADABLE) as error:
        lines = str(error).strip().splitlines() or [type(error).__name__]
        detail = " ".join(dict.fromkeys([lines[0], lines[-1]]))  # e.g. what, then the cause
        if download and isinstance(error, (RuntimeError, OSError)):
            raise DatasetError(
                f"dataset {name}: download into {folder} failed ({detail}); put the files "
                "there by hand or set dataset.data_dir / --data-dir / HPO_DATA_DIR"
            ) from None
        if isinstance(error, RuntimeError) and "corrupted" in detail:  # present (checked)
            detail = "the files do not match torchvision's checksums: corrupted or incomplete?"
        raise DatasetError(
            f"dataset {name}: cannot read the files in {folder} ({detail})"
        ) from None
