"""Transcribed speech in the LibriSpeech layout: (waveform, transcript) pairs for CTC fine-tuning.

What it implements (LibriSpeech, Panayotov et al. 2015, the layout of its `train-clean-100/`, `dev-clean/`, ...
folders; data2vec-audio fine-tunes on its 10 min / 1 h / 10 h / 100 h / 960 h subsets, arXiv 2202.03555 section 5.2):
`<root>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt`, one line per utterance,
`<speaker>-<chapter>-<utterance> TRANSCRIPT IN UPPER CASE`, next to `<speaker>-<chapter>-<utterance>.flac`.
`load_transcribed(root)` reads every `*.trans.txt` under `root` (a subset folder, or `LibriSpeech/` holding
several subsets: pass the subset folder to keep them apart), sorted by utterance id; the audio file may be
`.flac` (LibriSpeech) or `.wav` (what a converted or synthesised corpus may hold).

Differences from the original: fairseq first writes a manifest (`wav2vec_manifest.py`: paths and sample counts)
and a `.ltr` letter file (`libri_labels.py`); here the folder is read directly, and the letters are made on the
fly by `vocab.CharVocab` in the collate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .waveform import SAMPLE_RATE, load_audio

TRANSCRIBED_FIX = ("pass a folder holding <speaker>/<chapter>/<speaker>-<chapter>.trans.txt files (LibriSpeech's "
                   "layout) and the <utterance id>.flac files they list")


@dataclass(frozen=True)
class Utterance:
    """One line of a transcript file and the audio file it names."""

    id: str  # "<speaker>-<chapter>-<utterance>"
    speaker: str  # the id's first field
    path: Path  # the .flac (or .wav) next to the transcript file
    text: str  # the transcript as written (LibriSpeech: upper case, apostrophes, no other punctuation)


def read_transcripts(trans_file: Path) -> list[Utterance]:
    """The utterances of one `*.trans.txt`; ValueError naming the file and line for a malformed line or a missing
    audio file."""
    utterances = []
    for number, line in enumerate(trans_file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        uid, _, text = line.strip().partition(" ")
        if not text.strip() or uid.count("-") < 2:
            raise ValueError(f"{trans_file}:{number}: expected '<speaker>-<chapter>-<utterance> TEXT', got "
                             f"{line.strip()[:60]!r}; fix: {TRANSCRIBED_FIX}")
        audio = next((trans_file.parent / f"{uid}{ext}" for ext in (".flac", ".wav")
                      if (trans_file.parent / f"{uid}{ext}").is_file()), None)
        if audio is None:
            raise ValueError(f"{trans_file}:{number}: no {uid}.flac (or .wav) next to it; fix: {TRANSCRIBED_FIX}")
        utterances.append(Utterance(uid, uid.split("-")[0], audio, " ".join(text.split())))
    return utterances


class TranscribedSpeech(Dataset):
    """(waveform (N,) float32 at `sample_rate`, transcript) per utterance."""

    def __init__(self, utterances: list[Utterance], sample_rate: int = SAMPLE_RATE,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.utterances, self.sample_rate, self.transform = utterances, sample_rate, transform

    @property
    def transcripts(self) -> list[str]:
        return [u.text for u in self.utterances]

    @property
    def speakers(self) -> list[str]:
        return [u.speaker for u in self.utterances]

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        waveform = load_audio(self.utterances[i].path, self.sample_rate)  # (N,)
        if self.transform is not None:
            waveform = self.transform(waveform)
        return waveform, self.utterances[i].text


def load_transcribed(root: str | Path, sample_rate: int = SAMPLE_RATE,
                     transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> TranscribedSpeech:
    """Every utterance of every `*.trans.txt` under `root`, sorted by id."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"transcribed speech not found: {root}; fix: {TRANSCRIBED_FIX}")
    trans_files = sorted(root.rglob("*.trans.txt"))
    if not trans_files:
        raise FileNotFoundError(f"{root}: no *.trans.txt file; fix: {TRANSCRIBED_FIX}")
    utterances = sorted((u for f in trans_files for u in read_transcripts(f)), key=lambda u: u.id)
    return TranscribedSpeech(utterances, sample_rate, transform)
