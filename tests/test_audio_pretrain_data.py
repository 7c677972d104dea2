"""`study.data.build_audio_data`: the pretraining speech of every layout (train split only), random crops of at
most N seconds seeded per sample, labels dropped, the collate's batch, and bad input as one line with its fix.

The folders are synthesised by `speech_files` (tones and noise written as WAV by the standard library)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from speech_files import RATE, write_corpus, write_keyword_folder, write_transcribed, write_wav

from data2vec.sampling import SeededItems
from data2vec.study.data import build_audio_data
from data2vec.study.errors import StudyError


def wav_files(root: Path) -> set[Path]:
    return {p.resolve() for p in root.rglob("*.wav")}


def names_read(dataset) -> list[Path]:
    """The file each item of the pretraining dataset reads (through the Mapped -> base dataset chain)."""
    base = dataset.dataset
    parts = base.datasets if hasattr(base, "datasets") else [base]
    names = []
    for part in parts:
        names += [Path(p).resolve() for p in part.files] if hasattr(part, "files") else \
            [Path(u.path).resolve() for u in part.utterances]
    return names


def test_keyword_folder_gives_train_crops_without_labels(tmp_path):
    root = write_keyword_folder(tmp_path / "kw")
    dataset, info, collate = build_audio_data(root, crop_seconds=0.25)
    assert info["layout"] == "keywords" and info["kind"] == "audio"
    assert sorted(names_read(dataset)) == sorted(wav_files(root / "train"))
    assert len(dataset) == info["utterances"] == 4 * 3
    item = dataset[0]
    assert isinstance(item, torch.Tensor) and item.shape == (round(0.25 * RATE),)  # 0.5 s words cropped to 0.25 s
    batch = collate([dataset[i] for i in range(3)])
    assert set(batch) == {"waveform", "lengths"} and batch["waveform"].shape == (3, 4000)
    assert batch["lengths"].tolist() == [4000] * 3


@pytest.mark.slow  # reads many crops from files (~4 s)
def test_crops_are_windows_of_the_file_drawn_per_sample_and_epoch(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "kw" / "train" / "hum").mkdir(parents=True)
    written = write_wav(tmp_path / "kw" / "train" / "hum" / "a_nohash_0.wav", 0.5 * rng.uniform(-1, 1, 2 * RATE))
    whole = torch.from_numpy(np.frombuffer(written.read_bytes()[44:], dtype="<i2").astype(np.float32) / 32768)
    dataset, _, _ = build_audio_data(tmp_path / "kw", crop_seconds=0.1)
    seeded = SeededItems(dataset, seed=3)
    starts = []
    for epoch in range(40):
        crop = seeded[(epoch, 0)]
        assert crop.shape == (1600,)
        # where the window starts: the offsets at which the crop equals the file (a window of the file: one at least)
        offsets = (whole.unfold(0, 1600, 1) == crop).all(dim=1).nonzero().flatten()  # (N - 1600 + 1, 1600) rows
        assert len(offsets) >= 1
        starts.append(int(offsets[0]))
    assert torch.equal(seeded[(5, 0)], seeded[(5, 0)])  # a pure function of (seed, epoch, index)
    assert len(set(starts)) > 30  # 40 epochs over 30401 possible starts: almost never a repeat


def test_short_utterances_are_kept_whole(tmp_path):
    root = write_keyword_folder(tmp_path / "kw")
    dataset, info, collate = build_audio_data(root, crop_seconds=5.0)
    assert dataset[0].shape == (round(0.5 * RATE),) and info["crop_samples"] == 5 * RATE


def test_librispeech_root_uses_the_train_subsets_only(tmp_path):
    root = tmp_path / "LibriSpeech"
    write_transcribed(root / "train-clean-100", ["go up", "no"], speakers=2, seed=0)
    write_transcribed(root / "dev-clean", ["up"], speakers=1, seed=1)
    write_transcribed(root / "test-clean", ["go"], speakers=1, seed=2)
    dataset, info, _ = build_audio_data(root, crop_seconds=1.0)
    assert info["layout"] == "transcribed"
    assert sorted(names_read(dataset)) == sorted(wav_files(root / "train-clean-100"))


def test_one_subset_folder_is_read_whole(tmp_path):
    root = write_transcribed(tmp_path / "train-clean-100", ["go up", "no"], speakers=2)
    dataset, info, _ = build_audio_data(root, crop_seconds=1.0)
    assert info["layout"] == "transcribed-subset" and sorted(names_read(dataset)) == sorted(wav_files(root))


def test_a_root_without_training_speech_is_refused(tmp_path):
    root = tmp_path / "LibriSpeech"
    write_transcribed(root / "dev-clean", ["up"], speakers=1)
    write_transcribed(root / "test-clean", ["go"], speakers=1, seed=2)
    with pytest.raises(StudyError, match="no training split; fix:"):
        build_audio_data(root, crop_seconds=1.0)


def test_built_corpus_reads_both_parts_train_splits(tmp_path):
    root = write_corpus(tmp_path / "corpus")
    dataset, info, _ = build_audio_data(root, crop_seconds=1.0)
    assert info["layout"] == "corpus"
    expected = wav_files(root / "keywords" / "train") | wav_files(root / "transcribed" / "train")
    names = names_read(dataset)
    assert len(names) == len(expected) and set(names) == expected
    assert not set(names) & (wav_files(root / "transcribed" / "test") | wav_files(root / "keywords" / "test"))


@pytest.mark.parametrize("make, match", [
    (lambda p: p / "missing", "speech data not found"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "no speech layout found"),
])
def test_bad_data_is_one_line_with_a_fix(tmp_path, make, match):
    with pytest.raises(StudyError, match=match) as caught:
        build_audio_data(make(tmp_path), crop_seconds=1.0)
    assert "fix:" in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(StudyError, match="crop must be positive"):
        build_audio_data(tmp_path, crop_seconds=0)
