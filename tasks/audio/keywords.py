"""Keyword spotting data: one folder of recordings per word, split into train / validation / test.

What it implements (Speech Commands, Warden 2018, arXiv 1804.03209, section 5 and the data set's README):
- the Speech Commands layout `<root>/<word>/<speaker>_nohash_<n>.wav` with `validation_list.txt` and
  `testing_list.txt` at the root, one `<word>/<file>.wav` per line: a file listed in one of them belongs to that
  split, a file listed in neither to train; the `_background_noise_` folder (long noise recordings for
  augmentation) is not a class;
- a folder of words without the two lists: each file goes to a split by the data set's own rule, a sha1 hash
  of its speaker id (the file name up to `_nohash_`), so a speaker's recordings all land in one split:
  p = (int(sha1(speaker), 16) mod (2^27)) * 100 / (2^27 - 1); validation if p < 10, test if p < 20, else train;
- the plain layout `<root>/<split>/<word>/*.wav` (split = train, validation (val, valid, dev) or test).
Classes are the word folders in sorted order (label ids 0..C-1), the same for every split; `keywords` keeps a
subset of words and maps every other word to `_unknown_` (the 12-class benchmark's "unknown" class).

Differences from the original: the 12-class benchmark also has a "silence" class cut from `_background_noise_`;
it is not built here (the 35 words, or a subset plus `_unknown_`, are).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .waveform import AUDIO_EXTENSIONS, SAMPLE_RATE, load_audio

BACKGROUND = "_background_noise_"
UNKNOWN = "_unknown_"
LIST_FILES = {"validation": "validation_list.txt", "test": "testing_list.txt"}
_SPLIT_ALIASES = {"train": "train", "training": "train", "validation": "validation", "valid": "validation",
                  "val": "validation", "dev": "validation", "test": "test", "testing": "test"}
_MAX_PER_CLASS = 2**27 - 1  # Speech Commands' MAX_NUM_WAVS_PER_CLASS: the modulus of the hash split
KEYWORD_FIX = ("pass a folder <root>/<word>/<file>.wav (Speech Commands, with validation_list.txt / testing_list.txt) "
               "or <root>/<split>/<word>/<file>.wav")


def normalise_split(split: str) -> str:
    if split not in _SPLIT_ALIASES:
        raise ValueError(f"split must be train, validation or test (or training/val/valid/dev/testing), got {split!r}")
    return _SPLIT_ALIASES[split]


def speaker_of(filename: str) -> str:
    """The speaker id of a Speech Commands file name: everything before `_nohash_` (the whole stem without it)."""
    stem = Path(filename).stem
    return re.sub(r"_nohash_.*$", "", stem)


def hash_split(filename: str, validation_percent: float = 10.0, test_percent: float = 10.0) -> str:
    """The split Speech Commands' rule assigns a file to, from the sha1 of its speaker id (README, `which_set`)."""
    digest = int(hashlib.sha1(speaker_of(filename).encode("utf-8")).hexdigest(), 16)
    percent = (digest % (_MAX_PER_CLASS + 1)) * (100.0 / _MAX_PER_CLASS)
    if percent < validation_percent:
        return "validation"
    if percent < validation_percent + test_percent:
        return "test"
    return "train"


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


def _word_folders(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != BACKGROUND and not p.name.startswith("."))


def find_split_folder(root: Path, split: str) -> Path | None:
    """`<root>/<split>` under any of the split's names (train; validation/valid/val/dev; test/testing)."""
    names = [name for name, target in _SPLIT_ALIASES.items() if target == split]
    return next((root / n for n in names if (root / n).is_dir()), None)


def detect_keyword_layout(root: str | Path) -> str:
    """'split-folders' (<root>/<split>/<word>/), 'speech-commands' (<root>/<word>/ with or without the lists)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"keyword data not found: {root}; fix: {KEYWORD_FIX}")
    if find_split_folder(root, "train") is not None:
        return "split-folders"
    if not _word_folders(root):
        raise FileNotFoundError(f"{root} has no word folders; fix: {KEYWORD_FIX}")
    return "speech-commands"


def _read_list(root: Path, name: str) -> set[str]:
    path = root / name
    if not path.is_file():
        return set()
    return {line.strip().replace("\\", "/") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def speech_commands_files(root: Path, split: str) -> list[tuple[Path, str]]:
    """(file, word) of one split of the Speech Commands layout, by its lists, or by `hash_split` without them."""
    lists = {s: _read_list(root, name) for s, name in LIST_FILES.items()}
    use_lists = any((root / name).is_file() for name in LIST_FILES.values())
    chosen = []
    for word in _word_folders(root):
        for path in _audio_files(root / word):
            relative = path.relative_to(root).as_posix()
            if use_lists:
                where = next((s for s, names in lists.items() if relative in names), "train")
            else:
                where = hash_split(path.name)
            if where == split:
                chosen.append((path, word))
    return chosen


class KeywordDataset(Dataset):
    """(waveform (N,) float32 at `sample_rate`, label) for a list of (file, word); labels index `classes`."""

    def __init__(self, files: Sequence[tuple[Path, str]], classes: Sequence[str], sample_rate: int = SAMPLE_RATE,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.classes = list(classes)
        index = {c: i for i, c in enumerate(self.classes)}
        missing = sorted({w for _, w in files if w not in index})
        if missing:
            raise ValueError(f"KeywordDataset: words {missing} are not among the classes {self.classes}")
        self.files = [Path(p) for p, _ in files]
        self.labels = [index[w] for _, w in files]
        self.sample_rate, self.transform = sample_rate, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        waveform = load_audio(self.files[i], self.sample_rate)  # (N,)
        if self.transform is not None:
            waveform = self.transform(waveform)
        return waveform, self.labels[i]


def load_keywords(root: str | Path, split: str = "train", sample_rate: int = SAMPLE_RATE,
                  transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                  keywords: Sequence[str] | None = None) -> KeywordDataset:
    """One split of a keyword folder (either layout). Classes: every word folder of the data set, sorted; with
    `keywords`, those words (sorted) and `_unknown_` for every other word."""
    root, split = Path(root), normalise_split(split)
    if detect_keyword_layout(root) == "split-folders":
        folder = find_split_folder(root, split)
        if folder is None:
            raise FileNotFoundError(f"{root} has no {split} folder; fix: add {root / split} (<word>/<file>.wav)")
        words = sorted({w for s in ("train", "validation", "test") if (f := find_split_folder(root, s))
                        for w in _word_folders(f)})
        files = [(p, w) for w in _word_folders(folder) for p in _audio_files(folder / w)]
    else:
        words = _word_folders(root)
        files = speech_commands_files(root, split)
    if keywords is not None:
        unknown_words = sorted(set(keywords) - set(words))
        if unknown_words:
            raise ValueError(f"keywords {unknown_words} are not word folders of {root}; fix: choose among {words}")
        keep = set(keywords)
        files = [(p, w if w in keep else UNKNOWN) for p, w in files]
        words = sorted(keep) + ([UNKNOWN] if len(keep) < len(words) else [])
    if not files:
        raise FileNotFoundError(f"{root}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in the {split} split; "
                                f"fix: {KEYWORD_FIX}")
    return KeywordDataset(files, words, sample_rate, transform)
