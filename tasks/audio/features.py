"""Hand-made speech features: log-mel spectrogram and MFCCs, pooled over time (the speech study's raw-feature floor).

What it implements (the classic keyword-spotting front end: Davis & Mermelstein 1980 for MFCCs; 40-bin log-mel
input as in Bovbjerg & Tan 2022, arXiv 2210.01703, and the Speech Commands baselines, Warden 2018 section 6):
- `stft_power(x)`: |STFT|^2 with a periodic Hann window of n_fft = 400 samples (25 ms at 16 kHz), hop 160 (10 ms),
  frames centred on t * hop (the signal reflect-padded by n_fft / 2 on both sides), as `torch.stft(center=True)`:
    P[k, t] = |sum_n w[n] x[t * hop + n - n_fft / 2] e^{-2 pi i k n / n_fft}|^2,  k = 0 .. n_fft / 2;
- `mel_filterbank(...)`: triangular filters equally spaced on the HTK mel scale, m(f) = 2595 log10(1 + f / 700),
  between f_min and f_max (n_mels + 2 edge points); filter j rises linearly from edge j to edge j + 1 and falls to
  edge j + 2, with a peak of 1 (no area normalisation), evaluated at the FFT bin frequencies k * sr / n_fft;
- `log_mel(x)`: L[j, t] = log(sum_k F[k, j] P[k, t] + eps), eps = 1e-6;
- `mfcc(L)`: the orthonormal DCT-II over the mel axis, keeping the first n_mfcc coefficients:
    c[q, t] = s_q sum_j L[j, t] cos(pi q (j + 1/2) / n_mels),  s_0 = sqrt(1 / n_mels), s_q = sqrt(2 / n_mels);
- `pooled(features)`: one vector per clip, the mean and the (population) standard deviation over time of every
  channel, [mean_t L[:, t], std_t L[:, t]] (2 x channels).

Differences from the originals: no pre-emphasis, liftering or delta features (MFCC front ends of HTK / Kaldi have
them); power, not magnitude, spectrogram; HTK's mel formula (Slaney's, librosa's default, is linear below 1 kHz).
Pooling over time discards the order of the sounds: the floor sees the same mean-pooled view as the encoders'
frozen protocols.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

N_FFT = 400  # 25 ms windows at 16 kHz (Speech Commands baselines, wav2vec 2.0's receptive field)
HOP = 160  # 10 ms hop
N_MELS = 40  # Bovbjerg & Tan 2022: 40-bin log-mel
N_MFCC = 13  # the classic 13 cepstral coefficients
LOG_EPS = 1e-6  # floor of the mel energies before the log


def hz_to_mel(f: Tensor) -> Tensor:
    """HTK mel scale: m = 2595 log10(1 + f / 700)."""
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def mel_to_hz(m: Tensor) -> Tensor:
    """Inverse of `hz_to_mel`: f = 700 (10^(m / 2595) - 1)."""
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = 16_000, f_min: float = 0.0,
                   f_max: float | None = None) -> Tensor:
    """Triangular filters F (n_fft // 2 + 1, n_mels) on the HTK mel scale, peak 1 (module docstring)."""
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"mel_filterbank: need 0 <= f_min < f_max <= sample_rate / 2, got {f_min}, {f_max}")
    bins = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sample_rate / n_fft  # (K,) bin frequencies in Hz
    edges = mel_to_hz(torch.linspace(float(hz_to_mel(torch.tensor(f_min))), float(hz_to_mel(torch.tensor(f_max))),
                                     n_mels + 2, dtype=torch.float64))  # (n_mels + 2,) in Hz
    low, centre, high = edges[:-2], edges[1:-1], edges[2:]  # (n_mels,) each
    rising = (bins[:, None] - low[None, :]) / (centre - low)[None, :]  # (K, n_mels)
    falling = (high[None, :] - bins[:, None]) / (high - centre)[None, :]  # (K, n_mels)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()  # (K, n_mels)


