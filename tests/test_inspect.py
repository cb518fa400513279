"""`hpo inspect`: the numbers behind the filters, feature maps and robustness table, and
the command's files and one-line errors. Models are untrained: the tests check data, not
what a good model would predict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hpo.cli import main
from hpo.inspect import (
    RESNET_STAGES,
    _imagenet_subject,
    feature_maps,
    first_conv_filters,
    inspect,
    load_subject,
    perturbations,
    predictions,
)
from trainables.data import load_dataset
from trainables.loop import build_model, build_model_for
from trainables.saved import load_model, save_model
from trainables.transfer import imagenet_file

SPLIT = {"name": "digits", "val_fraction": 0.2, "test_fraction": 0.2, "split_seed": 3}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", 0.2, 0.2, SPLIT["split_seed"])


def saved(folder: Path, trainable: str, config: dict, data) -> Path:
    model = build_model(trainable, {"seed": 0, **config}, data)
    return save_model(
        folder,
        model,
        trainable=trainable,
        config={"seed": 0, **config},
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        dataset=SPLIT,
    )


def test_inspect_writes_page_table_and_grids(tmp_path, digits, capsys):
    model_dir = saved(tmp_path / "lenet", "lenet5", {}, digits)
    assert main(["inspect", str(model_dir), "--image", "5"]) == 0
    out = model_dir / "inspect"
    assert sorted(p.name for p in out.iterdir()) == [
        "features-conv1.png",
        "features-conv2.png",
        "filters.png",
        "index.html",
        "predictions.csv",
        "transformations.png",
    ]
    table = pd.read_csv(out / "predictions.csv")
    names = ["unchanged", "noise", "blur", "crop", "rotation"]
    assert table["transformation"].unique().tolist() == names
    assert (table.groupby("transformation")["rank"].apply(list) == [[1, 2, 3, 4, 5]] * 5).all()
    # The unchanged image's top-5 is the model's own softmax on test image 5.
    with torch.no_grad():
        expected = torch.softmax(load_model(model_dir)(digits.test.x[5:6]), dim=1)[0].topk(5)
    unchanged = table[table["transformation"] == "unchanged"]
    assert unchanged["class"].tolist() == expected.indices.tolist()
    assert np.allclose(unchanged["probability"], expected.values.numpy(), atol=1e-6)
    assert unchanged["probability"].sum() <= 1 + 1e-6
    assert unchanged["probability"].is_monotonic_decreasing
    top1 = table[table["rank"] == 1]
    assert (top1["top1_same"] == (top1["class"] == expected.indices[0].item())).all()
    page = (out / "index.html").read_text()
    assert "true label" in page and "data:image/png;base64," in page
    kept = int(top1["top1_same"].sum()) - 1
    assert f"kept under {kept} of 4 transformations" in capsys.readouterr().out


def test_filters_are_the_first_conv_scaled_per_filter(digits):
    model = build_model_for("cnn", {"channels": 12, "conv_layers": 2}, digits.input_shape, 10)
    filters = first_conv_filters(model)
    assert filters.layer == "0.0" and filters.out_channels == 12
    assert filters.weights.shape == (12, 1, 3, 3)  # one input channel, kernel 3
    flat = filters.weights.reshape(12, -1)
    assert np.allclose(flat.min(axis=1), 0) and np.allclose(flat.max(axis=1), 1)
    # Same ordering as the raw weights: scaling is monotone within each filter.
    raw = model[0][0].weight.detach().reshape(12, -1).numpy()
    assert (np.argsort(raw, axis=1) == np.argsort(flat, axis=1)).all()


def test_feature_maps_cap_channels_and_remove_hooks(digits):
    model = build_model_for("cnn", {"channels": 12, "conv_layers": 2}, digits.input_shape, 10)
    model.eval()
    stages = feature_maps(model, digits.test.x[0])
    assert [(s.name, s.layer, s.channels) for s in stages] == [
        ("conv1", "0.0", 12),
        ("conv2", "0.3", 24),
    ]
    assert stages[0].maps.shape == (12, 8, 8) and stages[1].maps.shape == (16, 4, 4)
    with torch.no_grad():
        expected = model[0][0](digits.test.x[:1])[0].numpy()
    assert np.allclose(stages[0].maps, expected)
    assert all(not m._forward_hooks for m in model.modules())


def test_perturbations_are_seeded_and_keep_the_shape(digits):
    image = digits.test.x[0]
    first, again, other = perturbations(image, 0), perturbations(image, 0), perturbations(image, 1)
    assert [v.name for v in first] == ["unchanged", "noise", "blur", "crop", "rotation"]
    assert torch.equal(first[0].image, image)
    assert all(v.image.shape == image.shape for v in first)
    assert all(torch.equal(a.image, b.image) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[1].image, other[1].image)  # only the noise draws
    assert "6×6" in first[3].description  # 75 % of an 8×8 digit
    noise = first[1].image - image
    assert 0.05 < float(noise.std() / (image.max() - image.min())) < 0.15
    signal = torch.linspace(0, 1, 40)[None]  # C×L: no rotation for a 1-D signal
    shifted = perturbations(signal)
    assert [v.name for v in shifted] == ["unchanged", "noise", "blur", "crop"]
    assert all(v.image.shape == (1, 40) for v in shifted)


def test_conv1d_model_gets_strips_and_a_table():
    model = build_model_for("cnn", {"channels": 4, "conv_layers": 2}, (1, 40), 10).eval()
    signal = torch.sin(torch.linspace(0, 6, 40))[None]
    stages = feature_maps(model, signal)
    assert [s.maps.shape for s in stages] == [(4, 1, 40), (8, 1, 20)]
    assert first_conv_filters(model).weights.shape == (4, 1, 1, 3)
    table = predictions(model, perturbations(signal), tuple("abcdefghij"))
    assert len(table) == 4 * 5 and table["name"].isin(list("abcdefghij")).all()


def test_logistic_has_no_conv_but_a_top5(tmp_path, digits):
    model_dir = saved(tmp_path / "logistic", "logistic", {}, digits)
    out = inspect(load_subject(str(model_dir), "0"), tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == [
        "index.html",
        "predictions.csv",
        "transformations.png",
    ]
    assert "no convolution layer" in (out / "index.html").read_text()
    assert len(pd.read_csv(out / "predictions.csv")) == 25


def test_missing_model_json_is_one_line_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["inspect", str(tmp_path / "empty")]) == 2
    error = capsys.readouterr().err
    assert error == (
        f"hpo inspect: error: {tmp_path / 'empty'}: no model.json "
        "(not a model saved by hpo retrain)\n"
    )
    assert list((tmp_path / "empty").iterdir()) == []


def test_bad_image_index_names_the_split(tmp_path, digits, capsys):
    model_dir = saved(tmp_path / "lenet", "lenet5", {}, digits)
    size = len(digits.test)
    assert main(["inspect", str(model_dir), "--image", str(size)]) == 2
    assert capsys.readouterr().err == (
        f"hpo inspect: error: --image: {size} is out of range: the test split of digits has "
        f"{size} images (0..{size - 1})\n"
    )
    assert main(["inspect", str(model_dir), "--image", "cat.png"]) == 2
    assert "--image: expected the index of an image" in capsys.readouterr().err
    assert not (model_dir / "inspect").exists()


def test_failure_while_writing_keeps_the_previous_output(tmp_path, digits, monkeypatch):
    model_dir = saved(tmp_path / "lenet", "lenet5", {}, digits)
    out = inspect(load_subject(str(model_dir)), tmp_path / "out")
    before = (out / "predictions.csv").read_text()

    def broken(*_args):
        raise RuntimeError("disk full")

    monkeypatch.setattr("hpo.inspect.draw_filters", broken)
    with pytest.raises(RuntimeError):
        inspect(load_subject(str(model_dir), "7"), out)
    assert (out / "predictions.csv").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lenet", "out"]  # no staging left


def test_imagenet_without_weights_says_where_to_put_them(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.chdir(tmp_path)
    assert main(["inspect", "imagenet:resnet18", "--image", "x.png"]) == 2
    path = imagenet_file("resnet18")
    assert str(path).startswith(str(tmp_path / "torch"))
    assert capsys.readouterr().err == (
        f"hpo inspect: error: imagenet:resnet18: {path} not found; download "
        "https://download.pytorch.org/models/resnet18-f37072fd.pth on a machine with network "
        "and place it there (or set TORCH_HOME)\n"
    )
    assert main(["inspect", "imagenet:alexnet"]) == 2
    assert "alexnet-owt-7be5be79.pth not found" in capsys.readouterr().err
    assert main(["inspect", "imagenet:vgg16"]) == 2
    assert "expected one of imagenet:alexnet, imagenet:resnet18" in capsys.readouterr().err
    path.parent.mkdir(parents=True)
    path.touch()  # weights present, but no image to look at
    assert main(["inspect", "imagenet:resnet18"]) == 2
    assert capsys.readouterr().err.endswith("needs an image file (--image PATH)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["torch"]


def test_imagenet_resnet_stages_on_an_image_file(tmp_path):
    from torchvision.io import write_png

    pixels = torch.randint(0, 256, (3, 60, 80), generator=torch.Generator().manual_seed(0))
    write_png(pixels.to(torch.uint8), str(tmp_path / "photo.png"))
    subject = _imagenet_subject("resnet18", str(tmp_path / "photo.png"), state=None)
    assert subject.image.shape == (3, 224, 224) and 0 <= subject.image.min() <= 1
    assert len(subject.class_names) == 1000
    stages = feature_maps(subject.model, subject.image)
    assert [s.name for s in stages] == list(RESNET_STAGES)
    assert [s.layer for s in stages] == [f"1.{s}" for s in RESNET_STAGES]
    assert [s.channels for s in stages] == [64, 64, 128, 256, 512]
    assert stages[-1].maps.shape == (16, 7, 7)
