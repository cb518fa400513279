"""Small datasets written in their real on-disk formats (IDX, CIFAR-10 python batches,
ImageFolder PNGs), from scikit-learn's digits, for tests that read them through
torchvision; `DATASET_FILES` gives every registered dataset its example."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from trainables import DATASETS

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CIFAR_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer"]
CIFAR_NAMES += ["dog", "frog", "horse", "ship", "truck"]


def digit_images(count: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` distinct scikit-learn digits upscaled to size×size uint8 (0..255)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    _, first = np.unique(digits.images.reshape(len(digits.images), -1), axis=0, return_index=True)
    chosen = np.sort(first)[:count]
    factor = size // 8
    margin = (size - 8 * factor) // 2
    big = np.kron(digits.images[chosen], np.ones((factor, factor)))
    big = np.pad(big, ((0, 0), (margin, margin), (margin, margin)))
    return np.round(big * 255 / 16).astype(np.uint8), digits.target[chosen].astype(np.uint8)


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> None:
    """IDX: big-endian magic (0x0000 08=uint8, number of dims), then each dim as uint32."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


def write_mnist(root: Path, folder: str, gz: bool, count: int = 250, train: int = 200):
    images, labels = digit_images(count, 28)
    raw = root / folder / "raw"
    parts = {"train": slice(0, train), "t10k": slice(train, count)}
    for prefix, part in parts.items():
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images[part], gz)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels[part], gz)
    return images, labels


def cifar_rows(count: int) -> tuple[np.ndarray, np.ndarray]:
    """N×3072 rows as in the real batches: the red, green, then blue 32×32 planes."""
    grey, labels = digit_images(count, 32)
    planes = np.stack([grey, grey.transpose(0, 2, 1), 255 - grey], axis=1)  # distinct channels
    return planes.reshape(count, 3072), labels


def write_cifar(root: Path, per_batch: int = 30) -> tuple[np.ndarray, np.ndarray]:
    rows, labels = cifar_rows(per_batch * len(CIFAR_BATCHES))
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i, name in enumerate(CIFAR_BATCHES):
        part = slice(i * per_batch, (i + 1) * per_batch)
        # The real batches were pickled by Python 2 with str keys (b"data" when read with
        # encoding="bytes", "data" with torchvision's encoding="latin1").
        batch = {"batch_label": name, "data": rows[part], "labels": labels[part].tolist()}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {"label_names": CIFAR_NAMES, "num_cases_per_batch": per_batch, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return rows, labels


def accept_test_checksums(monkeypatch, folder: Path) -> None:
    """torchvision verifies CIFAR-10's published md5s; tell it those of these small files."""
    from torchvision.datasets import CIFAR10

    def md5(name: str) -> str:
        return hashlib.md5((folder / name).read_bytes()).hexdigest()

    monkeypatch.setattr(CIFAR10, "train_list", [[n, md5(n)] for n in CIFAR_BATCHES[:5]])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5("test_batch")]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5("batches.meta")})


def write_image_folder(root: Path, per_class: int = 10, size: int = 12) -> Path:
    """An ImageFolder tree of PNGs: a red class and a grey one."""
    from PIL import Image

    for i in range(per_class):
        (root / "pics" / "cat").mkdir(parents=True, exist_ok=True)
        (root / "pics" / "dog").mkdir(exist_ok=True)
        Image.new("RGB", (size + i, size), (255, 0, 0)).save(root / "pics" / "cat" / f"{i}.png")
        Image.new("L", (size, size + i), 128).save(root / "pics" / "dog" / f"{i}.png")
    return root / "pics"


def _no_files(root: Path, monkeypatch: Any) -> dict[str, Any]:
    return {}


def _mnist(folder: str) -> Callable[[Path, Any], dict[str, Any]]:
    def write(root: Path, monkeypatch: Any) -> dict[str, Any]:
        write_mnist(root, folder, gz=folder == "FashionMNIST")
        return {"data_dir": root}

    return write


def _cifar(root: Path, monkeypatch: Any) -> dict[str, Any]:
    write_cifar(root)
    accept_test_checksums(monkeypatch, root / "cifar-10-batches-py")
    return {"data_dir": root}


def _image_folder(root: Path, monkeypatch: Any) -> dict[str, Any]:
    return {"path": write_image_folder(root), "image_size": 16}


# Per registered dataset: write its example files under a folder, return the loader
# options that read them. A dataset registered without an entry fails the contract suite.
DATASET_FILES: dict[str, Callable[[Path, Any], dict[str, Any]]] = {
    "digits": _no_files,
    "mnist1d": _no_files,
    "mnist": _mnist("MNIST"),
    "fashion_mnist": _mnist("FashionMNIST"),
    "cifar10": _cifar,
    "image_folder": _image_folder,
    **{
        name: _no_files
        for name, info in DATASETS.items()
        if info.loader.startswith("trainables.toy:")
    },
}
