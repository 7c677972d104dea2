"""A tiny synthetic keyword folder of tones in noise, for smoke runs that must not need espeak-ng (`data2vec compare
--modality audio --quick`, tests).

What it writes (Speech Commands' layout, `keywords.load_keywords`): `<root>/<word>/<speaker>_nohash_<r>.wav` with
`validation_list.txt` and `testing_list.txt`. Word c is a tone of three harmonics at f_c = 200 * 1.5^c Hz, sounding for
0.3-0.6 s at a random place inside a one-second clip, in white noise at 10 dB SNR; each speaker moves every pitch by
a factor in [0.93, 1.07] and the loudness; speakers are disjoint between the splits. Everything is drawn from
`numpy.random.default_rng(seed)`, so the same arguments write the same files.

Differences from the original: not speech at all; it only checks that a pipeline runs and learns something (the
words differ in pitch, which a log-mel spectrogram separates easily).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .noise import coloured_noise, mix_at_snr
from .waveform import SAMPLE_RATE

LIST_NAMES = {"validation": "validation_list.txt", "test": "testing_list.txt"}


def tone_word(rng: np.random.Generator, word: int, pitch: float, seconds: float = 1.0) -> np.ndarray:
    """One clip (seconds x 16 kHz): word's harmonic tone at a random offset, in white noise at 10 dB SNR."""
    n = int(round(seconds * SAMPLE_RATE))
    length = int(rng.uniform(0.3, 0.6) * SAMPLE_RATE)
    t = np.arange(length) / SAMPLE_RATE
    f0 = 200.0 * 1.5 ** word * pitch
    tone = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in (1, 2, 3)) * np.hanning(length)  # (length,)
    word_samples = tone * rng.uniform(0.2, 0.5)  # (length,)
    clip = np.zeros(n)
    start = int(rng.integers(0, n - length + 1))
    clip[start:start + length] = word_samples
    power = float(np.mean(word_samples ** 2))  # the tone's power while it sounds
    return np.clip(mix_at_snr(clip, coloured_noise("white", n, rng), 10.0, power), -1.0, 1.0)


def write_tone_keywords(root: str | Path, words: int = 4, speakers: dict[str, int] | None = None, repeats: int = 2,
                        seed: int = 0) -> Path:
    """Write the folder (module docstring) into `root`; returns it. speakers: per split (default 8 / 3 / 3)."""
    import soundfile

    speakers = speakers or {"train": 8, "validation": 3, "test": 3}
    rng = np.random.default_rng(seed)
    root = Path(root)
    lists: dict[str, list[str]] = {split: [] for split in LIST_NAMES}
    for split, count in speakers.items():
        for s in range(count):
            name, pitch = f"{split[:2]}{s:03d}", rng.uniform(0.93, 1.07)
            for word in range(words):
                for r in range(repeats):
                    relative = f"w{word}/{name}_nohash_{r}.wav"
                    (root / f"w{word}").mkdir(parents=True, exist_ok=True)
                    soundfile.write(root / relative, tone_word(rng, word, pitch), SAMPLE_RATE, subtype="PCM_16")
                    if split in lists:
                        lists[split].append(relative)
    for split, name in LIST_NAMES.items():
        (root / name).write_text("".join(f"{line}\n" for line in lists[split]), encoding="utf-8")
    return root


__all__ = ["tone_word", "write_tone_keywords"]
