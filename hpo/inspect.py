"""Look inside a trained model (`hpo inspect`): its first convolution's filters, the
feature maps of each convolution stage for one image, and its top-5 predictions for that
image unchanged and under noise, blur, crop and rotation — how robust the prediction is.

Models: a folder written by `hpo retrain` (the image is one of its dataset's test split)
or torchvision's ImageNet AlexNet/ResNet (`imagenet:NAME`, an image file), whose weights
come from the torch hub cache only, never downloaded, as for the transfer trainable.

As in the report, numbers come first (`first_conv_filters`, `feature_maps`,
`perturbations`, `predictions`: tested by value) and the drawing functions only draw
what they are given, returning Figures on an Agg canvas.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from hpo.spec import StudyError

if TYPE_CHECKING:
    from hpo.report.html import Section

# Draws a Figure into the output folder and returns its HTML: (file, figure, alt, caption).
Embed = Callable[[str, Figure, str, str], str]

__all__ = [
    "IMAGENET_PREFIX",
    "Filters",
    "Stage",
    "Subject",
    "Variant",
    "draw_feature_maps",
    "draw_filters",
    "draw_variants",
    "feature_maps",
    "first_conv_filters",
    "imagenet_subject",
    "imagenet_weights_file",
    "inspect",
    "load_subject",
    "model_dir_subject",
    "perturbations",
    "predictions",
    "robustness",
]

IMAGENET_PREFIX = "imagenet:"
MAX_FILTERS, MAX_CHANNELS, TOP_K = 64, 16, 5
RESNET_STAGES = ("conv1", "layer1", "layer2", "layer3", "layer4")


@dataclass(frozen=True)
class Subject:
    """What is inspected: a model in eval mode and one input exactly as the model takes it
    (C×H×W, or C×L for signals), with names for its classes and facts for the page."""

    model: nn.Module
    image: torch.Tensor
    class_names: tuple[str, ...]
    title: str
    facts: list[tuple[str, str]] = field(default_factory=list)


# ------------------------------------------------------------------ subjects
def load_subject(target: str, image: str | None = None) -> Subject:
    """`imagenet:NAME` with an image file, or a model folder of `hpo retrain` with the
    index of a test image (default 0)."""
    if target.startswith(IMAGENET_PREFIX):
        return imagenet_subject(target.removeprefix(IMAGENET_PREFIX), image)
    if image is not None and not image.lstrip("-").isdigit():
        raise StudyError(
            f"--image: expected the index of an image of the model's test split, got {image!r}"
        )
    return model_dir_subject(target, int(image) if image is not None else 0)


def model_dir_subject(directory: str | Path, index: int = 0) -> Subject:
    """A model saved by `hpo retrain` and test image `index` of its dataset, rebuilt as
    `hpo predict` does: the same split and input scaling as in training."""
    from trainables import DatasetError, trainable_info
    from trainables.data import load_dataset, options_from
    from trainables.saved import WEIGHTS

    description = _description(directory)
    if not (Path(directory) / WEIGHTS).exists():
        raise StudyError(f"{directory}: no {WEIGHTS} beside model.json")
    spec, trainable = description.get("dataset") or {}, description.get("trainable")
    try:
        scale = trainable_info(str(trainable)).input_scale
    except KeyError:
        raise StudyError(f"{directory}/model.json: trainable: unknown {trainable!r}") from None
    if spec.get("name") is None or spec.get("split_seed") is None:
        raise StudyError(
            f"{directory}/model.json: dataset: needs name and split_seed to rebuild the test split"
        )
    data = load_dataset(
        spec["name"],
        spec.get("val_fraction", 0.2),
        spec.get("test_fraction", 0.2),
        spec["split_seed"],
        scale=scale,
        **options_from(spec),
    )
    if list(data.input_shape) != list(description["input_shape"]):
        raise DatasetError(
            f"dataset {data.name}: inputs have shape {list(data.input_shape)}, the model in "
            f"{directory} expects {description['input_shape']}"
        )
    if not 0 <= index < len(data.test):
        raise StudyError(
            f"--image: {index} is out of range: the test split of {data.name} has "
            f"{len(data.test)} images (0..{len(data.test) - 1})"
        )
    names = data.class_names or tuple(str(c) for c in range(data.num_classes))
    label = int(data.test.y[index])
    return Subject(
        model=_saved_model(directory, trainable),
        image=data.test.x[index],
        class_names=names,
        title=f"{trainable} in {directory}",
        facts=[
            ("model", f"{directory} ({trainable})"),
            ("image", f"test image {index} of {data.name} (split seed {spec['split_seed']})"),
            ("true label", names[label]),
        ],
    )


def _description(directory: str | Path) -> dict:
    from trainables.saved import describe_model

    try:
        description = describe_model(directory)
    except FileNotFoundError as error:
        raise StudyError(str(error)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise StudyError(f"{directory}/model.json: not valid JSON ({error})") from None
    missing = [
        k for k in ("trainable", "config", "input_shape", "num_classes") if k not in description
    ]
    if missing:
        raise StudyError(f"{directory}/model.json: {missing[0]}: missing")
    return description


def _saved_model(directory: str | Path, trainable: str) -> nn.Module:
    from trainables.saved import load_model

    try:
        return load_model(directory)
    except RuntimeError as error:  # load_state_dict: tensors that do not fit the architecture
        first = str(error).splitlines()[0]
        raise StudyError(
            f"{directory}/model.pt does not fit model.json's {trainable}: {first}"
        ) from None


def imagenet_models() -> dict[str, tuple]:
    """Inspectable ImageNet models: name → (torchvision builder, weights enum)."""
    import torchvision

    from trainables.transfer import BACKBONES

    models = torchvision.models
    return {"alexnet": (models.alexnet, models.AlexNet_Weights.IMAGENET1K_V1), **BACKBONES}


def imagenet_weights_file(name: str) -> Path:
    """Where torch.hub keeps `name`'s ImageNet weights; the ResNets through the transfer
    trainable's `imagenet_file`, so both always name the same file."""
    from trainables.transfer import BACKBONES, imagenet_file

    if name in BACKBONES:
        return imagenet_file(name)
    url = imagenet_models()[name][1].url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def imagenet_subject(name: str, image: str | None) -> Subject:
    """torchvision's `name` with its ImageNet weights from the torch hub cache (never
    downloaded: WeightsError says where to put the file) and an image file."""
    from trainables import WeightsError

    models = imagenet_models()
    if name not in models:
        expected = ", ".join(IMAGENET_PREFIX + n for n in sorted(models))
        raise StudyError(f"{IMAGENET_PREFIX}{name}: unknown model; expected one of {expected}")
    path = imagenet_weights_file(name)
    if not path.exists():
        raise WeightsError(
            f"{IMAGENET_PREFIX}{name}: {path} not found; download {models[name][1].url} on a "
            "machine with network and place it there (or set TORCH_HOME)"
        )
    if image is None:
        raise StudyError(f"--image: {IMAGENET_PREFIX}{name} needs an image file (--image PATH)")
    return _imagenet_subject(name, image, torch.load(path, weights_only=True, map_location="cpu"))


