"""`data2vec compare --modality audio` (data2vec/study/audio.py, audio_protocols.py, its flags in
data2vec/cli/compare_audio.py) and the raw-feature floor (tasks/audio/features.py).

References are written here: the log-mel spectrogram by numpy framing, a Hann window from its formula, `np.fft.rfft`
and triangular mel filters built edge by edge in a loop; the MFCCs by scipy's DCT; the validation speakers and the
labelled subsets counted by hand. The end-to-end run (--quick: the command writes its own tone folder, a 2 x 64
encoder, seconds of pretraining per method) checks every results file, the table and plots, that a rerun recomputes
nothing and that another setting in the same --out is refused. No test reads ../shared/data or needs espeak-ng.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from data2vec.study.audio_config import AudioCompareConfig
from data2vec.study.audio_protocols import AudioEvalData, ClipSet, audio_protocols, speaker_split
from tasks.audio.features import clip_features, log_mel, mel_filterbank, mfcc, pooled

SR = 16_000


# ---- the reference front end, written here ----------------------------------------------------------------


def reference_log_mel(x: np.ndarray, n_mels=40, n_fft=400, hop=160) -> np.ndarray:
    """(S,) -> (n_mels, F): centred frames of the reflect-padded signal, periodic Hann, |rfft|^2, HTK triangles."""
    padded = np.pad(x.astype(np.float64), n_fft // 2, mode="reflect")
    frames = 1 + len(x) // hop
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    power = np.stack([np.abs(np.fft.rfft(padded[t * hop:t * hop + n_fft] * window)) ** 2 for t in range(frames)], 1)
    def mel(f):
        return 2595 * np.log10(1 + f / 700)
    def hz(m):
        return 700 * (10 ** (m / 2595) - 1)
    edges = [hz(m) for m in np.linspace(mel(0.0), mel(SR / 2), n_mels + 2)]
    freqs = np.arange(n_fft // 2 + 1) * SR / n_fft
    fbank = np.zeros((n_mels, len(freqs)))
    for j in range(n_mels):
        low, centre, high = edges[j], edges[j + 1], edges[j + 2]
        for k, f in enumerate(freqs):
            if low <= f <= centre:
                fbank[j, k] = (f - low) / (centre - low)
            elif centre < f <= high:
                fbank[j, k] = (high - f) / (high - centre)
    return np.log(fbank @ power + 1e-6)


def test_log_mel_and_mfcc_equal_references_written_here():
    from scipy.fft import dct

    rng = np.random.default_rng(0)
    t = np.arange(SR // 2) / SR
    x = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
    ours = log_mel(torch.from_numpy(x)[None])[0].numpy()  # (40, F)
    ref = reference_log_mel(x)
    assert ours.shape == ref.shape == (40, 1 + len(x) // 160)
    np.testing.assert_allclose(ours, ref, atol=2e-3 * np.abs(ref).max())
    ceps = mfcc(torch.from_numpy(ref).float()[None], 13)[0].numpy()
    np.testing.assert_allclose(ceps, dct(ref, type=2, norm="ortho", axis=0)[:13], atol=1e-4 * np.abs(ref).max())
    stats = pooled(torch.from_numpy(ref).float()[None])[0].numpy()
    np.testing.assert_allclose(stats, np.concatenate([ref.mean(1), ref.std(1)]), rtol=1e-5, atol=1e-5)


def test_mel_filterbank_triangles_peak_at_their_centres_and_a_tone_lights_its_filter():
    fb = mel_filterbank(40, 400, SR)  # (201, 40)
    assert fb.shape == (201, 40) and float(fb.min()) == 0.0 and float(fb.max()) <= 1.0 + 1e-6
    assert bool((fb.sum(0) > 0).all())  # no empty filter at 400-point resolution
    peaks = fb.argmax(0)
    assert bool((peaks[1:] >= peaks[:-1]).all())  # centres rise with the filter index
    for freq in (300.0, 1000.0, 3000.0):
        t = torch.arange(SR) / SR
        energy = log_mel(torch.sin(2 * math.pi * freq * t)[None])[0].mean(1)  # (40,)
        centre_hz = peaks.double() * SR / 400
        assert abs(float(centre_hz[int(energy.argmax())]) - freq) <= 2 * SR / 400 + 0.15 * freq


def test_clip_features_are_mean_and_std_of_log_mel_and_mfcc():
    clips = torch.randn(3, SR // 4)
    feats = clip_features(clips, chunk=2)
    mels = log_mel(clips)
    assert set(feats) == {"logmel/meanstd", "mfcc/meanstd"}
    torch.testing.assert_close(feats["logmel/meanstd"], torch.cat([mels.mean(2), mels.std(2, unbiased=False)], 1))
    assert feats["mfcc/meanstd"].shape == (3, 26)


# ---- validation speakers and labelled subsets ---------------------------------------------------------------


def test_speaker_split_holds_whole_speakers_enough_clips_and_is_seeded():
    speakers = np.repeat([f"s{i:02d}" for i in range(20)], 7)  # 20 speakers x 7 clips
    fit, val = speaker_split(speakers, 0.1, seed=0)
    assert len(np.intersect1d(fit, val)) == 0 and len(fit) + len(val) == len(speakers)
    assert not set(speakers[fit]) & set(speakers[val])  # no speaker on both sides
    assert len(val) >= 0.1 * len(speakers) and len(set(speakers[val])) == 2  # 14 clips = 2 whole speakers
    again = speaker_split(speakers, 0.1, seed=0)
    assert np.array_equal(again[1], val) and not np.array_equal(speaker_split(speakers, 0.1, seed=1)[1], val)


def test_speaker_split_draws_every_speaker_equally_often():
    """Over 2,000 seeds each of 10 speakers is a validation speaker with probability 1 / 10 (one is enough for 10 %);
    5 binomial standard deviations."""
    speakers = np.repeat(np.arange(10).astype(str), 5)
    counts = np.zeros(10)
    for seed in range(2000):
        chosen = set(speakers[speaker_split(speakers, 0.1, seed)[1]])
        assert len(chosen) == 1
        counts[int(next(iter(chosen)))] += 1
    assert np.all(np.abs(counts - 200) <= 5 * math.sqrt(2000 * 0.1 * 0.9))


def test_the_labelled_subsets_are_stratified_seeded_and_never_hold_a_validation_speaker():
    from data2vec.probe import fraction_indices

    speakers = np.repeat([f"s{i}" for i in range(30)], 6)  # every speaker says each of 6 words once
    labels = np.tile(np.arange(6), 30)
    fit, val = speaker_split(speakers, 0.1, seed=0)
    for fraction in (0.01, 0.1):
        subsets = [fit[fraction_indices(labels[fit], fraction, seed)] for seed in (1, 1, 2)]
        assert np.array_equal(subsets[0], subsets[1]) and not np.array_equal(subsets[0], subsets[2])
        per_class = np.bincount(labels[subsets[0]], minlength=6)
        expected = max(1, round(fraction * len(fit) / 6))  # every class has len(fit) / 6 clips
        assert np.all(per_class == expected)
        assert not set(subsets[0]) & set(val)


def test_clip_set_shifts_within_the_bound_and_fills_silence():
    clips = torch.arange(1, 101, dtype=torch.float32)[None].repeat(2, 1)  # (2, 100), no zero inside
    data = ClipSet(clips, np.array([3, 4]), np.array([1]), max_shift=10)
    torch.manual_seed(0)
    for _ in range(50):
        x, y = data[0]
        assert y == 4 and x.shape == (100,)
        zeros = int((x == 0).sum())
        assert zeros <= 10
        if x[0] == 0:  # shifted right by `zeros`
            assert torch.equal(x[zeros:], clips[0, :100 - zeros])
        else:  # shifted left
            assert torch.equal(x[:100 - zeros], clips[0, zeros:])
    assert torch.equal(ClipSet(clips, np.array([3, 4]), np.array([0]))[0][0], clips[0])  # no shift: the clip itself


def test_protocols_per_arm():
    cfg = AudioCompareConfig(data="d", out="o", runs="r")
    assert audio_protocols(cfg, "features") == ["knn@100%", "linear@100%", "knn@10%", "linear@10%"]
    assert audio_protocols(cfg, "supervised") == ["finetune@1%", "finetune@10%"]
    assert audio_protocols(cfg, "data2vec") == audio_protocols(cfg, "features") + audio_protocols(cfg, "supervised")
    assert cfg.arms == ("random", "data2vec", "data2vec2", "features", "supervised")
    assert isinstance(AudioEvalData.__dataclass_fields__["hand_made"].default_factory(), dict)


# ---- the command --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_compare_audio_quick_runs_every_arm_writes_results_resumes_and_refuses_other_settings(tmp_path, capsys):
    from data2vec.cli import main

    out = tmp_path / "out"
    argv = ["compare", "--modality", "audio", "--quick", "--budget-minutes", "0.02", "--out", str(out),
            "--threads", "1", "--precision", "fp32"]
    assert main(argv) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["modality"] == "audio" and cfg["quick"] and cfg["precision"] == "fp32"
    arms = {"random": 6, "data2vec": 6, "data2vec2": 6, "features": 4, "supervised": 2}
    for arm, count in arms.items():
        results = sorted((out / arm / "seed1").glob("*.json"))
        scores = [json.loads(p.read_text()) for p in results if p.stem != "pretrain"]
        assert len(scores) == count, arm
        for rec in scores:
            assert 0.0 <= rec["score"] <= 100.0 and rec["git_commit"] and rec["command"].startswith("data2vec compare")
        if arm.startswith("data2vec"):
            pre = json.loads((out / arm / "seed1" / "pretrain.json").read_text())
            calib = json.loads((out / "calibration.json").read_text())[arm]
            assert pre["steps"] == calib["steps"] == max(10, int(60 * 0.02 // calib["s_per_update"]))
    features = json.loads((out / "features" / "seed1" / "knn@100pct.json").read_text())
    assert features["details"]["features"].split("/")[0] in ("logmel", "mfcc")
    supervised = json.loads((out / "supervised" / "seed1" / "finetune@1pct.json").read_text())
    random_ft = json.loads((out / "random" / "seed1" / "finetune@1pct.json").read_text())
    assert supervised["details"]["epochs"] >= random_ft["details"]["epochs"]  # budget + fine-tuning time
    table = (out / "table.md").read_text()
    for label in ("random init", "raw features (log-mel / MFCC, mean+std)", "supervised from scratch", "data2vec 2.0"):
        assert label in table
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["rows"]) == sum(arms.values())
    assert (out / "plots" / "accuracy.png").is_file() and (out / "plots" / "curves.png").is_file()
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/seed1/*.json")}
    capsys.readouterr()
    assert main(argv) == 0  # a rerun recomputes nothing
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/seed1/*.json")} == stamps
    assert "pretraining" not in capsys.readouterr().out
    assert main([*argv, "--crop-seconds", "0.5"]) == 2  # another setting in the same --out is refused
    err = capsys.readouterr().err
    assert "holds a speech comparison with crop_seconds=1.0" in err and "Traceback" not in err


@pytest.mark.parametrize("extra, message", [
    (["--methods", "dino"], "not a speech pretraining method"),
    (["--crop-seconds", "0"], "--crop-seconds must lie in"),
    (["--conv-dim", "0"], "--conv-dim must be >= 1"),
    (["--dim", "30", "--heads", "4"], "does not divide --dim"),
])
def test_compare_audio_bad_input_is_one_clear_line(tmp_path, extra, message, capsys):
    from data2vec.cli import main

    assert main(["compare", "--modality", "audio", "--data", str(tmp_path), "--out", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_compare_audio_needs_data(tmp_path, capsys):
    from data2vec.cli import main

    assert main(["compare", "--modality", "audio", "--out", str(tmp_path / "o")]) == 2
    assert "needs --data" in capsys.readouterr().err
    assert main(["compare", "--modality", "audio", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path)]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_fit_length_pads_on_the_right_and_keeps_the_middle():
    from tasks.audio.waveform import fit_length

    x = torch.arange(1.0, 11.0)
    assert torch.equal(fit_length(x, 14), torch.cat([x, torch.zeros(4)]))
    assert torch.equal(fit_length(x, 4), torch.tensor([4.0, 5.0, 6.0, 7.0]))  # start (10 - 4) // 2 = 3
    assert torch.equal(fit_length(x, 10), x)
    with pytest.raises(ValueError, match="positive"):
        fit_length(x, 0)
