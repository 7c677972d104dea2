"""tasks/audio/noise.py: what makes the study's keywords harder, against references written here: the noise colours by
the slope of their Welch power spectrum (scipy) on a log-log fit, the SNR recomputed from its definition, placement
and trimming counted by hand; and tasks/audio/synthetic.py's tone folder through the project's loaders."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.audio.noise import babble, coloured_noise, fit_full_scale, mix_at_snr, place_in_window, trim_silence


@pytest.mark.parametrize("kind, slope", [("white", 0.0), ("pink", -1.0), ("brown", -2.0)])
def test_noise_colours_have_the_spectral_slope_of_their_name(kind, slope):
    from scipy.signal import welch

    x = coloured_noise(kind, 2 ** 16, np.random.default_rng(0))
    assert x.dtype == np.float32 and abs(float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) - 1.0) < 1e-5
    freqs, psd = welch(x, nperseg=4096)
    band = (freqs > 0.002) & (freqs < 0.2)  # away from DC and the top of the band
    fitted = np.polyfit(np.log10(freqs[band]), np.log10(psd[band]), 1)[0]
    assert abs(fitted - slope) < 0.15


def test_noise_is_seeded():
    a = coloured_noise("pink", 1000, np.random.default_rng(3))
    assert np.array_equal(a, coloured_noise("pink", 1000, np.random.default_rng(3)))
    assert not np.array_equal(a, coloured_noise("pink", 1000, np.random.default_rng(4)))
    with pytest.raises(ValueError, match="unknown kind"):
        coloured_noise("purple", 10, np.random.default_rng(0))


@pytest.mark.parametrize("snr", [-5.0, 0.0, 7.5, 20.0])
def test_mix_at_snr_meets_its_definition(snr):
    rng = np.random.default_rng(1)
    word = rng.standard_normal(4000) * 0.3
    speech = place_in_window(word, 16000, 0.5)
    noise = rng.standard_normal(16000).astype(np.float32)
    mixed = mix_at_snr(speech, noise, snr, float(np.mean(word ** 2)))
    added = mixed.astype(np.float64) - speech  # the scaled noise
    measured = 10 * np.log10(np.mean(word ** 2) / np.mean(added ** 2))
    assert measured == pytest.approx(snr, abs=1e-3)


def test_place_in_window_offsets_and_middle_cut():
    x = np.arange(1, 11, dtype=np.float32)
    for offset, start in ((0.0, 0), (1.0, 10), (0.5, 5), (0.26, 2)):  # floor(offset * (20 - 10))
        out = place_in_window(x, 20, offset)
        assert out.shape == (20,) and np.array_equal(out[start:start + 10], x) and out.sum() == x.sum()
    assert np.array_equal(place_in_window(np.arange(30.0), 10, 0.3), np.arange(10.0, 20.0))  # the middle 10
    with pytest.raises(ValueError, match="offset"):
        place_in_window(x, 20, 1.5)


def test_trim_silence_keeps_the_loud_frames_only():
    x = np.zeros(16000)
    x[3200:8000] = np.sin(np.arange(4800) * 0.3)  # frames 20..49 of 160 samples
    trimmed = trim_silence(x, threshold_db=40.0, frame=160)
    assert len(trimmed) == 4800 and np.array_equal(trimmed, x[3200:8000])


def test_babble_is_unit_rms_and_seeded():
    rng = np.random.default_rng(0)
    sources = [rng.standard_normal(n) for n in (3000, 9000, 20000)]
    a = babble(sources, 16000, np.random.default_rng(5))
    assert a.shape == (16000,) and abs(float(np.sqrt(np.mean(a.astype(np.float64) ** 2))) - 1.0) < 1e-5
    assert np.array_equal(a, babble(sources, 16000, np.random.default_rng(5)))
    with pytest.raises(ValueError, match="at least one"):
        babble([], 10, rng)


def test_fit_full_scale_only_scales_down():
    assert np.array_equal(fit_full_scale(np.array([0.5, -0.2], np.float32)), np.array([0.5, -0.2], np.float32))
    scaled = fit_full_scale(np.array([2.0, -1.0], np.float32))
    assert np.allclose(scaled, [0.99, -0.495])


def test_tone_folder_reads_as_keywords(tmp_path):
    from tasks.audio import load_keywords
    from tasks.audio.keywords import speaker_of
    from tasks.audio.synthetic import write_tone_keywords

    root = write_tone_keywords(tmp_path / "tones", words=3, speakers={"train": 2, "validation": 1, "test": 1},
                               repeats=2)
    splits = {s: load_keywords(root, s) for s in ("train", "validation", "test")}
    assert {s: len(d) for s, d in splits.items()} == {"train": 12, "validation": 6, "test": 6}
    assert splits["train"].classes == ["w0", "w1", "w2"]
    speakers = {s: {speaker_of(f.name) for f in d.files} for s, d in splits.items()}
    assert not (speakers["train"] & speakers["test"]) and not (speakers["train"] & speakers["validation"])
    x, _ = splits["train"][0]
    assert x.shape == (16000,) and float(x.abs().max()) <= 1.0
    again = write_tone_keywords(tmp_path / "again", words=3, speakers={"train": 2, "validation": 1, "test": 1},
                                repeats=2)
    assert (again / "w1" / "tr000_nohash_1.wav").read_bytes() == (root / "w1" / "tr000_nohash_1.wav").read_bytes()