def stft_power(waveform: Tensor, n_fft: int = N_FFT, hop: int = HOP) -> Tensor:
    """(B, S) -> |STFT|^2 (B, n_fft // 2 + 1, 1 + S // hop): periodic Hann, centred frames, reflect padding."""
    window = torch.hann_window(n_fft, periodic=True, dtype=waveform.dtype, device=waveform.device)
    spec = torch.stft(waveform, n_fft, hop_length=hop, window=window, center=True, pad_mode="reflect",
                      return_complex=True)  # (B, K, F) complex
    return spec.real.pow(2) + spec.imag.pow(2)  # (B, K, F)


def log_mel(waveform: Tensor, n_mels: int = N_MELS, n_fft: int = N_FFT, hop: int = HOP,
            sample_rate: int = 16_000) -> Tensor:
    """(B, S) float waveforms -> log-mel energies (B, n_mels, F): L = log(F^T P + eps)."""
    if waveform.dim() != 2:
        raise ValueError(f"log_mel expects waveforms (B, S), got {tuple(waveform.shape)}")
    power = stft_power(waveform.float(), n_fft, hop)  # (B, K, F)
    fbank = mel_filterbank(n_mels, n_fft, sample_rate).to(power.device)  # (K, n_mels)
    mel = torch.einsum("bkf,km->bmf", power, fbank)  # (B, K, F) x (K, M) -> (B, M, F)
    return torch.log(mel + LOG_EPS)


def dct_matrix(n_mels: int, n_mfcc: int) -> Tensor:
    """The orthonormal DCT-II basis (n_mfcc, n_mels): D[q, j] = s_q cos(pi q (j + 1/2) / n_mels)."""
    if not 1 <= n_mfcc <= n_mels:
        raise ValueError(f"dct_matrix: need 1 <= n_mfcc <= n_mels, got {n_mfcc} and {n_mels}")
    q = torch.arange(n_mfcc, dtype=torch.float64)[:, None]  # (Q, 1)
    j = torch.arange(n_mels, dtype=torch.float64)[None, :]  # (1, M)
    basis = torch.cos(math.pi * q * (j + 0.5) / n_mels)  # (Q, M)
    scale = torch.full((n_mfcc, 1), math.sqrt(2.0 / n_mels), dtype=torch.float64)
    scale[0] = math.sqrt(1.0 / n_mels)
    return (scale * basis).float()


def mfcc(log_mels: Tensor, n_mfcc: int = N_MFCC) -> Tensor:
    """Log-mel energies (B, M, F) -> cepstral coefficients (B, n_mfcc, F) by the orthonormal DCT-II over M."""
    basis = dct_matrix(log_mels.shape[1], n_mfcc).to(log_mels.device)  # (Q, M)
    return torch.einsum("qm,bmf->bqf", basis, log_mels)  # (B, M, F) -> (B, Q, F)


def pooled(features: Tensor) -> Tensor:
    """(B, C, F) time series -> (B, 2C): the mean and the population std over time of every channel."""
    return torch.cat([features.mean(dim=2), features.std(dim=2, unbiased=False)], dim=1)  # (B, 2C)


def clip_features(waveform: Tensor, chunk: int = 256) -> dict[str, Tensor]:
    """{"logmel/meanstd": (N, 2 x 40), "mfcc/meanstd": (N, 2 x 13)} of clips (N, S), computed `chunk` at a time."""
    out: dict[str, list[Tensor]] = {"logmel/meanstd": [], "mfcc/meanstd": []}
    for start in range(0, len(waveform), chunk):
        mels = log_mel(waveform[start:start + chunk])  # (b, 40, F)
        out["logmel/meanstd"].append(pooled(mels))
        out["mfcc/meanstd"].append(pooled(mfcc(mels)))
    return {name: torch.cat(parts) for name, parts in out.items()}


__all__ = ["HOP", "N_FFT", "N_MELS", "N_MFCC", "clip_features", "dct_matrix", "hz_to_mel", "log_mel", "mel_filterbank",
           "mel_to_hz", "mfcc", "pooled", "stft_power"]
