"""Datasets in their real on-disk formats (IDX, CIFAR-10 python batches, ImageFolder),
written small into tmp folders and read back through load_dataset and torchvision."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from hpo.cli import main
from hpo.spec import StudyError, parse_study
from tests.dataset_files import (
    CIFAR_BATCHES,
    CIFAR_NAMES,
    MNIST_FILES,
    accept_test_checksums,
    write_cifar,
    write_mnist,
)
from trainables import DatasetError
from trainables.data import load_dataset, options_from


def _all(bundle) -> tuple[np.ndarray, np.ndarray]:
    parts = (bundle.train, bundle.val, bundle.test)
    return np.concatenate([p.x.numpy() for p in parts]), np.concatenate(
        [p.y.numpy() for p in parts]
    )


def _as_written(x: np.ndarray) -> list[bytes]:
    """Loaded [0, 1] pixels back to the written bytes (fails if they are not k/255)."""
    pixels = x * 255
    assert np.allclose(pixels, np.round(pixels), atol=1e-3)
    return [row.tobytes() for row in np.round(pixels).astype(np.uint8).reshape(len(x), -1)]


def _label_of(written: np.ndarray, labels: np.ndarray) -> dict[bytes, int]:
    return {pixels.tobytes(): int(label) for pixels, label in zip(written, labels, strict=True)}


@pytest.fixture(scope="module")
def grey_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    mnist = write_mnist(root, "MNIST", gz=False)
    fashion = write_mnist(root, "FashionMNIST", gz=True)
    return root, {"mnist": mnist, "fashion_mnist": fashion}


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_files_read_back_pixel_for_pixel(grey_root, name):
    root, written = grey_root
    images, labels = written[name]
    data = load_dataset(name, 0.2, 0.2, 0, scale="unit", data_dir=root)
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    assert data.sizes() == {"train": 150, "val": 50, "test": 50}  # train and t10k pooled
    x, y = _all(data)
    assert x.min() == 0.0 and x.max() == 1.0
    assert np.array_equal(np.bincount(y, minlength=10), np.bincount(labels, minlength=10))
    label_of = _label_of(images, labels)
    assert [label_of[row] for row in _as_written(x)] == y.tolist()
    assert len(data.class_names) == 10


def test_gzipped_idx_files_are_decompressed_beside_them(grey_root):
    raw = grey_root[0] / "FashionMNIST" / "raw"
    load_dataset("fashion_mnist", 0.2, 0.2, 0, data_dir=grey_root[0])
    assert all((raw / name).is_file() and (raw / f"{name}.gz").is_file() for name in MNIST_FILES)


def test_standardize_uses_the_training_statistics(grey_root):
    data = load_dataset("mnist", 0.2, 0.2, 0, data_dir=grey_root[0])
    assert abs(float(data.train.x.mean())) < 1e-4 and abs(float(data.train.x.std()) - 1) < 1e-3


def test_data_dir_from_the_environment(grey_root, monkeypatch):
    monkeypatch.setenv("HPO_DATA_DIR", str(grey_root[0]))
    assert sum(load_dataset("mnist", 0.2, 0.2, 0).sizes().values()) == 250


def test_classes_are_kept_and_relabelled_in_the_listed_order(grey_root):
    root, written = grey_root
    images, labels = written["mnist"]
    data = load_dataset("mnist", 0.2, 0.2, 0, scale="unit", data_dir=root, classes=[7, 2])
    assert data.num_classes == 2 and data.class_names == ("7 - seven", "2 - two")
    x, y = _all(data)
    assert len(y) == int(np.isin(labels, [7, 2]).sum())
    label_of = _label_of(images, labels)
    assert [{7: 0, 2: 1}[label_of[row]] for row in _as_written(x)] == y.tolist()


def test_cifar10_batches_read_back_pixel_for_pixel(tmp_path, monkeypatch):
    rows, labels = write_cifar(tmp_path)
    accept_test_checksums(monkeypatch, tmp_path / "cifar-10-batches-py")
    data = load_dataset("cifar10", 0.2, 0.2, 1, scale="unit", data_dir=tmp_path)
    assert data.input_shape == (3, 32, 32) and data.num_classes == 10
    assert sum(data.sizes().values()) == 180 and data.class_names == tuple(CIFAR_NAMES)
    x, y = _all(data)
    assert x.min() >= 0.0 and x.max() <= 1.0
    label_of = _label_of(rows, labels)
    assert [label_of[row] for row in _as_written(x)] == y.tolist()  # channels R, G, B
    subset = load_dataset("cifar10", 0.2, 0.2, 1, data_dir=tmp_path, classes=[3, 5, 1])
    assert subset.class_names == ("cat", "dog", "automobile") and subset.num_classes == 3


def test_cifar10_tarball_is_extracted(tmp_path, monkeypatch):
    import shutil

    write_cifar(tmp_path / "staging")
    accept_test_checksums(monkeypatch, tmp_path / "staging" / "cifar-10-batches-py")
    shutil.make_archive(str(tmp_path / "data" / "cifar-10-python"), "gztar", tmp_path / "staging")
    data = load_dataset("cifar10", 0.2, 0.2, 0, data_dir=tmp_path / "data")
    assert sum(data.sizes().values()) == 180


def test_cifar10_files_that_fail_torchvisions_checksums(tmp_path):
    write_cifar(tmp_path)
    with pytest.raises(DatasetError, match="do not match torchvision's checksums"):
        load_dataset("cifar10", 0.2, 0.2, 0, data_dir=tmp_path)


def test_image_folder_of_pngs_is_resized_to_rgb(tmp_path):
    from PIL import Image

    for i in range(10):  # a colour class and a grey one, of differing sizes
        (tmp_path / "pics" / "cat").mkdir(parents=True, exist_ok=True)
        (tmp_path / "pics" / "dog").mkdir(exist_ok=True)
        Image.new("RGB", (20 + i, 12), (255, 0, 0)).save(tmp_path / "pics" / "cat" / f"{i}.png")
        Image.new("L", (9, 30 - i), 128).save(tmp_path / "pics" / "dog" / f"{i}.png")
    data = load_dataset(
        "image_folder", 0.2, 0.2, 0, scale="unit", path=tmp_path / "pics", image_size=16
    )
    assert data.input_shape == (3, 16, 16) and data.class_names == ("cat", "dog")
    x, y = _all(data)
    assert np.bincount(y).tolist() == [10, 10]
    assert np.allclose(x[y == 0].mean(axis=(0, 2, 3)), [1, 0, 0])
    assert np.allclose(x[y == 1], 128 / 255)


def test_missing_idx_files_say_which_files_go_where(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    with pytest.raises(DatasetError) as error:
        load_dataset("mnist", 0.2, 0.2, 0, data_dir=tmp_path)
    message = str(error.value)
    assert message.startswith(f"dataset mnist: no MNIST files in {raw} (expected ")
    assert all(name in message for name in MNIST_FILES) and "optionally .gz" in message
    assert "dataset.data_dir / --data-dir / HPO_DATA_DIR" in message
    assert "dataset.download: true" in message and "\n" not in message


def test_partly_missing_idx_files_are_named(tmp_path):
    write_mnist(tmp_path, "FashionMNIST", gz=False)
    (tmp_path / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetError, match="missing in .*FashionMNIST/raw: t10k-labels-idx1-ubyte"):
        load_dataset("fashion_mnist", 0.2, 0.2, 0, data_dir=tmp_path)


def test_missing_cifar10_batches_say_which_files_go_where(tmp_path):
    with pytest.raises(DatasetError) as error:
        load_dataset("cifar10", 0.2, 0.2, 0, data_dir=tmp_path)
    message = str(error.value)
    assert f"no CIFAR-10 files in {tmp_path / 'cifar-10-batches-py'}" in message
    assert all(name in message for name in (*CIFAR_BATCHES, "batches.meta"))


def test_image_folder_without_images(tmp_path):
    with pytest.raises(DatasetError, match="no folder .*absent"):
        load_dataset("image_folder", 0.2, 0.2, 0, path=tmp_path / "absent", image_size=16)
    with pytest.raises(DatasetError, match="no class folders in"):
        load_dataset("image_folder", 0.2, 0.2, 0, path=tmp_path, image_size=16)


def test_options_a_dataset_does_not_take(tmp_path):
    with pytest.raises(DatasetError, match="dataset digits: takes no path option"):
        load_dataset("digits", 0.2, 0.2, 0, path=tmp_path)
    with pytest.raises(DatasetError, match="classes \\[12\\] are not among its labels 0..9"):
        load_dataset("digits", 0.2, 0.2, 0, classes=[1, 12])


@pytest.mark.parametrize(
    ("dataset", "error"),
    [
        ({"name": "image_folder", "image_size": 32}, "dataset.path: required for image_folder"),
        ({"name": "image_folder", "path": "pics"}, "dataset.image_size: required for image_folder"),
        (
            {"name": "mnist", "path": "pics"},
            "dataset.path: not used by mnist (only by image_folder)",
        ),
        ({"name": "digits", "download": True}, "dataset.download: not used by digits"),
        ({"name": "mnist", "classes": [3, 3]}, "dataset.classes: expected at least 2 distinct"),
        ({"name": "image_folder", "path": "p", "image_size": 4}, "dataset.image_size: Input"),
    ],
)
def test_spec_rejects_options_that_do_not_fit(study_dict, dataset, error):
    with pytest.raises(StudyError, match=re.escape(error)):
        parse_study({**study_dict, "dataset": dataset})


def test_spec_options_reach_the_loader(study_dict):
    spec = {"name": "mnist", "data_dir": "d", "classes": [1, 0], "labels_per_class": 3}
    options = parse_study({**study_dict, "dataset": spec}).dataset.loader_options()
    assert options == {
        "data_dir": "d",
        "download": False,
        "path": None,
        "image_size": None,
        "classes": [1, 0],
        "labels_per_class": 3,
    }
    saved = {**spec, "val_fraction": 0.2, "path": None}  # as in an export's dataset section
    assert options_from(saved) == {"data_dir": "d", "classes": [1, 0], "labels_per_class": 3}


def test_cli_missing_files_are_one_line_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HPO_DATA_DIR", "")  # main() sets it from --data-dir; restored after
    model = tmp_path / "model"
    model.mkdir()
    dataset = {"name": "mnist", "val_fraction": 0.2, "test_fraction": 0.2, "split_seed": 0}
    description = {"trainable": "cnn", "config": {}, "input_shape": [1, 28, 28], "dataset": dataset}
    (model / "model.json").write_text(json.dumps({**description, "num_classes": 10}))
    assert main(["predict", str(model), "--data-dir", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hpo predict: error: dataset mnist: no MNIST files in {tmp_path}/empty")
    assert err.count("\n") == 1
