"""`audio_datasets(path, task)`: the train / validation / test datasets of a speech task, found by folder layout.

Recognised, for `task="keywords"` (classification, `keywords.load_keywords`):
- a keyword folder (Speech Commands with its lists, or `<split>/<word>/`), or a corpus built by
  `python -m tasks.audio.corpus` (its `keywords/` folder);
for `task="ctc"` (character recognition, `librispeech.load_transcribed`):
- a folder of split folders `<root>/<split>/<speaker>/<chapter>/...` (train; validation, valid, val or dev; test),
  or a corpus built by `python -m tasks.audio.corpus` (its `transcribed/` folder);
- LibriSpeech's `LibriSpeech/` folder: train = every `train-*` subset present (train-clean-100, -360, other-500),
  validation = `dev-clean`, test = `test-clean` (the "-other" sets are the papers' second, harder column: pass such
  a subset folder as its own data set to score it).
A split that is missing is absent from the returned dict (a corpus with no validation split fine-tunes without one).

Differences from the original: fairseq fine-tunes from manifests it writes first (`wav2vec_manifest.py`); these
datasets read the folders directly.
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from .keywords import find_split_folder, load_keywords
from .librispeech import TranscribedSpeech, load_transcribed
from .waveform import SAMPLE_RATE

TASKS = ("keywords", "ctc")
_LIBRISPEECH = {"validation": ("dev-clean",), "test": ("test-clean",)}  # train: every train-* subset


def _corpus_part(root: Path, name: str) -> Path:
    """`root/name` when root is a corpus written by tasks.audio.corpus (it has a manifest.json), else root."""
    return root / name if (root / "manifest.json").is_file() and (root / name).is_dir() else root


def _transcribed_folders(root: Path) -> dict[str, list[Path]]:
    """split -> the folders whose utterances make it."""
    folders = {}
    for split in ("train", "validation", "test"):
        found = find_split_folder(root, split)
        if found is not None:
            folders[split] = [found]
    if folders:
        return folders
    train = sorted(p for p in root.glob("train-*") if p.is_dir())
    if train:
        folders["train"] = train
    for split, names in _LIBRISPEECH.items():
        present = [root / n for n in names if (root / n).is_dir()]
        if present:
            folders[split] = present
    if not folders:
        raise FileNotFoundError(f"{root}: no split folders (train, validation, test) and no LibriSpeech subsets "
                                "(train-*, dev-clean, test-clean); fix: pass a folder holding them, or one subset "
                                "folder to load_transcribed")
    return folders


def audio_datasets(path: str | Path, task: str, sample_rate: int = SAMPLE_RATE, train_transform=None,
                   keywords=None) -> dict[str, Dataset]:
    """{split: dataset} for the splits present. keywords: (waveform, label) items with `.classes`; ctc: (waveform,
    transcript) items with `.transcripts`. `train_transform` (e.g. `waveform.RandomCrop`) applies to train only."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"speech data not found: {root}; fix: pass a keyword folder, a LibriSpeech folder or a "
                                "corpus built by python -m tasks.audio.corpus")
    out: dict[str, Dataset] = {}
    if task == "keywords":
        root = _corpus_part(root, "keywords")
        for split in ("train", "validation", "test"):
            try:
                out[split] = load_keywords(root, split, sample_rate, train_transform if split == "train" else None,
                                           keywords)
            except FileNotFoundError:
                if split == "train":
                    raise
        return out
    for split, folders in _transcribed_folders(_corpus_part(root, "transcribed")).items():
        utterances = [u for f in folders for u in load_transcribed(f).utterances]  # several train-* subsets: one list
        out[split] = TranscribedSpeech(utterances, sample_rate, train_transform if split == "train" else None)
    if "train" not in out:
        raise FileNotFoundError(f"{root}: no training split; fix: add a train folder (or LibriSpeech train-* subsets)")
    return out
