"""The data a study (and the commands) pretrain and score on: text corpora and their tokenizer, image data sets
and their splits, the online k-NN probe's labelled images, speech crops, seeded subsets.

This is where the library meets `tasks/` (the data sets): the study pipeline and the CLI wire them in, the core
never imports them. `tasks/` is imported lazily, inside the functions, so that `data2vec --help` stays fast.
Bad input is a `StudyError` (a ValueError) whose message names the problem and the fix.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from tasks.text.python_docs import NAME as PYTHON_DOCS  # the --data value of the built-in text corpus

from .errors import StudyError

TEXT_SUFFIXES = (".txt", ".raw", ".tokens", ".text")


# ---- paths ----------------------------------------------------------------------------------------------
def require_path(path: str | Path, what: str, fix: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise StudyError(f"{what} not found: {path}; fix: {fix}")
    return path


# What each command writes into --out. `result`: entries (glob patterns) whose presence means the folder holds a
# finished or resumable result, which a new launch must not replace unasked; `outputs`: every entry the command

def run_path(path: str | Path, out: str | Path) -> str:
    """`path` as a run's config.json records it: relative to the run folder `out` when it lies inside it, else as
    given. A copied or moved run folder then still matches its checkpoint's configuration on --resume, while a
    path outside it (the --data corpus) keeps telling a real change of input apart."""
    try:
        return Path(path).resolve().relative_to(Path(out).resolve()).as_posix()
    except ValueError:
        return str(path)



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
        raise StudyError(f"no text files ({', '.join(TEXT_SUFFIXES)}) under {path}; fix: pass --data a text file or a "
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
        raise StudyError(f"{data} produced no text blocks; fix: pass a file with some text in it")
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
        raise StudyError(f"{data} holds no images; fix: check the folder layout (<root>/<class>/<image>)")
    first = base[0][0]
    info = {"kind": "vision", "path": str(data), "images": len(dataset), "image_size": image_size,
            "channels": int(first.shape[0])}
    return dataset, info


# ---- speech -------------------------------------------------------------------------------------------
def waveform_only(sample):
    """(waveform, label or transcript) -> waveform: pretraining reads no labels."""
    return sample[0]


# --crop-seconds by preset: released data2vec-audio base crops to max_sample_size 320,000 samples (20 s); the reduced
# presets crop to a few seconds so a CPU batch stays small (keyword clips are 1 s: whole at every preset)
AUDIO_CROP_SECONDS = {"tiny": 1.0, "mini": 3.0, "small": 10.0, "base": 20.0}
AUDIO_FIX = ("pass --data a keyword folder (<word>/<file>.wav, Speech Commands), a LibriSpeech folder (train-*, or one "
             "subset), transcribed split folders or a corpus built by python -m tasks.audio.corpus")


def build_audio_data(data: str | Path, *, crop_seconds: float, sample_rate: int = 16_000) -> tuple[Dataset, dict,
                                                                                                     object]:
    """Speech for pretraining: the train split of `data` (`tasks.audio.registry.pretraining_speech`), each utterance
    a random crop of at most `crop_seconds` (a new window per epoch: the crop is seeded per sample and epoch by the
    engine), labels and transcripts dropped. -> (dataset of waveforms (N_i,), data_info, collate_fn giving
    {"waveform" (B, S), "lengths" (B,)}).

    Differences from fairseq's pretraining data (`max_sample_size` 250k-320k samples, `min_sample_size` 32k): the
    crop is per sample and the batch is padded (fairseq crops a batch to its shortest utterance), and no utterance
    is dropped for being short (one shorter than the feature encoder's 400-sample receptive field has no frame)."""
    from tasks.audio import AudioCollate, RandomCrop
    from tasks.audio.registry import pretraining_speech

    if crop_seconds <= 0:
        raise StudyError(f"the crop must be positive, got {crop_seconds} s; fix: pass a crop of a few seconds "
                         "(released: 15-20 s)")
    require_path(data, "speech data", AUDIO_FIX)
    crop = max(1, round(crop_seconds * sample_rate))
    try:
        base, layout = pretraining_speech(data, sample_rate, RandomCrop(crop))
    except ImportError as error:  # soundfile, the optional audio extra
        raise StudyError(str(error)) from None
    except (FileNotFoundError, ValueError) as error:
        raise StudyError(f"--data: {error}" if "fix:" in str(error) else f"--data: {error}; fix: {AUDIO_FIX}") from None
    if len(base) == 0:
        raise StudyError(f"{data} holds no training utterances; fix: {AUDIO_FIX}")
    info = {"kind": "audio", "path": str(data), "layout": layout, "utterances": len(base), "sample_rate": sample_rate,
            "crop_seconds": crop_seconds, "crop_samples": crop}
    return Mapped(base, waveform_only), info, AudioCollate()


def health_knn_probe(data: str, image_size: int, n: int, seed: int):
    """The online k-NN's labelled images (`data2vec.diagnostics.LabelledProbe`): `n` seeded images of the train
    split with the evaluation transform (no augmentation), 3/4 of them the memory bank and the other 1/4 the
    held-out queries. The test split is never read, so a run's k-NN curve can guide choices without touching what
    is reported. None (with a notice) when the data set has no labelled train split."""
    from ..diagnostics import LabelledProbe

    try:
        train, _, num_classes, _ = image_splits(data, image_size, seed, augment_train=False)
    except (ValueError, OSError) as error:  # StudyError is a ValueError
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



def image_splits(data: str, image_size: int, seed: int, augment_train: bool = True):
    """`tasks.vision.train_test_datasets`, with a missing or unknown --data reported as a StudyError."""
    from tasks.vision import train_test_datasets

    try:
        return train_test_datasets(data, image_size, seed, augment_train=augment_train)
    except FileNotFoundError as error:
        fix = "" if "fix:" in str(error) else \
            "; fix: give 'digits', a CIFAR-10/MNIST folder or an image folder (<class>/<image>)"
        raise StudyError(f"--data: {error}{fix}") from None



def seeded_subset(dataset, n: int | None, seed: int):
    """A seeded random subset of n examples (all of them if n is None or larger), in index order."""
    from torch.utils.data import Subset

    if n is None or n >= len(dataset):
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n]
    return Subset(dataset, sorted(order.tolist()))
