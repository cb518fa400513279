"""resnet_transfer: weights, freezing policies, feature caching, augmentation, early stopping."""

from __future__ import annotations

import pytest
import torch
import torchvision

from tests.conftest import ListReporter
from trainables import RESNET_TRANSFER_DEFAULTS, WeightsError
from trainables.data import DataBundle, Split
from trainables.loop import build_model_for, make_optimizer, train
from trainables.transfer import Augment, imagenet_file, trainable_parameters

NUM_CLASSES = 5


def config(**overrides):
    return {**RESNET_TRANSFER_DEFAULTS, **overrides}


def model(shape=(1, 16, 16), **overrides):
    torch.manual_seed(0)
    return build_model_for("resnet_transfer", config(**overrides), shape, NUM_CLASSES)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def tiny_bundle(n: int = 40, shape=(1, 16, 16)) -> DataBundle:
    generator = torch.Generator().manual_seed(0)

    def split(size: int) -> Split:
        x = torch.rand(size, *shape, generator=generator)
        return Split(x, torch.arange(size) % NUM_CLASSES)

    return DataBundle("tiny", split(n), split(n // 2), split(n // 2), NUM_CLASSES)


def test_freezing_policies_train_exactly_the_intended_parameters():
    reference = torchvision.models.resnet18()
    head = 512 * NUM_CLASSES + NUM_CLASSES
    backbone = count(reference) - count(reference.fc)
    conv1, block_conv1 = reference.conv1.weight.numel(), reference.layer1[0].conv1.weight.numel()
    assert trainable_parameters(model(freeze="head")) == head
    assert trainable_parameters(model(freeze="head+conv1+layer1.0.conv1")) == (
        head + conv1 + block_conv1
    )
    assert trainable_parameters(model(freeze="all")) == head + backbone
    last_two = count(reference.layer4) + 0  # layer4 holds the last two blocks
    assert trainable_parameters(model(freeze="last_k_blocks", unfreeze_blocks=2)) == (
        head + last_two
    )
    assert trainable_parameters(model(freeze="last_k_blocks", unfreeze_blocks=0)) == head
    mlp = trainable_parameters(model(freeze="head", head="mlp", head_hidden=32))
    assert mlp == 512 * 32 + 32 + 32 * NUM_CLASSES + NUM_CLASSES


def test_head_and_backbone_get_their_own_learning_rates():
    net = model(freeze="head+conv1+layer1.0.conv1", lr=0.01, lr_backbone=0.001)
    optimizer = make_optimizer(net, config(lr=0.01, lr_backbone=0.001))
    assert [group["lr"] for group in optimizer.param_groups] == [0.01, 0.001]
    assert sum(p.numel() for p in optimizer.param_groups[1]["params"]) == 64 * 3 * 49 + 64 * 64 * 9
    only_head = make_optimizer(model(freeze="head"), config())
    assert len(only_head.param_groups) == 1


def test_cached_features_give_the_same_logits_and_the_same_training():
    data = tiny_bundle()
    net = model(freeze="head")
    cached = net.prepare_data(data)
    assert cached.train.x.shape == (len(data.train), 512)
    net.train()  # frozen batch norm stays in eval mode, so train mode changes nothing
    torch.testing.assert_close(net(cached.val.x), net(data.val.x))
    # two epochs with and without the cache: identical metrics
    with_cache, without = ListReporter(), ListReporter()
    train("resnet_transfer", config(seed=0), data, with_cache, max_epochs=2, threads=1)
    recompute = config(seed=0, cache_features=False)
    train("resnet_transfer", recompute, data, without, max_epochs=2, threads=1)
    for a, b in zip(with_cache.rows, without.rows, strict=True):
        for key in ("train_loss", "val_loss", "val_accuracy"):
            assert a[key] == pytest.approx(b[key], rel=1e-5)


def test_no_cache_when_the_backbone_trains_or_inputs_are_augmented():
    data = tiny_bundle()
    assert model(freeze="all").prepare_data(data) is data
    assert model(freeze="head", hflip=True).prepare_data(data) is data
    assert model(freeze="head", cache_features=False).prepare_data(data) is data


def test_grey_inputs_are_expanded_and_resized():
    net = model(shape=(1, 8, 8), image_size=32).eval()
    seen = {}
    net.backbone.conv1.register_forward_hook(lambda m, i, o: seen.update(shape=i[0].shape))
    assert net(torch.rand(2, 1, 8, 8)).shape == (2, NUM_CLASSES)
    assert tuple(seen["shape"]) == (2, 3, 32, 32)


def test_augmentation_is_per_sample_and_only_in_training():
    augment = Augment(padding=2, hflip=True, blur=True)
    x = torch.rand(64, 3, 8, 8)
    assert torch.equal(augment.eval()(x), x)
    torch.manual_seed(0)
    out = augment.train()(x)
    assert out.shape == x.shape
    changed = [(out[i] != x[i]).any().item() for i in range(len(x))]
    assert 0 < sum(changed) <= len(x)
    crop = Augment(padding=1, hflip=False, blur=False).train()
    torch.manual_seed(1)
    shifted = crop(x)
    # a crop keeps every pixel it shows: each output row comes from the input or padding
    assert torch.isin(shifted[0], torch.cat([x[0].flatten(), torch.zeros(1)])).all()


def test_imagenet_weights_come_from_the_hub_cache_or_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = imagenet_file("resnet18")
    assert expected == tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(WeightsError, match="resnet18-f37072fd.pth not found.*place it there"):
        model(weights="imagenet")
    torch.manual_seed(7)
    weights = torchvision.models.resnet18().state_dict()
    expected.parent.mkdir(parents=True)
    torch.save(weights, expected)
    net = model(weights="imagenet")
    torch.testing.assert_close(net.backbone.conv1.weight, weights["conv1.weight"])
    torch.testing.assert_close(net.conv1_initial, weights["conv1.weight"])


def test_weights_from_a_saved_transfer_model(tmp_path):
    from trainables.saved import save_model

    source = model(freeze="all")
    save_model(
        tmp_path / "source",
        source,
        trainable="resnet_transfer",
        config=config(),
        input_shape=(1, 16, 16),
        num_classes=NUM_CLASSES,
        dataset={"name": "digits"},
    )
    target = model(weights=str(tmp_path / "source"))
    for name, value in source.backbone.state_dict().items():
        torch.testing.assert_close(target.backbone.state_dict()[name], value)
    with pytest.raises(WeightsError, match="no such file"):
        model(weights=str(tmp_path / "missing.pt"))


def test_patience_stops_a_trial_that_no_longer_improves():
    from trainables.data import load_dataset

    data = load_dataset("digits", 0.2, 0.2, 0)
    rows = ListReporter()
    frozen = {"optimizer": "sgd", "lr": 0.0, "patience": 2, "seed": 0}
    train("cnn", frozen, data, rows, max_epochs=10, threads=1)
    assert [r["epoch"] for r in rows.rows] == [1, 2, 3]
    assert [r["early_stopped"] for r in rows.rows] == [False, False, True]
