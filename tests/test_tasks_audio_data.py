"""tasks.audio's data side: decoding, mono mixdown, resampling, crops, normalisation, padded batches, the
keyword-folder layouts (Speech Commands' lists and hash rule, split folders) and LibriSpeech's layout.

Every file is written here into tmp_path: WAV with Python's own `wave` module (an encoder independent of the
libsndfile decoder under test), FLAC with soundfile. Tones and noise are synthesised; no data set is read."""

import hashlib
import math
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile  # the audio extra, part of dev
import torch

from tasks.audio import (
    AudioCollate,
    CharVocab,
    RandomCrop,
    audio_datasets,
    detect_keyword_layout,
    hash_split,
    load_audio,
    load_keywords,
    load_transcribed,
    normalise,
    pad_waveforms,
    random_crop,
    read_audio,
    resample,
)


def tone(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_wav(path: Path, channels: np.ndarray, rate: int) -> np.ndarray:
    """channels (N,) or (N, C) floats in [-1, 1] -> a 16-bit PCM WAV by the standard library; returns the
    quantised values as floats (what a decoder must give back)."""
    data = channels.reshape(len(channels), -1)  # (N,) or (N, C) -> (N, C)
    pcm = np.clip(np.round(data * 32767), -32768, 32767).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(data.shape[1])
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.tobytes())  # interleaved frames
    return pcm.astype(np.float64) / 32768.0


def peak_frequency(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)])


# ---- decoding and mixdown -------------------------------------------------------------------------------------

def test_read_wav_gives_the_pcm_values_and_rate(tmp_path):
    rng = np.random.default_rng(0)
    stereo = rng.uniform(-0.9, 0.9, (1234, 2))
    expected = write_wav(tmp_path / "a.wav", stereo, 8000)
    samples, rate = read_audio(tmp_path / "a.wav")
    assert rate == 8000 and samples.shape == (1234, 2) and samples.dtype == np.float32
    np.testing.assert_allclose(samples, expected, atol=1e-7)


def test_flac_round_trip(tmp_path):
    noise = np.random.default_rng(1).uniform(-0.5, 0.5, 3000).astype(np.float32)
    soundfile.write(tmp_path / "n.flac", noise, 16000, subtype="PCM_16")
    expected = np.round(noise * 32767) / 32768  # libsndfile scales by 32767 writing, 1/32768 reading
    waveform = load_audio(tmp_path / "n.flac")
    assert waveform.dtype == torch.float32 and waveform.shape == (3000,)
    np.testing.assert_allclose(waveform.numpy(), expected, atol=1.5 / 32768)


def test_mono_mixdown_is_the_mean_of_the_channels(tmp_path):
    left, right = tone(300, 0.25, 16000, 0.6), tone(700, 0.25, 16000, 0.3)
    quantised = write_wav(tmp_path / "s.wav", np.stack([left, right], axis=1), 16000)
    waveform = load_audio(tmp_path / "s.wav")  # already 16 kHz: only the mixdown
    np.testing.assert_allclose(waveform.numpy(), quantised.mean(axis=1), atol=1e-6)
    # opposite channels cancel
    write_wav(tmp_path / "c.wav", np.stack([left, -left], axis=1), 16000)
    assert load_audio(tmp_path / "c.wav").abs().max().item() < 1e-4


def test_bad_files_are_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_audio(tmp_path / "missing.wav")
    (tmp_path / "text.wav").write_text("not audio at all")
    with pytest.raises(ValueError, match="text.wav.*fix"):
        load_audio(tmp_path / "text.wav")


def test_missing_soundfile_names_the_fix(tmp_path, monkeypatch):
    write_wav(tmp_path / "a.wav", tone(440, 0.1, 16000), 16000)
    monkeypatch.setitem(__import__("sys").modules, "soundfile", None)  # `import soundfile` now raises ImportError
    with pytest.raises(ImportError, match="pip install soundfile"):
        load_audio(tmp_path / "a.wav")