def _imagenet_subject(name: str, image: str, state: dict | None) -> Subject:
    """The ImageNet model with `state` (None: random weights, for tests) and the image
    resized and cropped as its weights' transforms do; normalization is the model's first
    layer, so perturbations act on pixels in [0, 1]."""
    from trainables.transfer import Preprocess

    build, weights = imagenet_models()[name]
    network = build(weights=None)
    if state is not None:
        network.load_state_dict(state)
    transforms = weights.transforms()
    pixels = _read_image(image)
    pixels = TF.resize(pixels, list(transforms.resize_size), antialias=True)
    pixels = TF.center_crop(pixels, list(transforms.crop_size))
    model = nn.Sequential(Preprocess(0, transforms.mean, transforms.std), network).eval()
    return Subject(
        model=model,
        image=TF.to_dtype(pixels, torch.float32, scale=True),
        class_names=tuple(weights.meta["categories"]),
        title=f"{name} (ImageNet weights)" if state is not None else f"{name} (random weights)",
        facts=[("model", f"torchvision {name}, {weights}"), ("image", str(image))],
    )


def _read_image(path: str) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image

    if not Path(path).is_file():
        raise StudyError(f"--image: {path}: no such image file")
    try:
        return decode_image(path, mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError):
        raise StudyError(f"--image: {path}: not an image torchvision can read") from None


# ------------------------------------------------------------------ numbers
@dataclass(frozen=True)
class Filters:
    """The first convolution's filters, each scaled to [0, 1]: n × c × kh × kw with c = 3
    (RGB) for colour inputs, else 1 (the first input channel)."""

    layer: str
    out_channels: int
    weights: np.ndarray


