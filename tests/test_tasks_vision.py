"""Image data sets written in their exact on-disk layouts, and the v2 transforms."""

import gzip
import pickle
import struct
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from tasks.vision import (
    DATASET_STATS,
    build_vision_dataset,
    detect_vision_layout,
    eval_transform,
    load_cifar10,
    load_digits_dataset,
    load_image_folder,
    load_mnist,
    pretrain_transform,
    read_idx,
)


def _write_idx(path, array, gz=False):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(0)
    arrays = {}
    for prefix, n, gz in (("train", 7, False), ("t10k", 3, True)):
        imgs = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        suffix = ".gz" if gz else ""
        _write_idx(d / f"{prefix}-images-idx3-ubyte{suffix}", imgs, gz)
        _write_idx(d / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz)
        arrays[prefix] = (imgs, labels)
    return d, arrays


def test_mnist_idx_plain_and_gz(mnist_dir):
    d, arrays = mnist_dir
    assert detect_vision_layout(d) == "mnist"
    for split, prefix in (("train", "train"), ("test", "t10k")):
        ds = load_mnist(d, split)
        imgs, labels = arrays[prefix]
        assert len(ds) == len(labels)
        x, y = ds[1]
        assert x.shape == (1, 28, 28) and x.dtype == torch.float32
        assert torch.allclose(x[0], torch.from_numpy(imgs[1]).float() / 255)
        assert y == int(labels[1])
    assert read_idx(d / "train-images-idx3-ubyte").shape == (7, 28, 28)
    (d / "bad-idx").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX"):
        read_idx(d / "bad-idx")


def test_mnist_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path, "train")