# ---- resampling -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("orig_sr", [8000, 22050, 44100, 48000])
def test_resampling_keeps_the_frequency_and_the_exact_length(orig_sr):
    x = tone(440, 1.0, orig_sr)  # one second: the output spectrum has 1 Hz bins
    y = resample(x, orig_sr, 16000)
    assert len(y) == 16000  # N * 16000 / orig exactly
    assert abs(peak_frequency(y, 16000) - 440) <= 1
    # amplitude kept: the RMS of the middle (away from the filter's edge effects) is that of a 0.5 sine
    middle = y[2000:-2000]
    assert np.sqrt(np.mean(middle**2)) == pytest.approx(0.5 / math.sqrt(2), rel=0.01)


@pytest.mark.parametrize(("n", "orig_sr"), [(1001, 44100), (7, 22050), (12345, 8000)])
def test_resampled_length_is_the_ceiling_of_the_ratio(n, orig_sr):
    y = resample(np.zeros(n, dtype=np.float32), orig_sr, 16000)
    g = math.gcd(orig_sr, 16000)
    up, down = 16000 // g, orig_sr // g
    assert len(y) == -(-n * up // down)


def test_resampling_removes_what_the_new_rate_cannot_hold():
    """A 10 kHz tone is above 16 kHz's Nyquist frequency (8 kHz): the anti-alias filter removes it instead of
    folding it to 6 kHz."""
    y = resample(tone(10_000, 1.0, 44100), 44100, 16000)
    assert np.sqrt(np.mean(y[2000:-2000] ** 2)) < 0.01 * 0.5 / math.sqrt(2)


def test_load_audio_resamples_to_16k(tmp_path):
    write_wav(tmp_path / "t.wav", tone(1000, 0.5, 22050), 22050)
    waveform = load_audio(tmp_path / "t.wav")
    assert waveform.shape == (8000,)
    assert abs(peak_frequency(waveform.numpy(), 16000) - 1000) <= 2


# ---- crops and normalisation ----------------------------------------------------------------------------------

def test_random_crop_is_a_window_with_a_uniform_start():
    x = torch.arange(10, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    counts = np.zeros(4)  # starts 0..3 for windows of 7 out of 10
    draws = 4000
    for _ in range(draws):
        y = random_crop(x, 7, g)
        start = int(y[0])
        assert torch.equal(y, torch.arange(start, start + 7, dtype=torch.float32))
        counts[start] += 1
    # each start has probability 1/4: 5 binomial standard deviations
    assert np.all(np.abs(counts - draws / 4) < 5 * math.sqrt(draws * 0.25 * 0.75))
    assert torch.equal(random_crop(x, 10), x) and torch.equal(random_crop(x, 50), x)


def test_random_crop_transform_follows_torch_seed():
    x = torch.randn(1000)
    crop = RandomCrop(100)
    torch.manual_seed(3)
    a = crop(x)
    torch.manual_seed(3)
    assert torch.equal(crop(x), a) and a.shape == (100,)
    with pytest.raises(ValueError, match="positive"):
        RandomCrop(0)


def test_normalise_zero_mean_unit_variance():
    x = torch.randn(500, dtype=torch.float64) * 3 + 2
    mean = sum(x.tolist()) / 500
    var = sum((v - mean) ** 2 for v in x.tolist()) / 500
    expected = torch.tensor([(v - mean) / math.sqrt(var + 1e-7) for v in x.tolist()], dtype=torch.float64)
    torch.testing.assert_close(normalise(x), expected)


# ---- batches --------------------------------------------------------------------------------------------------

def test_pad_waveforms_pads_right_and_marks_the_padding():
    waves = [torch.randn(n) for n in (5, 9, 1)]
    batch, lengths = pad_waveforms(waves)
    assert batch.shape == (3, 9) and lengths.tolist() == [5, 9, 1] and lengths.dtype == torch.long
    for i, w in enumerate(waves):
        for n in range(9):
            assert batch[i, n].item() == (w[n].item() if n < len(w) else 0.0)
    with pytest.raises(ValueError, match="mono"):
        pad_waveforms([torch.zeros(4, 2)])


def test_collate_labels_and_normalisation_over_real_samples():
    waves = [torch.randn(6) * 4 + 1, torch.randn(3) * 2]
    batch = AudioCollate(normalize=True)([(waves[0], 2), (waves[1], np.int64(0))])
    assert set(batch) == {"waveform", "lengths", "labels"}  # the model's keys; no sample-level `padding_mask`
    assert batch["lengths"].tolist() == [6, 3]
    assert batch["labels"].tolist() == [2, 0] and batch["labels"].dtype == torch.long
    real = batch["waveform"][1, :3]
    assert real.mean().abs().item() < 1e-6 and real.pow(2).mean().item() == pytest.approx(1.0, rel=1e-5)
    assert torch.all(batch["waveform"][1, 3:] == 0)


def test_collate_batches_feed_the_model_and_padding_never_leaks():
    """The collate's keys are the model's: heads.model_inputs passes waveform and lengths, and the frames of the short
    row equal those of the same utterance run alone (its padded samples change nothing)."""
    from data2vec.backbone import build_backbone
    from data2vec.config import audio_preset
    from data2vec.heads import model_inputs

    torch.manual_seed(0)
    backbone = build_backbone(audio_preset("tiny", dropout=0.0, attn_dropout=0.0)).eval()
    short, long = torch.randn(1600), torch.randn(3200)
    batch = AudioCollate()([(long, 0), (short, 1)])
    inputs = model_inputs(batch)
    assert set(inputs) == {"waveform", "lengths"}
    with torch.no_grad():
        both = backbone(**inputs)  # (2, T_long, D)
        alone = backbone(short.unsqueeze(0))  # (1, T_short, D)
    torch.testing.assert_close(both[1, : alone.shape[1]], alone[0], atol=1e-5, rtol=1e-4)


def test_collate_bare_waveforms_gives_the_pretraining_batch():
    waves = [torch.randn(5), torch.randn(2)]
    batch = AudioCollate()(waves)
    assert set(batch) == {"waveform", "lengths"} and batch["lengths"].tolist() == [5, 2]
    assert torch.equal(batch["waveform"][1], torch.cat([waves[1], torch.zeros(3)]))


def test_collate_transcripts_and_ctc_targets():
    vocab = CharVocab.librispeech()
    batch = AudioCollate(vocab=vocab)([(torch.zeros(4), "yes no"), (torch.zeros(2), "up")])
    assert batch["transcripts"] == ["yes no", "up"]
    # written out: Y E S | N O, then U P padded with the blank
    ids = vocab.index
    assert batch["targets"].tolist() == [[ids["Y"], ids["E"], ids["S"], ids["|"], ids["N"], ids["O"]],
                                         [ids["U"], ids["P"], 0, 0, 0, 0]]
    assert batch["target_lengths"].tolist() == [6, 2]
    with pytest.raises(ValueError, match="int label or every item a str"):
        AudioCollate()([(torch.zeros(2), 1), (torch.zeros(2), "a")])


# ---- keyword folders ------------------------------------------------------------------------------------------

def speech_commands_tree(root: Path) -> dict:
    """yes/no/up words by 4 speakers, the two lists, and a background-noise folder; returns split -> (file, word)."""
    expected = {"train": set(), "validation": set(), "test": set()}
    where = {"aa11": "train", "bb22": "validation", "cc33": "test", "dd44": "train"}
    lists = {"validation": [], "test": []}
    for k, word in enumerate(("yes", "no", "up")):
        for speaker, split in where.items():
            name = f"{word}/{speaker}_nohash_0.wav"
            write_wav(root / name, tone(200 + 100 * k, 0.2, 8000), 8000)
            expected[split].add((name, word))
            if split != "train":
                lists[split].append(name)
    (root / "validation_list.txt").write_text("\n".join(lists["validation"]) + "\n")
    (root / "testing_list.txt").write_text("\n".join(lists["test"]) + "\n")
    write_wav(root / "_background_noise_" / "white_noise.wav", np.random.default_rng(0).uniform(-1, 1, 800), 8000)
    return expected


def test_speech_commands_lists_decide_the_split(tmp_path):
    expected = speech_commands_tree(tmp_path)
    assert detect_keyword_layout(tmp_path) == "speech-commands"
    for split, alias in (("train", "training"), ("validation", "val"), ("test", "testing")):
        data = load_keywords(tmp_path, alias)
        assert data.classes == ["no", "up", "yes"]  # sorted, _background_noise_ excluded
        got = {(p.relative_to(tmp_path).as_posix(), data.classes[y]) for p, y in zip(data.files, data.labels,
                                                                                     strict=True)}
        assert got == expected[split]
    waveform, label = load_keywords(tmp_path, "test")[0]
    assert waveform.shape == (3200,) and waveform.dtype == torch.float32  # 0.2 s at 8 kHz -> 16 kHz


def test_keyword_subset_maps_other_words_to_unknown(tmp_path):
    speech_commands_tree(tmp_path)
    data = load_keywords(tmp_path, "train", keywords=["yes"])
    assert data.classes == ["yes", "_unknown_"]
    assert sorted(data.labels) == [0, 0, 1, 1, 1, 1]  # 2 train speakers x (1 yes, 2 others)
    with pytest.raises(ValueError, match="not word folders"):
        load_keywords(tmp_path, "train", keywords=["banana"])


def test_split_folders_layout(tmp_path):
    for split, words in (("train", ("go", "stop")), ("valid", ("go", "stop")), ("test", ("stop",))):
        for w in words:
            write_wav(tmp_path / split / w / "x.wav", tone(300, 0.05, 16000), 16000)
    assert detect_keyword_layout(tmp_path) == "split-folders"
    test = load_keywords(tmp_path, "test")
    assert test.classes == ["go", "stop"] and test.labels == [1]  # classes shared by every split
    assert len(load_keywords(tmp_path, "validation")) == 2
    with pytest.raises(ValueError, match="split must be"):
        load_keywords(tmp_path, "holdout")


def test_keyword_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="fix"):
        load_keywords(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no word folders"):
        load_keywords(tmp_path / "empty")


def reference_which_set(name: str) -> str:
    """Speech Commands' README rule, restated: hash of the name before '_nohash_', 2^27 - 1 buckets, 10 % / 10 %."""
    speaker = name.split("_nohash_")[0]
    bucket = int(hashlib.sha1(speaker.encode()).hexdigest(), 16) % 2**27
    percent = bucket * 100.0 / (2**27 - 1)
    return "validation" if percent < 10 else "test" if percent < 20 else "train"


def test_hash_split_keeps_speakers_together_and_has_the_stated_fractions():
    rng = np.random.default_rng(0)
    speakers = [f"{rng.integers(2**32):08x}" for _ in range(4000)]
    counts = {"train": 0, "validation": 0, "test": 0}
    for s in speakers:
        splits = {hash_split(f"{s}_nohash_{k}.wav") for k in range(3)}
        assert len(splits) == 1  # every recording of a speaker lands in one split
        split = splits.pop()
        assert split == reference_which_set(f"{s}_nohash_0.wav")
        counts[split] += 1
    n = len(speakers)
    for split, p in (("train", 0.8), ("validation", 0.1), ("test", 0.1)):
        assert abs(counts[split] - n * p) < 5 * math.sqrt(n * p * (1 - p))


def test_folder_without_lists_uses_the_hash_rule(tmp_path):
    names = [f"{k:04x}abcd_nohash_0.wav" for k in range(60)]
    for name in names:
        write_wav(tmp_path / "on" / name, tone(300, 0.01, 16000), 16000)
    expected = {n: reference_which_set(n) for n in names}
    assert set(expected.values()) == {"train", "validation", "test"}  # the 60 names reach every split
    seen = {p.name: split for split in ("train", "validation", "test") for p in load_keywords(tmp_path, split).files}
    assert seen == expected


# ---- transcribed speech (LibriSpeech layout) ------------------------------------------------------------------

def librispeech_tree(root: Path) -> dict:
    texts = {"19-198-0001": "THE CAT SAT", "19-198-0000": "HELLO WORLD", "26-495-0000": "IT'S A DOG"}
    for uid, text in texts.items():
        speaker, chapter, _ = uid.split("-")
        folder = root / speaker / chapter
        folder.mkdir(parents=True, exist_ok=True)
        soundfile.write(folder / f"{uid}.flac", tone(250, 0.1, 16000), 16000)
        with open(folder / f"{speaker}-{chapter}.trans.txt", "a") as f:
            f.write(f"{uid} {text}\n")
    return texts


def test_librispeech_layout(tmp_path):
    texts = librispeech_tree(tmp_path / "dev-clean")
    data = load_transcribed(tmp_path)
    assert [u.id for u in data.utterances] == sorted(texts)
    assert data.transcripts == [texts[k] for k in sorted(texts)]
    assert data.speakers == ["19", "19", "26"]
    waveform, text = data[2]
    assert text == "IT'S A DOG" and waveform.shape == (1600,)


def test_librispeech_errors_name_the_line(tmp_path):
    librispeech_tree(tmp_path)
    (tmp_path / "19" / "198" / "19-198-0001.flac").unlink()
    with pytest.raises(ValueError, match=r"19-198.trans.txt:\d: no 19-198-0001.flac"):
        load_transcribed(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no \\*.trans.txt"):
        load_transcribed(tmp_path / "empty")
    (tmp_path / "bad" / "1" / "2").mkdir(parents=True)
    (tmp_path / "bad" / "1" / "2" / "1-2.trans.txt").write_text("1-2-0000\n")
    with pytest.raises(ValueError, match="1-2.trans.txt:1: expected"):
        load_transcribed(tmp_path / "bad")


# ---- a task's splits by folder layout -------------------------------------------------------------------------

def test_librispeech_root_maps_subsets_to_splits(tmp_path):
    for subset, uid in (("train-clean-100", "1-2-0000"), ("train-clean-360", "3-4-0000"), ("dev-clean", "5-6-0000"),
                        ("dev-other", "7-8-0000"), ("test-clean", "9-9-0000")):
        speaker, chapter, _ = uid.split("-")
        folder = tmp_path / "LibriSpeech" / subset / speaker / chapter
        folder.mkdir(parents=True)
        soundfile.write(folder / f"{uid}.flac", tone(250, 0.5, 16000), 16000)
        (folder / f"{speaker}-{chapter}.trans.txt").write_text(f"{uid} {subset.upper()}\n")
    splits = audio_datasets(tmp_path / "LibriSpeech", "ctc", train_transform=RandomCrop(1600))
    assert {k: v.transcripts for k, v in splits.items()} == {
        "train": ["TRAIN-CLEAN-100", "TRAIN-CLEAN-360"], "validation": ["DEV-CLEAN"], "test": ["TEST-CLEAN"]}
    assert splits["train"][0][0].shape == (1600,) and splits["test"][0][0].shape == (8000,)  # crops: train only


def test_corpus_root_and_split_folders(tmp_path):
    speech_commands_tree(tmp_path / "corpus" / "keywords")
    librispeech_tree(tmp_path / "corpus" / "transcribed" / "train")
    librispeech_tree(tmp_path / "corpus" / "transcribed" / "test")
    (tmp_path / "corpus" / "manifest.json").write_text("{}")
    words = audio_datasets(tmp_path / "corpus", "keywords")
    assert sorted(words) == ["test", "train", "validation"] and words["train"].classes == ["no", "up", "yes"]
    text = audio_datasets(tmp_path / "corpus", "ctc")
    assert sorted(text) == ["test", "train"] and len(text["train"]) == 3  # no validation folder: no such split
    with pytest.raises(ValueError, match="task must be"):
        audio_datasets(tmp_path / "corpus", "asr")
    with pytest.raises(FileNotFoundError, match="no split folders"):
        audio_datasets(tmp_path / "corpus" / "keywords", "ctc")
