"""DINO's multi-crop augmentation (torchvision transforms v2) and the collate function for crop lists.

What it implements (Caron et al. 2021, arXiv 2104.14294, section 3.1 "multi-crop" and appendix D; the
BYOL augmentations of Grill et al. 2020 as used by the released `DataAugmentationDINO`):

- 2 global crops: RandomResizedCrop(global_size, scale=(0.4, 1.0), bicubic), horizontal flip,
  colour jitter (0.4, 0.4, 0.2, 0.1) with p = 0.8, greyscale p = 0.2; Gaussian blur with p = 1.0 on the
  first and p = 0.1 on the second, solarisation p = 0.2 on the second only.
- N local crops: RandomResizedCrop(local_size, scale=(0.05, 0.4)), the same flip/colour/grey, blur p = 0.5.
- Every crop ends as a float tensor normalised with the data set's mean and std.

`collate_crops(samples)` stacks a list of samples (each a list of crops, or a (crops, label) tuple) into
`{"crops": [global1 (B, C, G, G), global2, local1 (B, C, L, L), ...]}` (+ "labels" when given).

Differences from the original
- Blur kernel: the original blurs with PIL's GaussianBlur of radius sigma ~ U[0.1, 2]; here torchvision's
  GaussianBlur with sigma ~ U[0.1, 2] and an odd kernel of about 10% of the crop side (at least 3), so
  tiny 16-32 px crops are not blurred beyond recognition.
- Any number of channels works (greyscale data sets: colour jitter's saturation/hue do nothing there).
- Inputs may be PIL images or uint8/float tensors (`ToDtype(float32, scale=True)` first).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.transforms import InterpolationMode, v2

__all__ = ["MultiCropTransform", "collate_crops", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the standard ImageNet channel statistics
IMAGENET_STD = (0.229, 0.224, 0.225)


class ClampUnit(torch.nn.Module):
    """x -> clamp(x, 0, 1). Bicubic resizing of float images overshoots [0, 1] near edges (-0.034 measured on a
    CIFAR-10 image), and torchvision's hue jitter turns such values into NaN; PIL-based pipelines (the original)
    clip to uint8 after resizing, which this restores."""

    def forward(self, x: Tensor) -> Tensor:
        return x.clamp(0.0, 1.0)


def _blur(size: int, p: float) -> v2.Transform:
    kernel = max(3, int(0.1 * size) // 2 * 2 + 1)  # odd, about 10% of the side (BYOL: 23 px at 224)
    return v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=p)


class MultiCropTransform:
    """One image -> [global_1, global_2, local_1, ..., local_N], each a normalised (C, h, w) float tensor.

    global_size: side of the global crops (224 in DINO; the encoder's image_size here).
    local_size:  side of the local crops (96 in DINO); must be a multiple of the encoder's patch size.
    n_local:     number of local crops (8 in main_dino.py; 0 disables multi-crop; more local crops help
                 most for short schedules, at about (local_size / global_size)^2 of a global crop's cost each).
    global_scale / local_scale: RandomResizedCrop area ranges; with n_local = 0 the original recommends a
                 wider global range (0.14, 1.0).
    """

    def __init__(
        self,
        global_size: int = 224,  # DINO: 224
        local_size: int = 96,  # DINO: 96
        n_local: int = 8,  # main_dino.py default: 8
        global_scale: tuple[float, float] = (0.4, 1.0),  # main_dino.py default
        local_scale: tuple[float, float] = (0.05, 0.4),  # main_dino.py default
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        flip: bool = True,  # horizontal flip p = 0.5; turn off for digits
        interpolation: InterpolationMode = InterpolationMode.BICUBIC,  # DINO: bicubic
    ):
        if global_size < 1 or local_size < 1:
            raise ValueError(f"crop sizes must be positive, got global_size={global_size}, local_size={local_size}")
        if n_local < 0:
            raise ValueError(f"n_local must be >= 0, got {n_local}; use 0 to train with the two global crops only")
        for name, (lo, hi) in (("global_scale", global_scale), ("local_scale", local_scale)):
            if not 0 < lo <= hi <= 1:
                raise ValueError(f"{name} must satisfy 0 < min <= max <= 1, got {(lo, hi)}; DINO uses "
                                 f"(0.4, 1.0) for global and (0.05, 0.4) for local crops")
        if len(mean) != len(std):
            raise ValueError(f"mean and std must have one entry per channel, got {len(mean)} and {len(std)}")
        self.global_size, self.local_size, self.n_local = global_size, local_size, n_local
        self.global_scale, self.local_scale = tuple(global_scale), tuple(local_scale)  # area fractions
        self.mean, self.std = list(mean), list(std)

        def pipeline(size: int, scale, blur_p: float, solarize_p: float) -> v2.Compose:
            steps = [
                v2.ToImage(),
                v2.ToDtype(torch.float32, scale=True),  # uint8 -> [0, 1]; floats unchanged
                v2.RandomResizedCrop(size, scale=scale, interpolation=interpolation, antialias=True),
                ClampUnit(),  # bicubic overshoot would become NaN in the hue jitter
            ]
            if flip:
                steps.append(v2.RandomHorizontalFlip(p=0.5))
            steps += [
                v2.RandomApply([v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)], p=0.8),
                v2.RandomGrayscale(p=0.2),
                _blur(size, blur_p),
            ]
            if solarize_p > 0:
                steps.append(v2.RandomSolarize(threshold=0.5, p=solarize_p))  # on [0, 1] floats
            steps.append(v2.Normalize(self.mean, self.std))
            return v2.Compose(steps)

        self.global1 = pipeline(global_size, global_scale, blur_p=1.0, solarize_p=0.0)
        self.global2 = pipeline(global_size, global_scale, blur_p=0.1, solarize_p=0.2)
        self.local = pipeline(local_size, local_scale, blur_p=0.5, solarize_p=0.0)

    def __call__(self, image) -> list[Tensor]:
        crops = [self.global1(image), self.global2(image)]
        crops += [self.local(image) for _ in range(self.n_local)]
        channels = crops[0].shape[0]
        if channels != len(self.mean):
            raise ValueError(f"the image has {channels} channel(s) but mean/std have {len(self.mean)}; pass the "
                             f"data set's statistics (e.g. mean=(0.1307,), std=(0.3081,) for MNIST)")
        return crops

    def __repr__(self) -> str:
        return (f"MultiCropTransform(global_size={self.global_size}, local_size={self.local_size}, "
                f"n_local={self.n_local})")


def collate_crops(samples: Sequence) -> dict:
    """[sample_1, ..., sample_B] -> {"crops": [(B, C, h, w) per crop position]} (+ "labels" (B,) if given).

    A sample is a list of crop tensors (from `MultiCropTransform`) or a (crops, label) pair as returned by
    a labelled data set wrapped with the transform."""
    if len(samples) == 0:
        raise ValueError("collate_crops got an empty batch")
    crop_lists, labels = [], []
    for sample in samples:
        if isinstance(sample, tuple) and len(sample) == 2 and isinstance(sample[0], (list, tuple)):
            crops, label = sample
            labels.append(label)
        else:
            crops = sample
        if not isinstance(crops, (list, tuple)) or not all(torch.is_tensor(c) for c in crops):
            raise ValueError("collate_crops expects samples that are lists of crop tensors (MultiCropTransform's "
                             "output) or (crops, label) tuples")
        crop_lists.append(crops)
    n = len(crop_lists[0])
    if any(len(c) != n for c in crop_lists):
        raise ValueError("every sample must have the same number of crops")
    batch = {"crops": [torch.stack([c[v] for c in crop_lists]) for v in range(n)]}  # n x (B, C, h, w)
    if labels:
        if len(labels) != len(samples):
            raise ValueError("either every sample has a label or none has")
        batch["labels"] = torch.as_tensor(labels)
    return batch
