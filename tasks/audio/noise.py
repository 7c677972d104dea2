"""Making clean synthetic keywords harder: silence trimming, a fixed window with a random offset, background noise at a
chosen signal-to-noise ratio (coloured noise or babble of other talkers). Used by `tasks.audio.corpus` when a corpus
config asks for it; every random choice comes from a numpy Generator the caller seeds.

What it implements (the recipe of Speech Commands' data and its augmentation, Warden 2018, arXiv 1804.03209, sections
3-4: one-second clips with the word anywhere inside them, background noise mixed in; noise colours from the
acoustics literature):
- `trim_silence(x)`: drop the leading and trailing samples whose 10 ms frame RMS is more than `threshold_db` below
  the loudest frame's (espeak-ng pads every word with silence);
- `place_in_window(x, n, offset)`: the clip inside n zeros starting at floor(offset * (n - len(x))), offset in [0, 1]
  (a clip longer than the window keeps its middle n samples);
- `coloured_noise(kind, n, rng)`: Gaussian noise whose power spectral density falls as 1 / f^beta: "white" (beta 0),
  "pink" (beta 1), "brown" (beta 2), by scaling the rFFT of white noise by f^(-beta / 2) (DC set to 0), then
  unit RMS;
- `babble(sources, n, rng)`: the sum of several talkers, each a random n-sample stretch of one recording (repeated
  when shorter), each at unit RMS before the sum, then the sum at unit RMS;
- `mix_at_snr(speech, noise, snr_db, speech_power)`: speech + g * noise with g chosen so that
  10 log10(P_speech / P_noise) = snr_db, where P_noise = mean(g * noise)^2 over the window and P_speech is the mean
  square of the speech while it is active (the trimmed word, not the silence around it: `speech_power`).

Differences from the original: Speech Commands mixes recorded background noise (its `_background_noise_` folder:
running tap, exercise bike, white and pink noise) at volumes drawn from [0, 0.1] of full scale, not at an SNR; here
every noise is synthesised (or is other talkers of the corpus) and the level is an SNR in decibels, so the difficulty
does not depend on how loud espeak-ng speaks.
"""

from __future__ import annotations

import numpy as np

NOISE_KINDS = ("white", "pink", "brown", "babble")
NOISE_BETA = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # PSD ~ 1 / f^beta


def frame_rms_db(x: np.ndarray, frame: int) -> np.ndarray:
    """RMS in dB of consecutive `frame`-sample frames (the last partial frame included)."""
    n = -(-len(x) // frame)
    padded = np.zeros(n * frame, dtype=np.float64)
    padded[: len(x)] = x
    rms = np.sqrt((padded.reshape(n, frame) ** 2).mean(axis=1))  # (n * frame,) -> (n, frame) -> (n,)
    return 20.0 * np.log10(rms + 1e-12)


def trim_silence(x: np.ndarray, threshold_db: float = 40.0, frame: int = 160) -> np.ndarray:
    """x without its leading and trailing frames quieter than the loudest frame minus `threshold_db`."""
    if len(x) == 0:
        return x
    db = frame_rms_db(x, frame)
    loud = np.flatnonzero(db >= db.max() - threshold_db)
    return x[loud[0] * frame: min(len(x), (loud[-1] + 1) * frame)]


def place_in_window(x: np.ndarray, n: int, offset: float) -> np.ndarray:
    """x inside n samples of silence, starting at floor(offset * (n - len(x))); its middle n when it is longer."""
    if not 0.0 <= offset <= 1.0:
        raise ValueError(f"place_in_window: offset must lie in [0, 1], got {offset}")
    if len(x) >= n:
        start = (len(x) - n) // 2
        return x[start:start + n].astype(np.float32)
    out = np.zeros(n, dtype=np.float32)
    start = int(np.floor(offset * (n - len(x))))
    out[start:start + len(x)] = x
    return out


def unit_rms(x: np.ndarray) -> np.ndarray:
    return x / max(float(np.sqrt(np.mean(x.astype(np.float64) ** 2))), 1e-12)


def coloured_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """n samples of white, pink or brown Gaussian noise (PSD ~ 1 / f^beta), unit RMS."""
    if kind not in NOISE_BETA:
        raise ValueError(f"coloured_noise: unknown kind {kind!r}; use one of {tuple(NOISE_BETA)}")
    white = rng.standard_normal(n)
    if kind == "white":
        return unit_rms(white).astype(np.float32)
    spectrum = np.fft.rfft(white)  # (n // 2 + 1,) complex
    freqs = np.fft.rfftfreq(n)  # (n // 2 + 1,) cycles per sample
    scale = np.zeros_like(freqs)
    scale[1:] = freqs[1:] ** (-NOISE_BETA[kind] / 2.0)  # amplitude ~ f^(-beta / 2): power ~ f^(-beta); DC = 0
    return unit_rms(np.fft.irfft(spectrum * scale, n)).astype(np.float32)


def babble(sources: list[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """The sum of one random n-sample stretch of every source (each at unit RMS), at unit RMS."""
    if not sources:
        raise ValueError("babble: needs at least one recording of another talker")
    total = np.zeros(n, dtype=np.float64)
    for source in sources:
        source = trim_silence(np.asarray(source, dtype=np.float64))
        reps = -(-n // max(1, len(source))) + 1
        long = np.tile(source, reps)  # at least n + len(source) samples
        start = int(rng.integers(0, len(long) - n + 1))
        total += unit_rms(long[start:start + n])
    return unit_rms(total).astype(np.float32)


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float, speech_power: float) -> np.ndarray:
    """speech + g noise with 10 log10(speech_power / mean((g noise)^2)) = snr_db."""
    if len(speech) != len(noise):
        raise ValueError(f"mix_at_snr: speech and noise lengths differ ({len(speech)} and {len(noise)})")
    noise_power = float(np.mean(noise.astype(np.float64) ** 2))
    gain = np.sqrt(speech_power / (noise_power * 10.0 ** (snr_db / 10.0)))  # P_s / (g^2 P_n) = 10^(snr / 10)
    return (speech + gain * noise).astype(np.float32)


def fit_full_scale(x: np.ndarray, peak: float = 0.99) -> np.ndarray:
    """x scaled down (never up) so that its peak is at most `peak`: a 16-bit file would clip it otherwise."""
    top = float(np.max(np.abs(x))) if len(x) else 0.0
    return x if top <= peak else (x * (peak / top)).astype(np.float32)


__all__ = ["NOISE_KINDS", "babble", "coloured_noise", "fit_full_scale", "mix_at_snr", "place_in_window",
           "trim_silence", "unit_rms"]
