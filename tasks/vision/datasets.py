"""Image classification data sets as torch Datasets of (image, label): CIFAR-10, MNIST, ImageFolder, digits.

What it implements
- `load_cifar10(root, split)`: the python pickle layout (`cifar-10-batches-py/data_batch_1..5`,
  `test_batch`, `batches.meta`; Krizhevsky 2009), an image-folder layout (`<root>/{train,test}/<class>/*`,
  e.g. `CIFAR-10-images/`), or a `.tar.gz` of either (extracted once into a cache folder).
- `load_mnist(root, split)`: the IDX files of LeCun et al. (`train-images-idx3-ubyte`, ..., also the
  `.gz`, dotted `train-images.idx3-ubyte` and torchvision `MNIST/raw/` variants). The IDX header:
  two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then each dimension as a
  big-endian int32.
- `load_image_folder(root)`: the ImageNet/torchvision ImageFolder layout (`<root>/<class>/<image>`,
  classes sorted by name -> label ids 0..C-1).
- `load_digits_dataset(split)`: scikit-learn's bundled 8x8 digits (1,797 images, grey values 0..16),
  split into train/test with a seeded, class-stratified split.
- `build_vision_dataset(name_or_path, split, image_size)`: recognises "digits", "cifar10"/"mnist" folders,
  any ImageFolder, and attaches the pretraining or evaluation transform.

Every dataset returns (float tensor C x H x W with values in [0, 1], int label) when no transform is
given; with a transform, the transform receives a uint8 `tv_tensors.Image` (digits: float in [0, 1]).

Differences from the originals
- Digits are scaled from 0..16 to [0, 1] (divided by 16) so every data set has the same value range.
- Image files are decoded with PIL and converted to RGB (grey ImageFolder images become 3 channels). A file
  with an image extension that PIL cannot open or decode (not an image, truncated, corrupt) is a ValueError
  naming the file, raised when that image is first read (checking every file up front would read a whole
  ImageNet before the first step); torchvision's ImageFolder lets PIL's error through.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import struct
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

# What PIL raises for a file it cannot identify or decode: UnidentifiedImageError and "image file is truncated" are
# OSErrors; some decoders raise SyntaxError ("broken PNG file"), ValueError, EOFError or struct.error.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
# what an image data set given by path may be: the fix of every message about one that is not image data
VISION_DATA_FIX = ("pass 'digits', a CIFAR-10 or MNIST folder (or archive), or an image folder <root>/<class>/<image> "
                   "(or <root>/<split>/<class>/<image>)")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_SPLIT_ALIASES = {"train": "train", "test": "test", "val": "test", "valid": "test", "validation": "test", "dev": "test"}


def normalise_split(split: str) -> str:
    if split not in _SPLIT_ALIASES:
        raise ValueError(f"split must be 'train' or 'test' (or val/valid/validation/dev for test), got {split!r}")
    return _SPLIT_ALIASES[split]


def _default_cache_dir() -> Path:
    return Path(os.environ.get("DATA2VEC_CACHE", Path.home() / ".cache" / "data2vec"))


class ArrayImageDataset(Dataset):
    """Images held in one array: uint8 (N, H, W) or (N, H, W, C), or float (N, H, W) in [0, 1]."""

    def __init__(self, images: np.ndarray, labels: Sequence[int], transform: Callable | None = None,
                 classes: Sequence[str] | None = None):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform
        self.classes = list(classes) if classes is not None else [str(c) for c in sorted(set(self.labels.tolist()))]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = torch.from_numpy(np.array(self.images[i], copy=True))  # a copy: IDX arrays are read-only
        img = img.unsqueeze(0) if img.ndim == 2 else img.permute(2, 0, 1)  # (H, W) or (H, W, C) -> (C, H, W)
        img = tv_tensors.Image(img)
        if self.transform is not None:
            img = self.transform(img)
        elif img.dtype == torch.uint8:
            img = img.float() / 255.0
        return img.as_subclass(torch.Tensor) if isinstance(img, tv_tensors.Image) else img, int(self.labels[i])


class ImageFolderDataset(Dataset):
    """`<root>/<class>/<image>` files; labels are the class folders' positions in sorted order."""

    def __init__(self, root: str | Path, transform: Callable | None = None):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"image folder not found: {root}; fix: {VISION_DATA_FIX}")
        self.root = root
        self.classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not self.classes:
            raise FileNotFoundError(f"{root} has no class sub-folders; fix: {VISION_DATA_FIX}")
        self.samples: list[tuple[Path, int]] = []
        for label, cls in enumerate(self.classes):
            files = sorted(p for p in (root / cls).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
            self.samples.extend((p, label) for p in files)
        if not self.samples:
            raise FileNotFoundError(f"{root}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in its class folders; "
                                    "fix: put the images in <root>/<class>/")
        self.transform = transform

    @property
    def labels(self) -> np.ndarray:
        return np.asarray([label for _, label in self.samples], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image, UnidentifiedImageError

        path, label = self.samples[i]
        try:
            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGB"))  # (H, W, 3) uint8
        except _DECODE_ERRORS as error:  # not an image, truncated, or corrupt: name the file, not PIL's traceback
            reason = "not an image format PIL recognises" if isinstance(error, UnidentifiedImageError) else error
            raise ValueError(f"cannot read the image {path} ({reason}); fix: remove or replace that file") from None
        img = tv_tensors.Image(torch.from_numpy(arr.copy()).permute(2, 0, 1))  # (3, H, W)
        img = self.transform(img) if self.transform is not None else img.float() / 255.0
        return img.as_subclass(torch.Tensor) if isinstance(img, tv_tensors.Image) else img, label


def load_image_folder(root: str | Path, transform: Callable | None = None) -> ImageFolderDataset:
    return ImageFolderDataset(root, transform)


# ---- archives -----------------------------------------------------------------------------------------


def extract_archive(archive: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Extract a .tar/.tar.gz/.tgz once into `<cache>/extracted/<name>-<hash>/` and return that folder."""
    archive = Path(archive)
    if not archive.is_file():
        raise FileNotFoundError(f"archive not found: {archive}; fix: {VISION_DATA_FIX}")
    st = archive.stat()
    key = hashlib.sha1(f"{archive.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    base = archive.name.split(".")[0]
    dest = Path(cache_dir or _default_cache_dir()) / "extracted" / f"{base}-{key}"
    done = dest / ".complete"
    if not done.is_file():
        tmp = dest.with_name(dest.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        if dest.exists():
            import shutil

            shutil.rmtree(dest)
        os.replace(tmp, dest)
        done.touch()
    return dest


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar"))


# ---- CIFAR-10 -----------------------------------------------------------------------------------------


def find_cifar_pickle_dir(root: Path) -> Path | None:
    for d in (root, root / "cifar-10-batches-py"):
        if (d / "data_batch_1").is_file() or (d / "test_batch").is_file():
            return d
    return None


def find_split_folder(root: Path, split: str) -> Path | None:
    """`<root>/<split>/<class>/` or one level below (e.g. `<root>/CIFAR-10-images/<split>/`)."""
    names = ("train",) if split == "train" else ("test", "val", "valid", "validation")
    for base in [root] + sorted(p for p in root.iterdir() if p.is_dir()):
        for n in names:
            if (base / n).is_dir():
                return base / n
    return None


def load_cifar10(root: str | Path, split: str = "train", transform: Callable | None = None,
                 cache_dir: str | Path | None = None) -> Dataset:
    """CIFAR-10 (50,000 train / 10,000 test 32x32 RGB) from the pickle or image-folder layout or a tarball."""
    split = normalise_split(split)
    root = Path(root)
    if is_archive(root):
        root = extract_archive(root, cache_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"CIFAR-10 folder not found: {root}; fix: {VISION_DATA_FIX}")
    pdir = find_cifar_pickle_dir(root)
    if pdir is not None:
        names = [f"data_batch_{k}" for k in range(1, 6)] if split == "train" else ["test_batch"]
        images, labels = [], []
        for n in names:
            f = pdir / n
            if not f.is_file():
                raise FileNotFoundError(f"CIFAR-10 pickle layout: missing {f}; fix: extract the whole "
                                        "cifar-10-python.tar.gz again")
            with open(f, "rb") as fh:
                batch = pickle.load(fh, encoding="bytes")
            data = batch.get(b"data", batch.get("data"))
            lab = batch.get(b"labels", batch.get("labels"))
            rows = np.asarray(data, dtype=np.uint8)  # (N, 3072): 1024 red, 1024 green, 1024 blue values per image
            images.append(rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # (N, 3, 32, 32) -> (N, 32, 32, 3)
            labels.extend(int(x) for x in lab)
        classes = CIFAR10_CLASSES
        meta = pdir / "batches.meta"
        if meta.is_file():
            with open(meta, "rb") as fh:
                m = pickle.load(fh, encoding="bytes")
            names_ = m.get(b"label_names", m.get("label_names"))
            if names_:
                classes = tuple(n.decode() if isinstance(n, bytes) else n for n in names_)
        return ArrayImageDataset(np.concatenate(images), labels, transform, classes)
    folder = find_split_folder(root, split)
    if folder is None:
        raise FileNotFoundError(
            f"{root}: not a CIFAR-10 folder: expected cifar-10-batches-py/{{data_batch_1..5,test_batch}} "
            f"or {split}/<class>/<image> (CIFAR-10-images layout); fix: {VISION_DATA_FIX}"
        )
    return ImageFolderDataset(folder, transform)


# ---- MNIST --------------------------------------------------------------------------------------------

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into an array of its declared type and shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic {raw[:4].hex()}); fix: download the MNIST files again")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}i", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=_IDX_DTYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but holds {data.size} values; fix: download the "
                         "file again (it is cut short)")
    return data.reshape(shape)


def find_idx(root: Path, stem: str) -> Path | None:
    """stem like 'train-images-idx3-ubyte'; also dotted names, .gz, and MNIST/raw sub-folders."""
    prefix, rest = stem.split("-", 1)
    kind, idx = rest.rsplit("-idx", 1)
    names = [stem, f"{prefix}-{kind}.idx{idx}"]
    for d in (root, root / "raw", root / "MNIST" / "raw", root / "mnist"):
        for n in names:
            for cand in (d / n, d / (n + ".gz")):
                if cand.is_file():
                    return cand
    return None


def load_mnist(root: str | Path, split: str = "train", transform: Callable | None = None) -> ArrayImageDataset:
    """MNIST (60,000 train / 10,000 test 28x28 grey) from IDX files (also Fashion-MNIST, same layout)."""
    split = normalise_split(split)
    root = Path(root)
    prefix = "train" if split == "train" else "t10k"
    img_path = find_idx(root, f"{prefix}-images-idx3-ubyte")
    lab_path = find_idx(root, f"{prefix}-labels-idx1-ubyte")
    if img_path is None or lab_path is None:
        missing = f"{prefix}-images-idx3-ubyte" if img_path is None else f"{prefix}-labels-idx1-ubyte"
        raise FileNotFoundError(f"MNIST: missing {root / missing} (or its .gz); fix: put the IDX files in {root}")
    images, labels = read_idx(img_path), read_idx(lab_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"MNIST: {img_path} shape {images.shape} does not match {lab_path} shape {labels.shape}; "
                         "fix: download the MNIST files again")
    return ArrayImageDataset(images, labels.astype(np.int64), transform, [str(d) for d in range(10)])


# ---- scikit-learn digits ------------------------------------------------------------------------------


def load_digits_dataset(split: str = "train", test_fraction: float = 0.2, seed: int = 0,
                        transform: Callable | None = None) -> ArrayImageDataset:
    """scikit-learn's 8x8 digits as (1, 8, 8) float images in [0, 1] (grey 0..16 divided by 16).

    The split is stratified by class and seeded: the same `seed` and `test_fraction` always give the
    same images (1,438 train / 359 test by default).
    """
    from sklearn.datasets import load_digits

    split = normalise_split(split)
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    d = load_digits()
    images = (d.images / 16.0).astype(np.float32)  # (1797, 8, 8) in [0, 1]
    labels = d.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    test_idx = []
    for c in np.unique(labels):  # stratified: the same fraction of every class goes to test
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        test_idx.extend(idx[: int(round(len(idx) * test_fraction))].tolist())
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test_idx] = True
    keep = np.flatnonzero(is_test if split == "test" else ~is_test)
    return ArrayImageDataset(images[keep], labels[keep], transform, [str(k) for k in range(10)])