def first_conv_filters(model: nn.Module, cap: int = MAX_FILTERS) -> Filters | None:
    """The first convolution's first `cap` filters; None without a convolution."""
    found = next(((p, m) for p, m in model.named_modules() if _is_conv(m)), None)
    if found is None:
        return None
    path, conv = found
    weights = conv.weight.detach().cpu().float()[:cap]
    weights = weights.reshape(*weights.shape[:2], -1, weights.shape[-1])  # Conv1d: 1 × k
    if weights.shape[1] != 3:
        weights = weights[:, :1]
    low = weights.amin(dim=(1, 2, 3), keepdim=True)
    high = weights.amax(dim=(1, 2, 3), keepdim=True)
    scaled = (weights - low) / (high - low).clamp_min(1e-8)
    return Filters(path, int(conv.out_channels), scaled.numpy())


@dataclass(frozen=True)
class Stage:
    """One convolution stage's output for the image: its first channels, channel × H × W
    (H = 1 for signals)."""

    name: str
    layer: str
    channels: int
    maps: np.ndarray


def feature_maps(model: nn.Module, image: torch.Tensor, cap: int = MAX_CHANNELS) -> list[Stage]:
    """The output of every convolution (a ResNet: of conv1 and layer1..layer4) for one
    image, through forward hooks, in the order the layers run."""
    stages = _stages(model)
    outputs: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(_module: nn.Module, _inputs: tuple, out: torch.Tensor) -> None:
            outputs.setdefault(name, out)

        return hook

    handles = [module.register_forward_hook(keep(name)) for name, (_, module) in stages.items()]
    try:
        with torch.no_grad():
            model(image[None])
    finally:
        for handle in handles:
            handle.remove()
    return [
        Stage(name, stages[name][0], int(out.shape[1]), _as_maps(out[0, :cap]))
        for name, out in outputs.items()  # dicts keep insertion order: the order they ran
    ]


def _stages(model: nn.Module) -> dict[str, tuple[str, nn.Module]]:
    """Stage name → (module path, module): a torchvision ResNet's five stages, else every
    convolution as conv1, conv2, … in module order."""
    from torchvision.models import ResNet

    for path, module in model.named_modules():
        if isinstance(module, ResNet):
            prefix = f"{path}." if path else ""
            return {s: (prefix + s, getattr(module, s)) for s in RESNET_STAGES}
    convs = [(p, m) for p, m in model.named_modules() if _is_conv(m)]
    return {f"conv{i}": conv for i, conv in enumerate(convs, start=1)}


def _is_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.conv._ConvNd)


def _as_maps(out: torch.Tensor) -> np.ndarray:
    out = out.detach().cpu().float()
    return (out[:, None, :] if out.dim() == 2 else out).numpy()


@dataclass(frozen=True)
class Variant:
    """The image under one transformation (`name`), in the model's input space."""

    name: str
    description: str
    image: torch.Tensor


def perturbations(image: torch.Tensor, seed: int = 0) -> list[Variant]:
    """The image unchanged, then with Gaussian noise, blur, a centre crop resized back and
    (images only) a rotation; deterministic for a seed. Strengths scale with the image:
    noise with its value range (inputs may be standardized), blur with its size, and the
    crop keeps 75 % of each side, so an 8×8 digit becomes 6×6 before it is resized back."""
    signal = image.dim() == 2  # C×L: handled as C×1×L images
    x = image[:, None, :] if signal else image
    height, width = x.shape[-2:]
    low, high = float(x.min()), float(x.max())
    # By hand: v2.GaussianNoise draws from the global RNG and clips to [0, 1], which would
    # cut standardized inputs; a seeded generator keeps the table reproducible.
    generator = torch.Generator().manual_seed(seed)
    noise = 0.1 * (high - low) * torch.randn(x.shape, generator=generator)
    sigma = max(0.6, max(height, width) / 64)
    kernel = 2 * math.ceil(2 * sigma) + 1
    crop = [max(1, round(0.75 * height)), max(1, round(0.75 * width))]
    blur_kernel = [kernel, 1 if signal else kernel]  # [x, y]: along the signal only
    variants = [
        Variant("unchanged", "the image as the model sees it", x),
        Variant("noise", "Gaussian noise, σ = 10 % of the value range", x + noise),
        Variant(
            "blur",
            f"Gaussian blur, σ = {sigma:.2g} px (kernel {kernel})",
            TF.gaussian_blur(x, blur_kernel, [sigma, sigma]),
        ),
        Variant(
            "crop",
            f"centre crop to 75 % ({crop[1]}×{crop[0]}), resized back to {width}×{height}",
            TF.resize(TF.center_crop(x, crop), [height, width], antialias=True),
        ),
    ]
    if not signal:
        # Corners filled with the darkest value: the background of digits, black elsewhere.
        rotated = TF.rotate(x, 15.0, interpolation=InterpolationMode.BILINEAR, fill=low)
        variants.append(Variant("rotation", "rotated 15° anticlockwise", rotated))
    else:
        variants = [Variant(v.name, v.description, v.image[:, 0, :]) for v in variants]
    return variants


