"""Helpers shared by the subcommands: devices, run folders, the starting encoder (`--init`), and the data.

This module belongs to the CLI layer, so it may import `tasks/` (data) — lazily, inside the functions,
so that `data2vec --help` stays fast.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ..checkpoint import set_seed  # noqa: F401  (re-exported for the subcommands)
from ..config import EncoderConfig
from ..devices import resolve_device
from .errors import CliError, with_fix

TEXT_SUFFIXES = (".txt", ".raw", ".tokens", ".text")
PYTHON_DOCS = "python-docs"  # --data value of the built-in text corpus (tasks/text/python_docs.py)


# ---- devices and folders -----------------------------------------------------------------------------
def choose_device(name: str) -> str:
    """The --device value resolved ('auto' -> 'cuda' when a GPU is visible, else 'cpu'); a device this machine
    does not have is a one-line CliError."""
    try:
        return str(resolve_device(name))
    except ValueError as error:
        raise CliError(str(error)) from None


def require_path(path: str | Path, what: str, fix: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise CliError(f"{what} not found: {path}; fix: {fix}")
    return path


# What each command writes into --out. `result`: entries (glob patterns) whose presence means the folder holds a
# finished or resumable result, which a new launch must not replace unasked; `outputs`: every entry the command
# writes, which --overwrite deletes first (nothing else in the folder is touched); `progress`: files that, once
# non-empty, show that training has started (a failed launch then keeps its folder for diagnosis or --resume).
@dataclass(frozen=True)
class RunOutputs:
    result: tuple[str, ...]  # entries that make the folder a result
    outputs: tuple[str, ...]  # entries the command writes (the result's and the run's other files)
    progress: tuple[str, ...] = ()  # files that are non-empty once the first update is done


RUN_OUTPUTS = {
    "pretrain": RunOutputs(("checkpoint", "checkpoint.old"),
                           ("checkpoint", "checkpoint.old", "checkpoint.tmp", "metrics.jsonl", "config.json",
                            "summary.json", "plots", "tokenizer", "cache"), progress=("metrics.jsonl",)),
    "finetune": RunOutputs(("metrics.json", "best", "checkpoint", "checkpoint.old"),
                           ("metrics.json", "best", "checkpoint", "checkpoint.old", "checkpoint.tmp", "eval.jsonl",
                            "tokenizer"), progress=("eval.jsonl",)),
    "probe": RunOutputs(("metrics.json",), ("metrics.json",)),
    "demo": RunOutputs(("results.json", "pretrain-*"), ("results.json", "results.txt", "plots", "pretrain-*")),
    "convert": RunOutputs(("config.json", "model.safetensors", "pytorch_model.bin"),
                          ("config.json", "model.safetensors", "pytorch_model.bin", "tokenizer.json",
                           "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt", "vocab.txt",
                           "sentencepiece.bpe.model", "added_tokens.json")),
}


def _entries(out: Path, patterns: tuple[str, ...]) -> list[Path]:
    """The entries of `out` (top level) that match any of `patterns`, sorted."""
    return sorted({p for pattern in patterns for p in out.glob(pattern)}) if out.is_dir() else []


def _remove(path: Path) -> None:
    """Delete a file, a link or a folder with everything in it."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def prepare_run_dir(out: str | Path, command: str, *, resume: bool = False, overwrite: bool = False,
                    can_resume: bool = False) -> tuple[Path, bool]:
    """The run folder of `command`, and whether this launch continues a checkpoint.

    A folder that already holds a result of the command (RUN_OUTPUTS) is refused, so a finished or running run
    is never replaced by accident; --overwrite deletes that result's files first. With `can_resume` (pretrain,
    finetune), --resume continues the checkpoint in `out` when there is one and otherwise starts a new run (with
    a notice), so one command line serves the first launch and every relaunch (a scheduler's requeue,
    `torchrun --max-restarts`, a kill before the first checkpoint)."""
    out = Path(out)
    if resume and overwrite:
        raise CliError("--resume and --overwrite contradict each other; fix: keep --resume to continue the run in "
                       "--out, or --overwrite to replace it")
    spec = RUN_OUTPUTS[command]
    found = _entries(out, spec.result)
    has_ckpt = (out / "checkpoint").is_dir() or (out / "checkpoint.old").is_dir()
    if found and overwrite:
        if os.environ.get("RANK", "0") == "0":
            for path in _entries(out, spec.outputs):
                _remove(path)
        found, has_ckpt = [], False
    if found and not (resume and has_ckpt):
        flags = (["--resume to continue it"] if can_resume and has_ckpt else []) + ["--overwrite to replace it"]
        raise CliError(f"{out} already holds a {command} result ({found[0].name}); fix: add {', '.join(flags)}, "
                       "or choose another --out")
    if resume and not has_ckpt and os.environ.get("RANK", "0") == "0":
        print(f"{command}: --resume: {out} holds no checkpoint yet; starting a new run there", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    return out, resume and has_ckpt


def run_path(path: str | Path, out: str | Path) -> str:
    """`path` as a run's config.json records it: relative to the run folder `out` when it lies inside it, else as
    given. A copied or moved run folder then still matches its checkpoint's configuration on --resume, while a
    path outside it (the --data corpus) keeps telling a real change of input apart."""
    try:
        return Path(path).resolve().relative_to(Path(out).resolve()).as_posix()
    except ValueError:
        return str(path)


def _started(out: Path, spec: RunOutputs, before: set[str]) -> bool:
    """Whether a launch produced something worth keeping: a result, or a progress file with content."""
    if any(p.name not in before for p in _entries(out, spec.result)):
        return True
    return any((out / name).is_file() and (out / name).stat().st_size > 0 for name in spec.progress)


@contextmanager
def removed_on_failure(out: str | Path, command: str):
    """Run the body; when it fails before training produced anything (`_started`), remove what this launch
    created in `out` -- the folder itself if it did not exist, else only the entries that are new -- so that a
    typo in --data leaves no empty or half-built run folder behind. What was there before is never touched, and
    a run that trained keeps its folder (its metrics explain the failure; --resume continues a checkpoint). Only
    rank 0 removes anything (the folder is shared)."""
    out = Path(out)
    existed = out.exists()
    before = set(os.listdir(out)) if out.is_dir() else set()
    new_parents = [p for p in out.parents if not p.exists()]  # created by `mkdir(parents=True)` (e.g. runs/)
    try:
        yield
    except BaseException:
        if os.environ.get("RANK", "0") == "0" and out.is_dir() and not _started(out, RUN_OUTPUTS[command], before):
            if not existed:
                shutil.rmtree(out, ignore_errors=True)
                for parent in new_parents:  # innermost first; a parent another launch has filled since is kept
                    with suppress(OSError):
                        parent.rmdir()
            else:
                for name in set(os.listdir(out)) - before:
                    _remove(out / name)
        raise


def positive(name: str, value, allow_zero: bool = False):
    if value is None:
        return value
    if value < 0 or (value == 0 and not allow_zero):
        raise CliError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}; fix: pass a "
                       f"{'non-negative' if allow_zero else 'positive'} value")
    return value


