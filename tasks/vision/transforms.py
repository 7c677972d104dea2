"""Pretraining and evaluation image transforms (torchvision.transforms.v2) and per-dataset mean/std.

What it implements
- `pretrain_transform`: the augmentation of BEiT/data2vec-vision and MAE pretraining (random resized
  crop, horizontal flip, optional colour jitter), then float conversion and normalisation. data2vec's
  released vision config uses RandomResizedCrop(224, scale (0.08, 1.0), bicubic), flip and colour jitter
  0.4; for tiny images (8x8 digits, 28x28 MNIST) pass a larger `scale` minimum and `flip=False` for digits.
- `eval_transform`: resize the shorter side to `image_size / crop_pct`, centre crop `image_size`, normalise
  (ImageNet evaluation uses crop_pct 0.875: 256 -> 224; small data sets use 1.0).
- `DATASET_STATS`: channel means and standard deviations: ImageNet (the standard constants), CIFAR-10
  (over the 50k training images), MNIST (the usual 0.1307 / 0.3081), digits (over the 1,797 images / 16).

Differences from the originals
- Inputs may be uint8 or float tensors/PIL images; `ToDtype(float32, scale=True)` maps uint8 to [0, 1]
  and leaves floats unchanged, so these transforms work on every dataset of `tasks.vision`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import InterpolationMode, v2

DATASET_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "mnist": ((0.1307,), (0.3081,)),
    "digits": ((0.3053,), (0.3760,)),
}
IMAGENET_MEAN, IMAGENET_STD = DATASET_STATS["imagenet"]
CIFAR10_MEAN, CIFAR10_STD = DATASET_STATS["cifar10"]
MNIST_MEAN, MNIST_STD = DATASET_STATS["mnist"]
DIGITS_MEAN, DIGITS_STD = DATASET_STATS["digits"]


def _stats(dataset: str | None, mean, std):
    if mean is None or std is None:
        if dataset is None:
            dataset = "imagenet"
        if dataset not in DATASET_STATS:
            raise ValueError(
                f"no mean/std for {dataset!r}; choose one of {', '.join(DATASET_STATS)} or pass mean= std="
            )
        m, s = DATASET_STATS[dataset]
        mean, std = mean or m, std or s
    return list(mean), list(std)


def pretrain_transform(
    image_size: int,
    dataset: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    scale: tuple[float, float] = (0.08, 1.0),  # RandomResizedCrop area range (BEiT/data2vec: 0.08-1)
    flip: bool = True,  # horizontal flip with p = 0.5 (turn off for digits/MNIST)
    color_jitter: float | None = 0.4,  # brightness/contrast/saturation strength; None = off
    interpolation: InterpolationMode = InterpolationMode.BICUBIC,
) -> v2.Compose:
    """Random resized crop -> flip -> colour jitter -> float in [0, 1] -> normalise."""
    mean, std = _stats(dataset, mean, std)
    steps = [v2.ToImage(), v2.RandomResizedCrop(image_size, scale=scale, interpolation=interpolation, antialias=True)]
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    if color_jitter:
        steps.append(v2.ColorJitter(color_jitter, color_jitter, color_jitter))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    return v2.Compose(steps)


def eval_transform(
    image_size: int,
    dataset: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    crop_pct: float = 1.0,  # ImageNet: 0.875 (resize 256, crop 224)
    interpolation: InterpolationMode = InterpolationMode.BICUBIC,
) -> v2.Compose:
    """Resize the shorter side to image_size / crop_pct -> centre crop -> float -> normalise."""
    if not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    mean, std = _stats(dataset, mean, std)
    return v2.Compose([
        v2.ToImage(),
        v2.Resize(int(round(image_size / crop_pct)), interpolation=interpolation, antialias=True),
        v2.CenterCrop(image_size),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean, std),
    ])