def predictions(
    model: nn.Module, variants: list[Variant], class_names: tuple[str, ...], k: int = TOP_K
) -> pd.DataFrame:
    """Top-k classes and probabilities per variant (one row per variant and rank), and
    whether each variant's top-1 class is the unchanged image's."""
    with torch.no_grad():
        output = model(torch.stack([v.image for v in variants]))
    if isinstance(output, tuple):  # a cnn with a regression head: (logits, regression)
        output = output[0]
    probabilities = torch.softmax(output, dim=1)
    top = probabilities.topk(min(k, probabilities.shape[1]), dim=1)
    first = int(top.indices[0, 0])
    rows = [
        {
            "transformation": variant.name,
            "rank": rank + 1,
            "class": int(top.indices[i, rank]),
            "name": class_names[int(top.indices[i, rank])],
            "probability": float(top.values[i, rank]),
            "top1_same": int(top.indices[i, 0]) == first,
        }
        for i, variant in enumerate(variants)
        for rank in range(top.indices.shape[1])
    ]
    return pd.DataFrame(rows)


def robustness(table: pd.DataFrame) -> dict:
    """The unchanged image's top-1 prediction and how many transformations keep it."""
    tops = table[table["rank"] == 1]
    unchanged, changed = tops.iloc[0], tops.iloc[1:]
    return {
        "top1": unchanged["name"],
        "probability": float(unchanged["probability"]),
        "kept": int(changed["top1_same"].sum()),
        "transformations": len(changed),
        "flipped_by": changed.loc[~changed["top1_same"], "transformation"].tolist(),
    }


def top_k_summary(table: pd.DataFrame) -> pd.DataFrame:
    """The tidy table wide, for the page: one row per transformation, a column per rank."""
    cells = table.assign(
        cell=[f"{n} ({p:.3f})" for n, p in zip(table["name"], table["probability"], strict=True)]
    )
    wide = cells.pivot(index="transformation", columns="rank", values="cell")
    wide = wide.reindex(table["transformation"].unique())
    wide.columns = [f"top-{r}" for r in wide.columns]
    same = table.groupby("transformation", sort=False)["top1_same"].first()
    return wide.assign(**{"same top-1": same.map({True: "yes", False: "no"})}).reset_index()


# ------------------------------------------------------------------ drawing
def draw_filters(filters: Filters) -> Figure:
    """The filters as one grid image (RGB for colour inputs, grey otherwise)."""
    from torchvision.utils import make_grid

    from hpo.report.figures import new_figure

    grid = make_grid(torch.from_numpy(filters.weights), nrow=8, padding=1, pad_value=1.0)
    rows = math.ceil(len(filters.weights) / 8)
    figure = new_figure((7, max(1.5, 0.9 * rows) + 0.6))
    ax = figure.add_subplot()
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_axis_off()
    shown = len(filters.weights)
    ax.set_title(
        f"{filters.layer}: {shown} of {filters.out_channels} filters, each scaled to [0, 1]"
    )
    return figure


def draw_feature_maps(stage: Stage) -> Figure:
    """The stage's channels as a grid, each scaled to its own range (1-D signals: one
    strip per channel)."""
    from torchvision.utils import make_grid

    from hpo.report.figures import new_figure

    maps = torch.from_numpy(stage.maps)[:, None]
    strips = maps.shape[-2] == 1
    columns = 1 if strips else min(4, len(maps))
    # NaN padding is drawn transparent: the channels stand apart on the white page.
    grid = make_grid(
        maps, nrow=columns, padding=1, normalize=True, scale_each=True, pad_value=math.nan
    )
    rows = math.ceil(len(maps) / columns)
    figure = new_figure((7, 0.4 * rows + 1) if strips else (1.6 * columns + 0.4, 1.6 * rows + 0.6))
    ax = figure.add_subplot()
    ax.imshow(
        grid[0].numpy(),
        cmap="viridis",
        interpolation="nearest",
        aspect="auto" if strips else "equal",
    )
    ax.set_axis_off()
    where = "" if stage.layer == stage.name else f" ({stage.layer})"
    ax.set_title(f"{stage.name}{where}: {len(maps)} of {stage.channels} channels", fontsize="small")
    return figure