# ---- text ---------------------------------------------------------------------------------------------
def text_files(path: str | Path) -> list[Path]:
    """A text file, every text file (*.txt, *.raw, *.tokens, *.text) under a folder (sorted), or the
    built-in corpus "python-docs" (the standard library's docstrings, built on first use)."""
    if str(path) == PYTHON_DOCS:
        from tasks.text.python_docs import python_docs_file

        return [python_docs_file()]
    path = require_path(path, "text data", f"pass --data a .txt file, a folder of .txt files or {PYTHON_DOCS}")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
    if not files:
        raise CliError(f"no text files ({', '.join(TEXT_SUFFIXES)}) under {path}; fix: pass --data a text file or a "
                       "folder that holds some")
    return files


def build_text_data(data: str | Path, out: Path, *, tokenizer: str | None, vocab_size: int, seq_len: int,
                    resume: bool) -> tuple[Dataset, object, dict]:
    """Token blocks of `seq_len` from the text at `data`; the tokenizer is loaded (--tokenizer, or the run
    folder's own when resuming) or trained (byte-level BPE) on the data, and saved in out/tokenizer."""
    from tasks.text.corpus import TokenBlockDataset
    from tasks.text.tokenizer import load_tokenizer, train_tokenizer

    files = text_files(data)
    own = out / "tokenizer"
    if tokenizer is not None and resume and run_path(tokenizer, out) in ("tokenizer", "tokenizer/tokenizer.json"):
        tokenizer = None  # --tokenizer naming the run's own copy: the same as leaving it out
    if tokenizer is not None:
        tok = load_tokenizer(require_path(tokenizer, "tokenizer", "pass --tokenizer a tokenizer.json or its folder"))
        source, trained = run_path(tokenizer, out), False
        if not resume:
            tok.save(own)  # the run folder carries its tokenizer, so `finetune --init OUT` finds it
    elif resume and (own / "tokenizer.json").is_file():
        tok, source, trained = load_tokenizer(own), run_path(own, out), True
    else:
        tok = train_tokenizer(files, kind="bpe", vocab_size=vocab_size)  # byte-level BPE on --data
        tok.save(own)
        source, trained = run_path(own, out), True
    dataset = TokenBlockDataset([str(f) for f in files], tok, block_size=seq_len, cache_dir=out / "cache")
    if len(dataset) == 0:
        raise CliError(f"{data} produced no text blocks; fix: pass a file with some text in it")
    info = {"kind": "text", "path": str(data), "files": len(files), "blocks": len(dataset), "seq_len": seq_len,
            "tokenizer": source, "tokenizer_trained_on_data": trained, "vocab_size": tok.vocab_size, "style": tok.style}
    return dataset, tok, info