@pytest.fixture(scope="module")
def cifar_pickle(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    d = root / "cifar-10-batches-py"
    d.mkdir()
    rng = np.random.default_rng(1)
    batches = {}
    for name, n in [(f"data_batch_{k}", 2) for k in range(1, 6)] + [("test_batch", 3)]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)  # rows: 1024 R, 1024 G, 1024 B
        labels = rng.integers(0, 10, n).tolist()
        with open(d / name, "wb") as fh:
            pickle.dump({b"batch_label": name.encode(), b"data": data, b"labels": labels, b"filenames": []}, fh)
        batches[name] = (data, labels)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    with open(d / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": names, b"num_cases_per_batch": 2}, fh)
    return root, batches


def test_cifar_pickle_layout(cifar_pickle):
    root, batches = cifar_pickle
    train, test = load_cifar10(root, "train"), load_cifar10(root / "cifar-10-batches-py", "test")
    assert (len(train), len(test)) == (10, 3)
    assert train.classes[3] == "cat"
    data, labels = batches["data_batch_2"]
    x, y = train[2]  # first image of the second batch
    assert x.shape == (3, 32, 32) and y == labels[0]
    assert torch.allclose(x[1, 0, :5], torch.from_numpy(data[0, 1024:1029]).float() / 255)  # green plane, row 0
    assert torch.allclose(x[2, 31, 31], torch.tensor(data[0, 3071] / 255, dtype=torch.float32))
    assert detect_vision_layout(root) == "cifar10-pickle"


def _image_folder(root, split=None, classes=("cat", "dog"), per_class=2, size=(12, 10)):
    rng = np.random.default_rng(2)
    base = root / split if split else root
    for c in classes:
        (base / c).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(base / c / f"{k:04d}.png")
    (base / classes[0] / "notes.txt").write_text("not an image")


def test_image_folder_and_cifar_folder_layout_and_tarball(tmp_path):
    _image_folder(tmp_path / "plain")
    ds = load_image_folder(tmp_path / "plain")
    assert ds.classes == ["cat", "dog"] and len(ds) == 4 and ds.labels.tolist() == [0, 0, 1, 1]
    x, y = ds[3]
    expected = np.array(Image.open(tmp_path / "plain" / "dog" / "0001.png"))
    assert x.shape == (3, 12, 10) and y == 1
    assert torch.allclose(x, torch.from_numpy(expected).permute(2, 0, 1).float() / 255)
    top = tmp_path / "cif" / "CIFAR-10-images"
    _image_folder(top, "train", per_class=3)
    _image_folder(top, "test", per_class=1)
    assert (len(load_cifar10(tmp_path / "cif", "train")), len(load_cifar10(tmp_path / "cif", "test"))) == (6, 2)
    archive = tmp_path / "CIFAR-10-images.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(top, arcname="CIFAR-10-images")
    ds = load_cifar10(archive, "test", cache_dir=tmp_path / "cache")
    assert len(ds) == 2 and ds[1][1] == 1
    ds = build_vision_dataset(archive, "train", image_size=8, cache_dir=tmp_path / "cache")
    assert len(ds) == 6 and ds[0][0].shape == (3, 8, 8)
    with pytest.raises(FileNotFoundError):
        load_image_folder(tmp_path / "missing")


@pytest.mark.parametrize("damage", ["not_an_image", "truncated", "empty"])
def test_unreadable_image_names_the_file(tmp_path, damage):
    _image_folder(tmp_path)
    good = tmp_path / "dog" / "0000.png"
    bad = tmp_path / "dog" / "0001.png"  # sorted last: samples are cat/0000, cat/0001, dog/0000, dog/0001
    if damage == "not_an_image":
        bad.write_bytes(b"<html>404 Not Found</html>")
    elif damage == "truncated":
        bad.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    else:
        bad.write_bytes(b"")
    ds = load_image_folder(tmp_path)
    assert ds[2][1] == 1  # the intact images still load
    with pytest.raises(ValueError) as caught:
        ds[3]
    message = str(caught.value)
    assert str(bad) in message and "fix: remove or replace that file" in message
    assert "\n" not in message and caught.value.__cause__ is None and caught.value.__suppress_context__


def test_digits_split_is_deterministic_and_stratified():
    train, test = load_digits_dataset("train"), load_digits_dataset("test")
    assert len(train) + len(test) == 1797
    assert abs(len(test) - 0.2 * 1797) <= 10
    x, y = train[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    again = load_digits_dataset("test")
    assert np.array_equal(again.images, test.images) and np.array_equal(again.labels, test.labels)
    other = load_digits_dataset("test", seed=1)
    assert not np.array_equal(other.labels, test.labels) or not np.array_equal(other.images, test.images)
    counts = np.bincount(test.labels, minlength=10)
    assert counts.min() >= 33 and counts.max() <= 38  # about 20% of each class (174..183 images per class)
    from sklearn.datasets import load_digits

    ref = load_digits()
    allx = np.concatenate([train.images, test.images]) * 16
    assert sorted(map(bytes, allx.astype(np.uint8))) == sorted(map(bytes, ref.images.astype(np.uint8)))


def test_transforms_shapes_and_normalisation():
    torch.manual_seed(0)
    img = torch.randint(0, 256, (3, 40, 30), dtype=torch.uint8)
    out = pretrain_transform(24, "cifar10")(img)
    assert out.shape == (3, 24, 24) and out.dtype == torch.float32
    ev = eval_transform(32, "imagenet", crop_pct=0.875)(img)
    assert ev.shape == (3, 32, 32)
    flat = torch.full((3, 16, 16), 128, dtype=torch.uint8)
    mean, std = DATASET_STATS["cifar10"]
    got = eval_transform(16, "cifar10")(flat)
    assert torch.allclose(got[:, 0, 0], (128 / 255 - torch.tensor(mean)) / torch.tensor(std), atol=1e-5)
    grey = pretrain_transform(16, "digits", flip=False)(torch.rand(1, 8, 8))  # float input, one channel
    assert grey.shape == (1, 16, 16)
    ds = build_vision_dataset("digits", "test", image_size=16, augment=True)
    assert ds[0][0].shape == (1, 16, 16)
    with pytest.raises(ValueError, match="mean/std"):
        eval_transform(8, "svhn")
