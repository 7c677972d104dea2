"""Image data sets (CIFAR-10, MNIST, ImageFolder, scikit-learn digits) and their transforms."""

from .datasets import (
    CIFAR10_CLASSES,
    ArrayImageDataset,
    ImageFolderDataset,
    extract_archive,
    load_cifar10,
    load_digits_dataset,
    load_image_folder,
    load_mnist,
    read_idx,
)
from .registry import build_vision_dataset, detect_vision_layout, image_collate, train_test_datasets
from .transforms import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    DATASET_STATS,
    DIGITS_MEAN,
    DIGITS_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MNIST_MEAN,
    MNIST_STD,
    eval_transform,
    pretrain_transform,
)

__all__ = [
    "CIFAR10_CLASSES", "ArrayImageDataset", "ImageFolderDataset", "extract_archive", "load_cifar10",
    "load_digits_dataset", "load_image_folder", "load_mnist", "read_idx", "build_vision_dataset",
    "detect_vision_layout", "image_collate", "train_test_datasets", "DATASET_STATS", "CIFAR10_MEAN", "CIFAR10_STD",
    "DIGITS_MEAN", "DIGITS_STD",
    "IMAGENET_MEAN", "IMAGENET_STD", "MNIST_MEAN", "MNIST_STD", "eval_transform", "pretrain_transform",
]