def text_overrides(tok) -> dict:
    """Method/encoder fields that must come from the tokenizer."""
    return {"vocab_size": tok.vocab_size, "pad_id": tok.pad_id, "mask_id": tok.mask_id,
            "special_ids": tuple(sorted(set(tok.special_ids)))}


# ---- vision -------------------------------------------------------------------------------------------
class Mapped(Dataset):
    """dataset[i] -> fn(dataset[i]) (picklable when fn is, for DataLoader workers)."""

    def __init__(self, dataset, fn):
        self.dataset, self.fn = dataset, fn

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return self.fn(self.dataset[i])


def images_only(sample) -> dict:
    return {"images": sample[0]}


class ApplyToImage:
    """(image, label) -> transform(image): for transforms that produce several crops (DINO)."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, sample):
        return self.transform(sample[0])


def vision_stats_name(data: str) -> str:
    from tasks.vision.registry import detect_vision_layout, stats_name

    return stats_name(detect_vision_layout(data), data)


def build_vision_data(data: str, image_size: int, *, multicrop: dict | None = None) -> tuple[Dataset, dict]:
    """Images for pretraining: a known data set name ("digits") or a folder (CIFAR-10, MNIST, ImageFolder).

    Items are {"images": (C, H, W)} with the pretraining augmentation, or, with `multicrop` (keyword
    arguments of `baselines.multicrop.MultiCropTransform`), a list of crops for `collate_crops`.
    """
    from tasks.vision.registry import build_vision_dataset

    if str(data).lower() != "digits":
        require_path(data, "image data", "pass --data digits, a CIFAR-10/MNIST folder or an image folder "
                                         "(<root>/<class>/<image>)")
    if multicrop is None:
        base = build_vision_dataset(data, "train", image_size=image_size, augment=True)
        dataset = Mapped(base, images_only)
    else:
        from baselines.multicrop import MultiCropTransform
        from tasks.vision.transforms import DATASET_STATS

        mean, std = DATASET_STATS[vision_stats_name(data)]
        base = build_vision_dataset(data, "train", image_size=None)
        dataset = Mapped(base, ApplyToImage(MultiCropTransform(global_size=image_size, mean=mean, std=std,
                                                               **multicrop)))
    if len(dataset) == 0:
        raise CliError(f"{data} holds no images; fix: check the folder layout (<root>/<class>/<image>)")
    first = base[0][0]
    info = {"kind": "vision", "path": str(data), "images": len(dataset), "image_size": image_size,
            "channels": int(first.shape[0])}
    return dataset, info


def health_knn_probe(data: str, image_size: int, n: int, seed: int):
    """The online k-NN's labelled images (`data2vec.diagnostics.LabelledProbe`): `n` seeded images of the train
    split with the evaluation transform (no augmentation), 3/4 of them the memory bank and the other 1/4 the
    held-out queries. The test split is never read, so a run's k-NN curve can guide choices without touching what
    is reported. None (with a notice) when the data set has no labelled train split."""
    from ..diagnostics import LabelledProbe

    try:
        train, _, num_classes, _ = image_splits(data, image_size, seed, augment_train=False)
    except (CliError, ValueError, OSError) as error:
        print(f"pretrain: no online k-NN ({error})", flush=True)
        return None
    subset = seeded_subset(train, n, seed)
    # a seeded shuffle before the bank/query split: `seeded_subset` keeps index order, and a folder listed class by
    # class (CIFAR-10's JPEG folders) would put the first classes in the bank and the last ones in the queries
    order = torch.randperm(len(subset), generator=torch.Generator().manual_seed(seed + 1)).tolist()
    images = torch.stack([subset[i][0] for i in order])  # (n, C, H, W)
    labels = torch.tensor([int(subset[i][1]) for i in order])  # (n,)
    n_bank = len(subset) - max(1, len(subset) // 4)
    return LabelledProbe(images[:n_bank], labels[:n_bank], images[n_bank:], labels[n_bank:], num_classes=num_classes)


# ---- the starting encoder of finetune / probe (--init) ---------------------------------------------------
@dataclass
class Init:
    """The encoder a fine-tuning or probing run starts from."""

    backbone: nn.Module  # TextTransformer | VisionTransformer
    encoder_config: EncoderConfig
    source: str  # "huggingface:<family>", "checkpoint:<folder>" or "random:<preset>"
    tokenizer_dir: Path | None = None  # where a tokenizer was found next to the weights
    head_state: dict | None = None  # the task head's tensors of a fine-tuned checkpoint (a `finetune` best/)


def load_init(init: str | None, modality: str, preset: str, overrides: dict | None = None) -> Init:
    """A random encoder of `preset` (init None), or the encoder of any folder `hub.load_pretrained` reads: a
    HuggingFace folder, a `pretrain` run folder or its checkpoint/, a `finetune` best/, a `convert` output."""
    from ..backbone import build_backbone
    from ..config import get_preset
    from ..hub import find_tokenizer_dir, load_pretrained, locate_checkpoint

    if init is None:
        cfg = get_preset(modality, preset, **(overrides or {}))
        return Init(build_backbone(cfg), cfg, f"random:{preset}")
    try:
        folder, kind = locate_checkpoint(init)
        model = load_pretrained(folder)
    except (ValueError, KeyError, OSError, RuntimeError) as error:
        raise CliError(with_fix(f"--init {init}: {error}", "pass a HuggingFace folder, a `data2vec pretrain` run "
                                "folder (or its checkpoint/) or a fine-tuned <out>/best folder")) from None
    cfg = model.encoder_config
    if cfg.modality != modality:
        raise CliError(f"--init {init} is a {cfg.modality} encoder but this task needs a {modality} encoder; "
                       f"fix: use a {modality} checkpoint (or leave --init out for a random {modality} encoder)")
    source = f"huggingface:{model.family}" if kind == "huggingface" else f"checkpoint:{folder}"
    tokenizer_dir = find_tokenizer_dir(folder) if kind == "huggingface" else find_tokenizer_dir(folder, folder.parent)
    head_state = model.head.state_dict() if model.head is not None and kind == "own" else None
    return Init(model.backbone, cfg, source, tokenizer_dir, head_state)


def load_text_tokenizer(tokenizer: str | None, init_tokenizer_dir: Path | None):
    """--tokenizer wins; else the tokenizer found next to the --init weights."""
    from tasks.text.tokenizer import load_tokenizer

    source = tokenizer or init_tokenizer_dir
    if source is None:
        raise CliError("text tasks need a tokenizer; fix: pass --tokenizer PATH (a tokenizer.json or a folder with "
                       "tokenizer.json / vocab.json+merges.txt / vocab.txt), or an --init folder that contains one")
    try:
        return load_tokenizer(source)
    except Exception as error:  # the tokenizers library raises its own Exception type
        raise CliError(f"cannot load the tokenizer {source} ({error}); fix: pass --tokenizer with a valid "
                       "tokenizer.json (train one with tasks.text.tokenizer.train_tokenizer)") from None


def vision_init(data: str, init_path: str | None, preset: str, image_size: int | None, seed: int) -> tuple[Init, int]:
    """The vision encoder (`--init`, or a random `--preset` fitted to the data's size and channels) and the
    input size to use (--image-size, else the encoder's; digits: 8 px for a random encoder)."""
    from ..config import get_preset

    if init_path is None:
        size = image_size or (8 if str(data).lower() == "digits" else get_preset("vision", preset).image_size)
        chans = image_splits(data, size, seed, augment_train=False)[3]
        overrides = {"image_size": size, "in_chans": chans}
        if size % get_preset("vision", preset).patch_size:
            overrides["patch_size"] = 2 if size % 2 == 0 else 1  # small images: the largest patch that fits
        init = load_init(None, "vision", preset, overrides)
    else:
        init = load_init(init_path, "vision", preset)
    patch = init.encoder_config.patch_size
    size = image_size or init.encoder_config.image_size
    if size % patch:
        raise CliError(f"--image-size {size} is not divisible by the encoder's patch size {patch}; "
                       f"fix: use a multiple of {patch}")
    return init, size


def check_channels(data_chans: int, encoder_chans: int) -> None:
    if data_chans != encoder_chans:
        raise CliError(f"the images have {data_chans} channel(s) but the encoder expects {encoder_chans}; fix: use "
                       "a data set with matching channels or an encoder trained on such images")


def image_splits(data: str, image_size: int, seed: int, augment_train: bool = True):
    """`tasks.vision.train_test_datasets`, with a missing or unknown --data reported as a CliError."""
    from tasks.vision import train_test_datasets

    try:
        return train_test_datasets(data, image_size, seed, augment_train=augment_train)
    except FileNotFoundError as error:
        raise CliError(with_fix(f"--data: {error}", "give 'digits', a CIFAR-10/MNIST folder or an image folder "
                                "(<class>/<image>)")) from None


def dataset_labels(dataset) -> np.ndarray:
    """Every label of an image data set without decoding an image: the `labels` array of the loaders in
    `tasks.vision` (through any Subset), else one pass over the items (slow: decodes everything)."""
    from torch.utils.data import Subset

    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset)[np.asarray(dataset.indices)]
    labels = getattr(dataset, "labels", None)
    if labels is not None:
        return np.asarray(labels)
    return np.asarray([int(dataset[i][1]) for i in range(len(dataset))])


def seeded_subset(dataset, n: int | None, seed: int):
    """A seeded random subset of n examples (all of them if n is None or larger), in index order."""
    from torch.utils.data import Subset

    if n is None or n >= len(dataset):
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n]
    return Subset(dataset, sorted(order.tolist()))
