"""Tiny synthesised speech folders for the audio command and data tests (no data set, no espeak-ng).

A "word" is a chord of two tones whose frequencies name it, with a seeded amplitude envelope, a seeded jitter of
the pitch per speaker and a little noise, so a keyword classifier has something to learn; a "sentence" is one
tone per character (40 ms each, a frequency per letter, silence for the space), so CTC has frames to align.
Files are 16-bit PCM WAV written by Python's `wave` module at 16 kHz (the model's rate; no resampling).
"""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np

RATE = 16_000
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def write_wav(path: Path, samples: np.ndarray, rate: int = RATE) -> Path:
    """Mono float samples in [-1, 1] -> a 16-bit PCM WAV; returns `path`."""
    pcm = np.clip(np.round(np.asarray(samples, dtype=np.float64) * 32767), -32768, 32767).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.tobytes())
    return path


def word_sound(k: int, rng: np.random.Generator, seconds: float = 0.5) -> np.ndarray:
    """Word k: tones at 300 + 150 k Hz and 1.5 times that, pitch jittered by up to 5 %, a Hann envelope, noise."""
    t = np.arange(round(seconds * RATE)) / RATE
    f0 = (300 + 150 * k) * rng.uniform(0.95, 1.05)
    x = np.sin(2 * np.pi * f0 * t) + 0.5 * np.sin(2 * np.pi * 1.5 * f0 * t)
    return 0.4 * x * np.hanning(len(t)) + 0.02 * rng.standard_normal(len(t))


def sentence_sound(text: str, rng: np.random.Generator, seconds_per_char: float = 0.04) -> np.ndarray:
    """One tone per character (letter i at 250 + 60 i Hz), silence for a space, a little noise throughout."""
    n = round(seconds_per_char * RATE)
    t = np.arange(n) / RATE
    pieces = [np.zeros(n) if c == " " else 0.4 * np.sin(2 * np.pi * (250 + 60 * LETTERS.index(c)) * t)
              for c in text.lower()]
    x = np.concatenate([np.zeros(n)] + pieces + [np.zeros(n)])
    return x + 0.01 * rng.standard_normal(len(x))


def write_keyword_folder(root: Path, words=("go", "no", "up"), speakers: dict | None = None,
                         seed: int = 0) -> Path:
    """`<root>/<split>/<word>/<speaker>_nohash_0.wav` for every word and speaker; speakers: split -> count."""
    rng = np.random.default_rng(seed)
    speakers = speakers or {"train": 4, "validation": 1, "test": 1}
    for split, count in speakers.items():
        for s in range(count):
            for k, word in enumerate(words):
                write_wav(root / split / word / f"{split[:2]}{s:02d}_nohash_0.wav", word_sound(k, rng))
    return root


def write_transcribed(root: Path, sentences: list[str], speakers: int = 2, seed: int = 0) -> Path:
    """LibriSpeech's layout under `root`: <speaker>/<chapter>/<speaker>-<chapter>.trans.txt and its WAV files,
    every sentence read by every speaker."""
    rng = np.random.default_rng(seed)
    for s in range(speakers):
        speaker = str(100 + s + 10 * seed)
        chapter = root / speaker / "7"
        lines = []
        for u, text in enumerate(sentences):
            uid = f"{speaker}-7-{u:04d}"
            write_wav(chapter / f"{uid}.wav", sentence_sound(text, rng))
            lines.append(f"{uid} {text.upper()}")
        chapter.mkdir(parents=True, exist_ok=True)
        (chapter / f"{speaker}-7.trans.txt").write_text("\n".join(lines) + "\n")
    return root


def write_corpus(root: Path, words=("go", "no", "up"), sentences=("go up", "no go")) -> Path:
    """The layout `python -m tasks.audio.corpus` writes: keywords/<split>/..., transcribed/<split>/..., a
    manifest.json (here only a marker: the readers look for the file)."""
    write_keyword_folder(root / "keywords", words)
    for k, split in enumerate(("train", "validation", "test")):
        write_transcribed(root / "transcribed" / split, list(sentences), speakers=2 if split == "train" else 1, seed=k)
    (root / "manifest.json").write_text(json.dumps({"synthesised_by": "tests/speech_files.py"}))
    return root
