"""ResNet transfer learning: a torchvision backbone, a new head, a searchable freezing policy.

Everything a fine-tuning trial needs lives in the model, so the one training loop runs it
unchanged: preprocessing (grey → 3 channels, resize, the weights' normalization) and
training-only augmentation are its first layers, `param_groups` gives head and backbone
their own learning rates, and `prepare_data` swaps images for cached backbone features
when only the head trains.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn
from torch.nn import functional as F
from torchvision.transforms.v2 import functional as TF

from trainables import RESNET_TRANSFER_DEFAULTS, WeightsError

BACKBONES = {
    "resnet18": (torchvision.models.resnet18, torchvision.models.ResNet18_Weights.IMAGENET1K_V1),
    "resnet50": (torchvision.models.resnet50, torchvision.models.ResNet50_Weights.IMAGENET1K_V2),
}
PARTIAL = "head+conv1+layer1.0.conv1"  # the coursework's partial unfreeze
# The backbone parameters each freezing policy trains (the head always trains).
POLICY_PARAMETERS = {"head": (), PARTIAL: ("conv1.weight", "layer1.0.conv1.weight")}


def imagenet_file(backbone: str) -> Path:
    """Where torch.hub keeps the ImageNet weights of `backbone` ($TORCH_HOME/hub/checkpoints)."""
    url = BACKBONES[backbone][1].url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def backbone_state(backbone: str, weights: str) -> dict[str, torch.Tensor] | None:
    """The backbone's starting weights: `none`, `imagenet` (torch hub cache only, never a
    download here) or a path to a state_dict file or to a model folder of `hpo retrain`."""
    if weights == "none":
        return None
    if weights == "imagenet":
        path = imagenet_file(backbone)
        if not path.exists():
            url = BACKBONES[backbone][1].url
            raise WeightsError(
                f"weights: imagenet: {path} not found; download {url} on a machine with "
                f"network and place it there (or set TORCH_HOME), or use weights: none / a path"
            )
        return torch.load(path, weights_only=True, map_location="cpu")
    path = Path(weights)
    if path.is_dir():
        path = path / "model.pt"
    if not path.exists():
        raise WeightsError(
            f"weights: {weights}: no such file (expected none, imagenet, a state_dict .pt "
            "file or a model folder written by `hpo retrain`)"
        )
    state = torch.load(path, weights_only=True, map_location="cpu")
    if any(key.startswith("backbone.") for key in state):  # a TransferNet of this module
        state = {
            k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")
        }
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


class Preprocess(nn.Module):
    """Grey → 3 channels, resize to `size` (0: keep), normalize with the weights' statistics."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.size = size
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.size and tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(
                x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False
            )
        return (x - self.mean) / self.std


class Augment(nn.Module):
    """Training-only augmentation, drawn per sample: random crop after zero padding,
    horizontal flip, Gaussian blur of a random half of the batch. Identity in eval mode."""

    def __init__(self, padding: int, hflip: bool, blur: bool):
        super().__init__()
        self.padding, self.hflip, self.blur = padding, hflip, blur

    @property
    def active(self) -> bool:
        return bool(self.padding or self.hflip or self.blur)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.active):
            return x
        n, c, h, w = x.shape
        if self.padding:
            p = self.padding
            dy, dx = torch.randint(0, 2 * p + 1, (2, n))
            rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
            cols = (dx[:, None] + torch.arange(w))[:, None, None, :]
            samples, channels = torch.arange(n)[:, None, None, None], torch.arange(c)[:, None, None]
            index = [t.to(x.device) for t in (samples, channels, rows, cols)]
            x = F.pad(x, (p, p, p, p))[tuple(index)]
        if self.hflip:
            flip = (torch.rand(n) < 0.5).to(x.device)  # drawn on the CPU: same on every device
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if self.blur:
            sigma = float(torch.empty(()).uniform_(0.1, 1.0))
            blurred = TF.gaussian_blur(x, [3, 3], [sigma, sigma])
            pick = (torch.rand(n) < 0.5).to(x.device)
            x = torch.where(pick[:, None, None, None], blurred, x)
        return x


def make_head(in_features: int, num_classes: int, kind: str, hidden: int, dropout: float):
    if kind == "linear":
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, num_classes))
    if kind == "mlp":
        return nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )
    raise ValueError(f"unknown head {kind!r}")


def blocks(backbone: nn.Module) -> list[nn.Module]:
    """The residual blocks in order, layer1.0 … layer4.last."""
    return [
        block
        for name in ("layer1", "layer2", "layer3", "layer4")
        for block in getattr(backbone, name)
    ]


