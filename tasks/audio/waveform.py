"""Reading speech files as 16 kHz mono waveforms: decoding, mono mixdown, resampling, crops, normalisation.

What it implements (data2vec-audio, arXiv 2202.03555 section 4.2, and the released fairseq
`RawAudioDataset` / HF `Wav2Vec2FeatureExtractor` it reads its audio through):
- `read_audio(path)`: any file libsndfile decodes (WAV, FLAC, OGG, ...) through `soundfile`, as float32
  samples in [-1, 1] of shape (N, C) and its sample rate.
- `to_mono(x)`: the mean over channels, (N, C) -> (N,).
- `resample(x, orig_sr, target_sr)`: polyphase resampling (`scipy.signal.resample_poly`) by the reduced ratio
  up / down = target_sr / orig_sr: an anti-aliasing FIR low-pass at min(orig, target) / 2, so a tone below
  that frequency keeps its frequency, and the output has exactly ceil(N * up / down) samples.
- `load_audio(path, sample_rate=16000)`: the three above, returned as a float32 tensor (N,).
- `random_crop(x, max_samples)`: a window of `max_samples` at a uniformly drawn start (torch's RNG, which
  `data2vec.sampling.SeededItems` seeds per sample), or `x` unchanged when it is not longer.
- `normalise(x)`: zero mean and unit variance over the utterance (fairseq `normalize: true`, HF `do_normalize`).
- `fit_length(x, n)`: exactly n samples, zero-padded on the right or cut to the middle (fixed-length keyword clips).

Differences from the original: fairseq reads with soundfile too but refuses a file whose rate is not the task's
(it expects LibriSpeech's 16 kHz and has no resampling); torchaudio (HF's examples) resamples with a windowed sinc
kernel, here scipy's polyphase filter (Kaiser window, its default), which needs no torchaudio.
"""

from __future__ import annotations

from math import gcd
from pathlib import Path

import numpy as np
import torch

SAMPLE_RATE = 16_000  # Hz, the rate of every data2vec-audio / wav2vec 2.0 model (one frame per 320 samples = 20 ms)
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au")
SOUNDFILE_FIX = "pip install soundfile (or pip install -e \".[audio]\")"


def _soundfile():
    try:
        import soundfile
    except ImportError as error:  # an optional extra: audio is not needed for text and images
        raise ImportError(f"reading audio needs the soundfile package, which is not installed; fix: {SOUNDFILE_FIX}") \
            from error
    return soundfile


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """(samples (N, C) float32 in [-1, 1], sample rate) of an audio file; ValueError naming the file if
    libsndfile cannot decode it, FileNotFoundError if it is not there."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    soundfile = _soundfile()
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)  # (N, C)
    except RuntimeError as error:  # soundfile.LibsndfileError is a RuntimeError
        raise ValueError(f"{path}: not an audio file libsndfile can decode ({error}); fix: convert it to WAV or "
                         "FLAC, or remove it") from error
    return samples, int(rate)


def to_mono(samples: np.ndarray) -> np.ndarray:
    """(N, C) -> (N,): the mean of the channels (a mono file passes through unchanged); (N,) is returned as is."""
    return samples if samples.ndim == 1 else samples.mean(axis=1)  # (N, C) -> (N,)


def resample(samples: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling of a 1-D signal: up = target / g, down = orig / g with g = gcd(orig, target); the output
    has ceil(N * up / down) samples (exactly N * target / orig when that is an integer)."""
    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
    if orig_sr == target_sr:
        return samples
    from scipy.signal import resample_poly

    g = gcd(orig_sr, target_sr)
    up, down = target_sr // g, orig_sr // g
    return resample_poly(samples, up, down).astype(np.float32)  # (N,) -> (ceil(N * up / down),)


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """A file as a float32 mono waveform (N,) at `sample_rate` Hz."""
    samples, rate = read_audio(path)
    mono = to_mono(samples)  # (N, C) -> (N,)
    return torch.from_numpy(np.ascontiguousarray(resample(mono, rate, sample_rate), dtype=np.float32))


def random_crop(waveform: torch.Tensor, max_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A window of `max_samples` samples at a start drawn uniformly from [0, N - max_samples] (fairseq
    `RawAudioDataset.crop_to_max_size`); `waveform` itself when N <= max_samples."""
    if max_samples <= 0:
        raise ValueError(f"max_samples must be positive, got {max_samples}")
    excess = waveform.shape[-1] - max_samples
    if excess <= 0:
        return waveform
    start = int(torch.randint(0, excess + 1, (1,), generator=generator))
    return waveform[..., start:start + max_samples]  # (N,) -> (max_samples,)


class RandomCrop:
    """`random_crop` as a dataset transform (the RNG is torch's, seeded per sample by the training loop)."""

    def __init__(self, max_samples: int):
        if max_samples <= 0:
            raise ValueError(f"RandomCrop.max_samples must be positive, got {max_samples}")
        self.max_samples = max_samples

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        return random_crop(waveform, self.max_samples)


def normalise(waveform: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """(x - mean(x)) / sqrt(var(x) + eps) over one utterance (N,), the population variance (HF: eps 1e-7)."""
    centred = waveform - waveform.mean()
    return centred / torch.sqrt(centred.pow(2).mean() + eps)


def fit_length(waveform: torch.Tensor, n: int) -> torch.Tensor:
    """(N,) -> (n,): zero-padded on the right when shorter (Speech Commands pads its clips to 1 s), its middle n
    samples when longer."""
    if n <= 0:
        raise ValueError(f"fit_length: n must be positive, got {n}")
    if waveform.shape[-1] >= n:
        start = (waveform.shape[-1] - n) // 2
        return waveform[..., start:start + n]  # (N,) -> (n,)
    return torch.nn.functional.pad(waveform, (0, n - waveform.shape[-1]))  # (N,) -> (n,)
