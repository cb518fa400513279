"""Few labelled examples (`dataset.labels_per_class`) and `hpo retrain --variant`: a
seeded stratified subset of the training split only, refused in one line where it cannot
be, and a comparison of variants whose paired tests are scipy's on the measured seeds."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from hpo.retrain_compare import Variant, parse_sizes, parse_variant
from hpo.spec import StudyError, parse_study
from tests.conftest import TINY_STUDY
from trainables import DatasetError
from trainables.data import load_dataset


def test_labels_per_class_cuts_the_training_split_only():
    whole = load_dataset("digits", 0.2, 0.2, 0)
    few = load_dataset("digits", 0.2, 0.2, 0, labels_per_class=5)
    assert np.bincount(few.train.y.numpy()).tolist() == [5] * 10
    for part in ("val", "test"):  # untouched
        assert torch_equal(getattr(few, part).y, getattr(whole, part).y)
    again = load_dataset("digits", 0.2, 0.2, 0, labels_per_class=5)
    other = load_dataset("digits", 0.2, 0.2, 0, labels_per_class=5, subset_seed=1)
    assert torch_equal(few.train.x, again.train.x)  # seeded
    assert not torch_equal(few.train.x, other.train.x)  # another seed, other examples
    assert torch_equal(few.test.y, other.test.y)  # ... the same test split


def torch_equal(a, b) -> bool:
    return a.shape == b.shape and bool((a == b).all())


def test_more_labels_than_the_smallest_class_has_is_one_line():
    with pytest.raises(DatasetError, match=r"^dataset.labels_per_class: 500 is more than the \d+"):
        load_dataset("digits", 0.2, 0.2, 0, labels_per_class=500)


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        ({"name": "digits", "labels_per_class": 0}, "dataset.labels_per_class"),
        ({"name": "digits", "labels_per_class": -3}, "dataset.labels_per_class"),
        ({"name": "fn_abs", "labels_per_class": 5}, "fn_abs has no class labels"),
    ],
)
def test_bad_labels_per_class_is_refused_at_validation(dataset, message):
    with pytest.raises(StudyError, match=message):
        parse_study({**TINY_STUDY, "dataset": dataset})


def test_variant_and_sizes_arguments():
    assert parse_variant("finetuned:") == Variant("finetuned", {})
    scratch = parse_variant("scratch:weights=none,freeze=all,lr=0.01")
    assert scratch.overrides == {"weights": "none", "freeze": "all", "lr": 0.01}
    assert parse_sizes("5,10,all") == [5, 10, None]
    for bad in ("scratch", ":lr=1", "a:lr"):
        with pytest.raises(StudyError, match="--variant"):
            parse_variant(bad)
    with pytest.raises(StudyError, match="--labels-per-class: '0'"):
        parse_sizes("5,0")


@pytest.mark.slow
def test_the_cifar10_study_compares_variants_on_few_labels(tmp_path, monkeypatch, ray_session):
    """studies/cifar10_resnet18_imagenet.yaml's dataset section as it is, on small files in
    CIFAR-10's real format: an export of it retrained fine-tuned (from a ResNet-18
    state-dict file: Ray's workers cannot see a test's $TORCH_HOME) vs from scratch at 2
    labels per class and on the whole training split. 32×32 images keep it CPU-sized."""
    import torch
    import torchvision
    import yaml

    from hpo.records import ExportRecord, ValidationScore
    from hpo.retrain_compare import compare_retrains
    from hpo.spec import load_study
    from tests.conftest import REPO
    from tests.dataset_files import accept_test_checksums, write_cifar

    write_cifar(tmp_path / "data", per_batch=40)
    accept_test_checksums(monkeypatch, tmp_path / "data" / "cifar-10-batches-py")
    monkeypatch.setenv("HPO_DATA_DIR", str(tmp_path / "data"))
    study = load_study(REPO / "studies" / "cifar10_resnet18_imagenet.yaml")
    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    config = {**study.fixed, "image_size": 32, "batch_size": 16, "freeze": "all"}
    config.update(head_hidden=32, lr=1e-3, lr_backbone=1e-4, crop_padding=0, hflip=False)
    document = ExportRecord(
        study=study.name,
        strategy="random",
        seed=0,
        trial_id="t0",
        trainable=study.trainable,
        dataset=study.dataset.model_copy(update={"split_seed": 0}),
        config={**config, "blur": False, "weights": str(weights)},
        validation=ValidationScore(
            metric="val_accuracy", mode="max", value=0.5, epoch=1, max_epochs=20
        ),
        resources={"cpu": 1},
    )
    exported = tmp_path / "best.yaml"
    exported.write_text(yaml.safe_dump(document.model_dump(mode="json")))

    out = compare_retrains(
        exported,
        [Variant("finetuned"), Variant("scratch", {"weights": "none"})],
        [2, None],
        epochs=1,
        seeds=[0, 1],
        out=tmp_path / "compare",
    )
    rows = pd.read_csv(out / "comparison.csv")
    assert len(rows) == 8 and set(rows["status"]) == {"finished"}
    assert set(rows.loc[rows["labels_per_class"] == "2", "train_examples"]) == {20}
    assert rows.loc[rows["labels_per_class"] == "all", "train_examples"].min() > 20
    assert len(json.loads((out / "comparison.json").read_text())["paired"]) == 2
