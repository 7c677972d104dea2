"""`build_vision_dataset`: one entry point that recognises a data set by name or by its folder layout.

Recognised: "digits" (scikit-learn, no files), a CIFAR-10 pickle folder or tarball/image-folder with
train/test sub-folders, an MNIST IDX folder, and any ImageFolder (`<root>/<class>/<image>`, or
`<root>/<split>/<class>/<image>`). With `image_size` set, the pretraining (`augment=True`) or evaluation
transform of `tasks.vision.transforms` is attached, normalised with the data set's mean/std.
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from .datasets import (
    VISION_DATA_FIX,
    extract_archive,
    find_cifar_pickle_dir,
    find_idx,
    find_split_folder,
    is_archive,
    load_cifar10,
    load_digits_dataset,
    load_image_folder,
    load_mnist,
    normalise_split,
)
from .transforms import eval_transform, pretrain_transform


def detect_vision_layout(path: str | Path) -> str:
    """'digits', 'cifar10-pickle', 'mnist', 'split-folders' (<root>/{train,test}/<class>/), 'image-folder'
    or 'archive'; FileNotFoundError when there is no such path or the folder matches none, ValueError when the
    path is a file that is not an archive."""
    if str(path).lower() == "digits":
        return "digits"
    path = Path(path)
    if is_archive(path):
        return "archive"
    if path.exists() and not path.is_dir():  # e.g. a README or a text corpus given as image data
        raise ValueError(f"{path} exists but is a file, not image data; fix: {VISION_DATA_FIX}")
    if not path.is_dir():
        raise FileNotFoundError(f"image data set not found: {path}; fix: {VISION_DATA_FIX}")
    if find_cifar_pickle_dir(path) is not None:
        return "cifar10-pickle"
    if find_idx(path, "train-images-idx3-ubyte") or find_idx(path, "t10k-images-idx3-ubyte"):
        return "mnist"
    if find_split_folder(path, "train") is not None or find_split_folder(path, "test") is not None:
        return "split-folders"
    if any(p.is_dir() for p in path.iterdir()):
        return "image-folder"
    raise FileNotFoundError(
        f"{path}: no known image layout "
        f"(cifar-10-batches-py, MNIST IDX files, <split>/<class>/<image>, <class>/<image>); fix: {VISION_DATA_FIX}"
    )


def stats_name(layout: str, path: str | Path) -> str:
    if layout == "digits":
        return "digits"
    if layout == "mnist":
        return "mnist"
    if layout == "cifar10-pickle" or "cifar" in str(path).lower():
        return "cifar10"
    return "imagenet"


def build_vision_dataset(
    name_or_path: str | Path,
    split: str = "train",
    image_size: int | None = None,
    augment: bool = False,
    cache_dir: str | Path | None = None,
) -> Dataset:
    """A (image, label) dataset by name ("digits") or path; transforms attached when image_size is set."""
    layout = detect_vision_layout(name_or_path)
    split = normalise_split(split)
    path = Path(name_or_path)
    if layout == "archive":
        path = extract_archive(path, cache_dir)
        layout = detect_vision_layout(path)
    transform = None
    if image_size is not None:
        stats = stats_name(layout, name_or_path)
        if augment:
            small = stats in ("digits", "mnist")  # digits/MNIST: no flips, milder crops, no colour jitter
            transform = pretrain_transform(image_size, stats, scale=(0.5, 1.0) if small else (0.08, 1.0),
                                           flip=not small, color_jitter=None if small else 0.4)
        else:
            transform = eval_transform(image_size, stats)
    if layout == "digits":
        return load_digits_dataset(split, transform=transform)
    if layout == "mnist":
        return load_mnist(path, split, transform)
    if layout in ("cifar10-pickle", "split-folders"):
        if layout == "split-folders" and "cifar" not in str(name_or_path).lower():
            return load_image_folder(find_split_folder(path, split), transform)
        return load_cifar10(path, split, transform)
    return load_image_folder(path, transform)


def train_test_datasets(data: str | Path, image_size: int, seed: int, augment_train: bool = True):
    """(train, test, num_classes, in_chans) for fine-tuning and probing. A plain ImageFolder (no split
    folders) is split 80/20 with a permutation seeded by `seed`; the others use their own train/test splits."""
    import torch
    from torch.utils.data import Subset

    layout = detect_vision_layout(data)
    train = build_vision_dataset(data, "train", image_size, augment=augment_train)
    test = build_vision_dataset(data, "test", image_size, augment=False)
    if layout == "image-folder":
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).tolist()
        n_test = max(1, len(order) // 5)
        train, test = Subset(train, sorted(order[n_test:])), Subset(test, sorted(order[:n_test]))
    base = train.dataset if isinstance(train, Subset) else train
    num_classes = len(getattr(base, "classes", [])) or int(max(base.labels)) + 1
    in_chans = int(test[0][0].shape[0])
    return train, test, num_classes, in_chans


def image_collate(batch) -> dict:
    """[(image (C, H, W), label), ...] -> {"images": (B, C, H, W), "labels": (B,)}."""
    import torch

    return {"images": torch.stack([b[0] for b in batch]), "labels": torch.tensor([int(b[1]) for b in batch])}