def draw_variants(variants: list[Variant], table: pd.DataFrame) -> Figure:
    """Each variant of the image with its top-1 class, on the unchanged image's scale."""
    from hpo.report.figures import new_figure

    tops = table[table["rank"] == 1].set_index("transformation")
    base = variants[0].image
    low, high = float(base.min()), float(base.max())
    figure = new_figure((2.6 * len(variants), 3))
    for ax, variant in zip(
        figure.subplots(1, len(variants), squeeze=False)[0], variants, strict=True
    ):
        shown = ((variant.image - low) / max(high - low, 1e-8)).clamp(0, 1)
        if shown.dim() == 2:  # a signal
            for channel in shown:
                ax.plot(channel.numpy())
        else:
            pixels = shown.permute(1, 2, 0).numpy()
            ax.imshow(
                pixels[..., 0] if pixels.shape[-1] != 3 else pixels, cmap="gray", vmin=0, vmax=1
            )
            ax.set_axis_off()
        top = tops.loc[variant.name]
        ax.set_title(f"{variant.name}\n{top['name']} ({top['probability']:.2f})", fontsize="small")
    return figure


# ------------------------------------------------------------------ output
def inspect(subject: Subject, out: str | Path, seed: int = 0) -> Path:
    """Write index.html, predictions.csv and the PNGs into `out`, whole: a staged folder
    replaces `out` only once everything is written."""
    from hpo.files import staged_folder
    from hpo.report import html
    from hpo.report.figures import png_bytes

    model = subject.model.eval()
    variants = perturbations(subject.image, seed)
    table = predictions(model, variants, subject.class_names)
    filters = first_conv_filters(model)
    stages = feature_maps(model, subject.image) if filters is not None else []
    out = Path(out)
    with staged_folder(out) as staging:
        table.to_csv(staging / "predictions.csv", index=False)

        def figure(name: str, drawn: Figure, alt: str, caption: str) -> str:
            png = png_bytes(drawn)
            (staging / name).write_bytes(png)
            return html.image(png, alt, caption, name)

        sections = [_robustness_section(table, variants, figure)]
        sections += _conv_sections(filters, stages, figure)
        (staging / "index.html").write_text(_page(subject, table, sections))
    return out


def _robustness_section(table: pd.DataFrame, variants: list[Variant], figure: Embed) -> Section:
    from hpo.report import html

    descriptions = pd.DataFrame(
        [{"transformation": v.name, "what": v.description} for v in variants]
    )
    return html.Section("robustness", "Top-5 predictions under transformations").add(
        html.table(top_k_summary(table)),
        html.table(descriptions),
        figure(
            "transformations.png",
            draw_variants(variants, table),
            "transformed images",
            "The image under each transformation with its top-1 class and probability.",
        ),
        html.paragraph(
            "All numbers: predictions.csv (one row per transformation and rank).", "note"
        ),
    )


def _conv_sections(filters: Filters | None, stages: list[Stage], figure: Embed) -> list[Section]:
    from hpo.report import html

    if filters is None:
        note = html.paragraph("This model has no convolution layer: no filters or feature maps.")
        return [html.Section("filters", "Filters and feature maps").add(note)]
    filter_section = html.Section("filters", "First convolution's filters").add(
        figure(
            "filters.png",
            draw_filters(filters),
            "first convolution's filters",
            f"The first {len(filters.weights)} filters of {filters.layer}, each scaled to "
            "[0, 1] on its own.",
        )
    )
    maps = html.Section("feature-maps", "Feature maps of each convolution stage")
    for stage in stages:
        maps.add(
            figure(
                f"features-{stage.name}.png",
                draw_feature_maps(stage),
                f"feature maps of {stage.name}",
                f"Output of {stage.layer} for the unchanged image: "
                f"{len(stage.maps)} of {stage.channels} channels, each on its own scale.",
            )
        )
    return [filter_section, maps]


def _page(subject: Subject, table: pd.DataFrame, sections: list[Section]) -> str:
    from hpo.report import html

    summary = robustness(table)
    kept = f"{summary['kept']} of {summary['transformations']}"
    level = "ok" if summary["kept"] == summary["transformations"] else "warn"
    message = (
        f"top-1 {summary['top1']} ({summary['probability']:.3f}) kept under {kept} transformations"
    )
    if summary["flipped_by"]:
        message += f"; changed by {', '.join(summary['flipped_by'])}"
    sections[0].parts.insert(0, html.facts(subject.facts))
    return html.page(
        f"Inspecting {subject.title}",
        "hpo inspect",
        (level, message),
        sections,
        "written by hpo inspect",
    )