class TransferNet(nn.Module):
    def __init__(self, config: Mapping, input_shape: Sequence[int], num_classes: int):
        super().__init__()
        name = str(config["backbone"])
        build, weights_enum = BACKBONES[name]
        self.backbone = build(weights=None)
        state = backbone_state(name, str(config["weights"]))
        if state is not None:
            missing, unexpected = self.backbone.load_state_dict(state, strict=False)
            wrong = [k for k in missing if not k.startswith("fc.")] + list(unexpected)
            if wrong:
                raise WeightsError(f"weights: {config['weights']} does not fit {name}: {wrong[:3]}")
        features = self.backbone.fc.in_features
        self.backbone.fc = nn.Identity()
        transforms = weights_enum.transforms()
        size = int(config["image_size"]) or int(input_shape[-1])
        self.augment = Augment(
            int(config["crop_padding"]), bool(config["hflip"]), bool(config["blur"])
        )
        self.preprocess = Preprocess(size, transforms.mean, transforms.std)
        self.head = make_head(
            features,
            num_classes,
            str(config["head"]),
            int(config["head_hidden"]),
            float(config["dropout"]),
        )
        # conv1's filters as they were before training, kept for the report's before/after view.
        self.register_buffer("conv1_initial", self.backbone.conv1.weight.detach().clone())
        self.policy = str(config["freeze"])
        self.cache = bool(config["cache_features"])
        self._freeze(self.policy, int(config["unfreeze_blocks"]))

    def _freeze(self, policy: str, last_k: int) -> None:
        if policy == "all":
            return
        for param in self.backbone.parameters():
            param.requires_grad_(False)
        if policy == "last_k_blocks":
            for block in (
                blocks(self.backbone)[len(blocks(self.backbone)) - last_k :] if last_k else []
            ):
                block.requires_grad_(True)
            return
        if policy not in POLICY_PARAMETERS:
            raise ValueError(f"unknown freeze policy {policy!r}")
        named = dict(self.backbone.named_parameters())
        for key in POLICY_PARAMETERS[policy]:
            named[key].requires_grad_(True)

    def train(self, mode: bool = True) -> TransferNet:
        """Frozen batch-norm layers stay in eval mode: their statistics are part of the
        pretrained features (and cached features must equal uncached ones)."""
        super().train(mode)
        for module in self.backbone.modules():
            frozen = not any(p.requires_grad for p in module.parameters())
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and frozen:
                module.eval()
        return self

    @property
    def backbone_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.backbone.parameters())

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.preprocess(self.augment(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # backbone features cached by prepare_data
            return self.head(x)
        return self.head(self.features(x))

    def param_groups(self, config: Mapping) -> list[dict]:
        """Head at `lr`, the trainable part of the backbone at `lr_backbone`."""
        groups = [{"params": list(self.head.parameters()), "lr": float(config["lr"])}]
        trainable = [p for p in self.backbone.parameters() if p.requires_grad]
        if trainable:
            groups.append({"params": trainable, "lr": float(config["lr_backbone"])})
        return groups

    def prepare_data(self, data):
        """With a frozen backbone and no augmentation, every epoch would recompute the same
        features: compute them once for train and validation and train the head on them."""
        if not (self.cache and self.backbone_frozen) or self.augment.active:
            return data
        from dataclasses import replace

        from trainables.data import Split

        def cached(split):
            return Split(self.cached_features(split.x), split.y)

        return replace(data, train=cached(data.train), val=cached(data.val))

    @torch.no_grad()
    def cached_features(self, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
        was_training = self.training
        self.eval()
        out = torch.cat([self.features(x[i : i + batch]) for i in range(0, len(x), batch)])
        self.train(was_training)
        return out


def build_resnet_transfer(
    config: Mapping, input_shape: Sequence[int], num_classes: int
) -> nn.Module:
    if len(input_shape) != 3:
        raise ValueError(f"resnet_transfer expects C×H×W images, got shape {tuple(input_shape)}")
    return TransferNet(config, input_shape, num_classes)


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def filter_grid(weights: torch.Tensor, columns: int = 8) -> torch.Tensor:
    """conv1 filters (out × 3 × k × k) as one RGB image grid, each filter scaled to [0, 1]."""
    low = weights.amin(dim=(1, 2, 3), keepdim=True)
    high = weights.amax(dim=(1, 2, 3), keepdim=True)
    scaled = (weights - low) / (high - low).clamp_min(1e-8)
    return torchvision.utils.make_grid(scaled, nrow=columns, padding=1, pad_value=1.0)


def check_values(values: Mapping[str, Sequence]) -> None:
    """Fail before any trial starts when a study's weights cannot be loaded."""
    backbones = values.get("backbone") or [RESNET_TRANSFER_DEFAULTS["backbone"]]
    for weights in values.get("weights") or ():
        for backbone in backbones:
            backbone_state(str(backbone), str(weights))


def conv1_views(trainable: str, config: Mapping, state: Mapping, data) -> dict[str, np.ndarray]:
    """conv1's filters before and after training, and its feature maps (after ReLU) for the
    first validation image, as arrays the report draws."""
    from trainables.loop import build_model

    model = build_model(trainable, config, data).eval()
    model.load_state_dict(state["model"])
    image = data.val.x[:1]
    with torch.no_grad():
        maps = model.backbone.relu(
            model.backbone.bn1(model.backbone.conv1(model.preprocess(image)))
        )
    return {
        "filters_before": model.conv1_initial.numpy(),
        "filters_after": model.backbone.conv1.weight.detach().numpy(),
        "image": image[0].numpy(),
        "feature_maps": maps[0].numpy(),
    }
