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

`pretraining_speech(path)`: the unlabelled speech a pretraining run reads, from any of the layouts above: the train
split only (validation and test stay unseen), of both parts of a built corpus (its keywords and its sentences),
of a LibriSpeech root or split folders with transcripts, of a single transcribed subset folder (all of it), or of a
keyword folder. Items keep their label or transcript; the caller drops it.

Differences from the original: fairseq fine-tunes from manifests it writes first (`wav2vec_manifest.py`); these
datasets read the folders directly.
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import ConcatDataset, Dataset

from .keywords import KEYWORD_FIX, find_split_folder, load_keywords
from .librispeech import TRANSCRIBED_FIX, TranscribedSpeech, load_transcribed
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


def pretraining_speech(path: str | Path, sample_rate: int = SAMPLE_RATE, transform=None) -> tuple[Dataset, str]:
    """(the training speech at `path`, the layout it was read as: "corpus", "transcribed", "transcribed-subset" or
    "keywords"). `transform` (e.g. `waveform.RandomCrop`) applies to every item."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"speech data not found: {root}; fix: pass a keyword folder, a LibriSpeech folder or a "
                                "corpus built by python -m tasks.audio.corpus")
    if (root / "manifest.json").is_file() and (root / "keywords").is_dir() and (root / "transcribed").is_dir():
        parts = [audio_datasets(root, task, sample_rate, transform)["train"] for task in TASKS]
        return ConcatDataset(parts), "corpus"
    # one LibriSpeech subset folder (train-clean-100, ...): <speaker>/<chapter>/*.trans.txt right under it
    if next(root.glob("*/*/*.trans.txt"), None) is not None:
        return load_transcribed(root, sample_rate, transform), "transcribed-subset"
    # LibriSpeech's root or split folders: <subset>/<speaker>/<chapter>/*.trans.txt; the train split only (a root
    # holding dev-clean and test-clean alone is refused by audio_datasets, never pretrained on)
    if next(root.glob("*/*/*/*.trans.txt"), None) is not None:
        return audio_datasets(root, "ctc", sample_rate, transform)["train"], "transcribed"
    try:
        return load_keywords(root, "train", sample_rate, transform), "keywords"
    except FileNotFoundError:
        raise FileNotFoundError(f"{root}: no speech layout found (a corpus built by python -m tasks.audio.corpus, "
                                f"LibriSpeech or transcribed split folders, or keyword folders); fix: "
                                f"{TRANSCRIBED_FIX}, or {KEYWORD_FIX}") from None
