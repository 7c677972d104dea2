"""The espeak-ng corpus builder (tasks.audio.corpus) without espeak-ng: a FAKE espeak-ng, a small Python script
written here and put first on PATH, answers `--version` and writes a tone WAV (22,050 Hz, as espeak-ng does) whose
pitch and length follow its -p, -s and text, and logs every command it got. The plan (speakers, split, seed) is
checked on its own; the built corpus against the fake's log, hashes computed here, and the project's loaders."""

import collections
import hashlib
import json
import os
import stat
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from tasks.audio import load_keywords, load_transcribed
from tasks.audio.corpus import build_corpus, main
from tasks.audio.corpus_plan import SPLITS, VARIANTS, VOICES, CorpusConfig, draw_speakers, plan_corpus
from tasks.audio.espeak import EspeakFailed, EspeakNotFound

FAKE_VERSION = "eSpeak NG text-to-speech: 9.99-fake"
FAKE = """\
#!{python} -S
import json, math, struct, sys, wave
args = sys.argv[1:]
if args == ["--version"]:
    print("{version}  Data at: /nowhere/espeak-ng-data")
    sys.exit(0)
with open({log!r}, "a") as log:
    log.write(json.dumps(args) + "\\n")
opts = dict(zip(args[:-1:2], args[1:-1:2]))
text = args[-1]
if text == "fail" or opts["-v"].startswith("nosuch"):
    print("Error: The specified espeak-ng voice does not exist.", file=sys.stderr)
    sys.exit(1)
rate = 22050
n = int(rate * 0.01 * len(text) * 175 / int(opts["-s"]))
freq = 100 + 5 * int(opts["-p"])
frames = b"".join(struct.pack("<h", int(12000 * math.sin(2 * math.pi * freq * t / rate))) for t in range(n))
with wave.open(opts["-w"], "wb") as f:
    f.setnchannels(1); f.setsampwidth(2); f.setframerate(rate); f.writeframes(frames)
"""


@pytest.fixture
def fake_espeak(tmp_path, monkeypatch):
    """A fake espeak-ng first on PATH; returns the path of its command log (one JSON list of arguments a line)."""
    bin_dir, log = tmp_path / "fakebin", tmp_path / "espeak-calls.jsonl"
    bin_dir.mkdir()
    script = bin_dir / "espeak-ng"
    script.write_text(FAKE.format(python=sys.executable, version=FAKE_VERSION, log=str(log)))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return log


SMALL = {"speakers": {"train": 2, "validation": 1, "test": 1}, "keywords": ("yes", "no"), "repeats": 2,
         "sentences_per_speaker": 2, "min_words": 2, "max_words": 4}


# ---- the plan -------------------------------------------------------------------------------------------------

def test_speakers_are_disjoint_between_splits_and_seeded():
    cfg = CorpusConfig(seed=3)
    speakers = draw_speakers(cfg)
    assert collections.Counter(s.split for s in speakers) == cfg.speakers
    timbres = {split: {(s.voice, s.variant) for s in speakers if s.split == split} for split in SPLITS}
    assert sum(len(t) for t in timbres.values()) == len(speakers)  # no timbre twice, in a split or across
    assert len({s.id for s in speakers}) == len(speakers)
    assert draw_speakers(CorpusConfig(seed=3)) == speakers  # seeded
    assert draw_speakers(CorpusConfig(seed=4)) != speakers
    assert plan_corpus(CorpusConfig(seed=3)) == plan_corpus(CorpusConfig(seed=3))


def test_speaker_draws_cover_the_voices_uniformly():
    """Over many seeds each accent is drawn with probability 1 / len(VOICES) (5 binomial standard deviations),
    and every (voice, variant) timbre, speed and pitch of the ranges occurs."""
    counts, timbres, speeds, pitches = collections.Counter(), set(), set(), set()
    seeds, per_seed = 300, sum(CorpusConfig().speakers.values())
    for seed in range(seeds):
        for s in draw_speakers(CorpusConfig(seed=seed)):
            counts[s.voice] += 1
            timbres.add((s.voice, s.variant))
            speeds.add(s.speed)
            pitches.add(s.pitch)
    n, p = seeds * per_seed, 1 / len(VOICES)
    assert all(abs(counts[v] - n * p) < 5 * np.sqrt(n * p * (1 - p)) for v in VOICES)
    assert len(timbres) == len(VOICES) * len(VARIANTS)
    assert speeds == set(range(130, 201)) and pitches == set(range(30, 71))


def test_plan_lists_every_file_once():
    cfg = CorpusConfig(**SMALL)
    plan = plan_corpus(cfg)
    assert len(plan) == 4 * (2 * 2 + 2) and len({u.path for u in plan}) == len(plan)
    for u in plan:
        if u.kind == "keyword":
            assert u.path == f"keywords/{u.text}/{u.speaker.id}_nohash_{u.path[-5]}.wav"
        else:
            assert u.path.startswith(f"transcribed/{u.speaker.split}/{u.speaker.id}/1/")
            assert 2 <= len(u.text.split()) <= 4
    first = [u for u in plan if u.path.endswith("_nohash_0.wav")]
    assert all((u.speed, u.pitch) == (u.speaker.speed, u.speaker.pitch) for u in first)  # repeat 0: the speaker's


BAD_CONFIGS = [
    ({"speakers": {"train": 1, "validation": 0, "test": 1}}, "speakers"),  # a split without speakers
    ({"speakers": {"train": 90, "validation": 5, "test": 5}}, "speakers"),  # more than the distinct timbres
    ({"keywords": ("Yes",)}, "keywords"),
    ({"keywords": ("go", "go")}, "keywords"),
    ({"repeats": 0}, "repeats"),
    ({"min_words": 5, "max_words": 2}, "min_words"),
]


@pytest.mark.parametrize(("change", "field"), BAD_CONFIGS)
def test_config_errors_name_the_field(change, field):
    with pytest.raises(ValueError, match=f"CorpusConfig.{field}: .*fix"):
        CorpusConfig(**change).check()


# ---- the build ------------------------------------------------------------------------------------------------

def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow  # runs the fake espeak-ng (a Python subprocess) once per recording
def test_build_with_a_fake_espeak(tmp_path, fake_espeak):
    cfg = CorpusConfig(**SMALL)
    out = tmp_path / "corpus"
    manifest = build_corpus(out, cfg)
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["espeak_ng"] == FAKE_VERSION and manifest["sample_rate"] == 16000
    assert manifest["config"]["seed"] == cfg.seed
    # every file on disk (but the manifest) is in the manifest with its hash, and nothing else
    on_disk = {p.relative_to(out).as_posix(): p for p in out.rglob("*") if p.is_file() and p.name != "manifest.json"}
    assert {f["path"]: f["sha256"] for f in manifest["files"]} == {k: file_sha256(p) for k, p in on_disk.items()}
    # the manifest's settings are the ones espeak-ng was called with, and each audio file is what it made
    calls = [json.loads(line) for line in fake_espeak.read_text().splitlines()]
    audio = [f for f in manifest["files"] if f["kind"] != "text"]
    assert sorted(c[:-3] + [c[-1]] for c in calls) == sorted(f["espeak_args"] + [f["text"]] for f in audio)
    for f in audio:
        opts = dict(zip(f["espeak_args"][::2], f["espeak_args"][1::2], strict=True))
        n22 = int(22050 * 0.01 * len(f["text"]) * 175 / int(opts["-s"]))
        with wave.open(str(out / f["path"])) if f["path"].endswith(".wav") else _flac(out / f["path"]) as w:
            assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2
            assert w.getnframes() == f["samples"] == -(-n22 * 320 // 441)  # 22,050 -> 16,000 Hz, the exact length
    speaker_of = {s["id"]: s for s in manifest["speakers"]}
    assert all(speaker_of[f["speaker"]]["split"] == f["split"] for f in audio)


class _flac:
    """`wave`-like header of a FLAC file, read with soundfile (the standard library has no FLAC reader)."""

    def __init__(self, path):
        import soundfile

        self.info = soundfile.info(str(path))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def getframerate(self):
        return self.info.samplerate

    def getnchannels(self):
        return self.info.channels

    def getsampwidth(self):
        return {"PCM_16": 2}[self.info.subtype]

    def getnframes(self):
        return self.info.frames


@pytest.mark.slow  # runs the fake espeak-ng (a Python subprocess) once per recording
def test_built_corpus_reads_with_the_loaders(tmp_path, fake_espeak):
    manifest = build_corpus(tmp_path / "c", CorpusConfig(**SMALL))
    split_of = {s["id"]: s["split"] for s in manifest["speakers"]}
    seen = {}
    for split in SPLITS:
        words = load_keywords(tmp_path / "c" / "keywords", split)
        assert words.classes == ["no", "yes"]
        speakers = {p.name.split("_nohash_")[0] for p in words.files}
        assert all(split_of[s] == split for s in speakers)  # Speech Commands' lists put each speaker in its split
        assert len(words) == len(speakers) * 2 * 2
        seen[split] = speakers
        sentences = load_transcribed(tmp_path / "c" / "transcribed" / split)
        assert set(sentences.speakers) == speakers
        expected = sorted((f["path"].rsplit("/", 1)[1][:-5], f["text"].upper()) for f in manifest["files"]
                          if f["kind"] == "sentence" and f["split"] == split)
        assert [(u.id, u.text) for u in sentences.utterances] == expected
        waveform, _ = sentences[0]
        assert waveform.ndim == 1 and waveform.abs().max().item() > 0.1
    assert not (seen["train"] & seen["validation"]) and not (seen["train"] & seen["test"])
    assert not (seen["validation"] & seen["test"])


@pytest.mark.slow  # runs the fake espeak-ng (a Python subprocess) once per recording
def test_build_is_reproducible(tmp_path, fake_espeak):
    first = build_corpus(tmp_path / "a", CorpusConfig(**SMALL))
    assert build_corpus(tmp_path / "b", CorpusConfig(**SMALL)) == first
    other = build_corpus(tmp_path / "c", CorpusConfig(**{**SMALL, "seed": 1}))
    assert other["speakers"] != first["speakers"]


def test_missing_espeak_is_one_line_with_the_install_fix(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(EspeakNotFound, match="espeak-ng not found on PATH.*apt-get install espeak-ng.*brew"):
        build_corpus(tmp_path / "out", CorpusConfig(**SMALL))
    assert main(["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error: espeak-ng not found" in err and "sudo apt-get install espeak-ng" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty-bin"]  # nothing written
    with pytest.raises(EspeakNotFound, match="at that path"):
        build_corpus(tmp_path / "out", CorpusConfig(**SMALL), espeak=str(tmp_path / "no" / "espeak-ng"))


@pytest.mark.slow  # runs the fake espeak-ng (a Python subprocess) once per recording
def test_a_failing_espeak_leaves_nothing_behind(tmp_path, fake_espeak, capsys):
    with pytest.raises(EspeakFailed, match="fail.*exit 1.*voice does not exist"):
        build_corpus(tmp_path / "out", CorpusConfig(**{**SMALL, "keywords": ("yes", "fail")}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["espeak-calls.jsonl", "fakebin"]  # no corpus, no staging


@pytest.mark.slow  # runs the fake espeak-ng (a Python subprocess) once per recording
def test_an_existing_corpus_is_refused_unless_overwrite(tmp_path, fake_espeak, capsys):
    out = tmp_path / "c"
    build_corpus(out, CorpusConfig(**SMALL))
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        build_corpus(out, CorpusConfig(**SMALL))
    args = ["--out", str(out), "--train-speakers", "1", "--validation-speakers", "1", "--test-speakers", "1",
            "--keywords", "go", "--sentences-per-speaker", "1", "--seed", "5"]
    assert main(args) == 2 and "already holds a corpus" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert "wrote 6 recordings" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["keywords"] == ["go"] and len(manifest["speakers"]) == 3
    assert sorted(p.name for p in (out / "keywords").iterdir()) == ["go", "testing_list.txt", "validation_list.txt"]
    assert (out / "notes.txt").read_text() == "mine"  # files the builder does not write are left alone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "espeak-calls.jsonl", "fakebin"]


def test_module_entry_point_runs(monkeypatch, capsys):
    """`python -m tasks.audio.corpus --help` answers: the module's `__main__` block, run here as `-m` runs it
    (runpy; a second interpreter would only add its imports)."""
    import runpy

    monkeypatch.setattr(sys, "argv", ["python -m tasks.audio.corpus", "--help"])
    monkeypatch.delitem(sys.modules, "tasks.audio.corpus")  # as in a new interpreter: not imported before `-m`
    with pytest.raises(SystemExit) as done:
        runpy.run_module("tasks.audio.corpus", run_name="__main__", alter_sys=True)
    out = capsys.readouterr().out
    assert done.value.code == 0 and "--train-speakers" in out and "--overwrite" in out


@pytest.mark.slow
@pytest.mark.skipif(__import__("shutil").which("espeak-ng") is None,
                    reason="espeak-ng is not installed (the fake espeak-ng tests above cover the builder)")
def test_real_espeak_builds_a_tiny_reproducible_corpus(tmp_path):
    """Where espeak-ng is installed: real speech, 16 kHz, a keyword lasting well under a few seconds, and the same
    hashes from a second build."""
    cfg = CorpusConfig(speakers={"train": 1, "validation": 1, "test": 1}, keywords=("stop",), sentences_per_speaker=1)
    first = build_corpus(tmp_path / "a", cfg)
    assert first["espeak_ng"].startswith("eSpeak NG")
    for f in first["files"]:
        if f["kind"] == "keyword":
            assert 0.2 * 16000 < f["samples"] < 3 * 16000
    waveform = load_keywords(tmp_path / "a" / "keywords", "test")[0][0]
    assert waveform.abs().max().item() > 0.05
    assert build_corpus(tmp_path / "b", cfg)["files"] == first["files"]


# ---- harder keywords (window, noise, babble) -----------------------------------------------------------------

HARD = {**SMALL, "speakers": {"train": 3, "validation": 2, "test": 2}, "window_seconds": 1.0,
        "noise": ("pink", "babble"), "snr_db": (0.0, 10.0), "babble_talkers": 2}


def test_harder_keywords_leave_the_clean_plan_alone_and_are_seeded():
    clean, hard = plan_corpus(CorpusConfig(**{**HARD, "window_seconds": None, "noise": ()})), plan_corpus(
        CorpusConfig(**HARD))
    assert [(u.path, u.text, u.speed, u.pitch) for u in clean] == [(u.path, u.text, u.speed, u.pitch) for u in hard]
    assert all(u.mix is None for u in clean)
    mixes = [u.mix for u in hard if u.kind == "keyword"]
    assert all(m is not None and 0 <= m.offset <= 1 and 0 <= m.snr_db <= 10 and m.noise in HARD["noise"]
               for m in mixes)
    assert all(u.mix is None for u in hard if u.kind == "sentence")
    assert plan_corpus(CorpusConfig(**HARD)) == hard
    by_path = {u.path: u for u in hard}
    for u in hard:  # babble: sentences of OTHER speakers of the SAME split, that the corpus records
        if u.mix is not None and u.mix.noise == "babble":
            assert len(u.mix.babble) == min(2, HARD["speakers"][u.speaker.split] - 1)  # as many others as exist
            for source in u.mix.babble:
                assert by_path[source].kind == "sentence" and by_path[source].speaker.split == u.speaker.split
                assert by_path[source].speaker.id != u.speaker.id


def test_noise_kinds_over_many_recordings_are_uniform():
    """Each kind is drawn with probability 1/3 per recording (5 binomial standard deviations over 2,100 draws)."""
    cfg = CorpusConfig(**{**HARD, "noise": ("white", "pink", "babble"), "keywords": tuple("abcdefghij"),
                          "speakers": {"train": 30, "validation": 20, "test": 20}, "repeats": 3})
    kinds = collections.Counter(u.mix.noise for u in plan_corpus(cfg) if u.kind == "keyword")
    n = sum(kinds.values())
    assert n == 70 * 10 * 3
    assert all(abs(kinds[k] - n / 3) <= 5 * np.sqrt(n * (1 / 3) * (2 / 3)) for k in ("white", "pink", "babble"))


@pytest.mark.parametrize("change, field", [
    ({"noise": ("purple",)}, "noise"),
    ({"window_seconds": None}, "noise"),  # noise without a window
    ({"snr_db": (5.0, 0.0)}, "snr_db"),
    ({"sentences_per_speaker": 0}, "noise"),  # babble without sentences
    ({"window_seconds": 0.01}, "window_seconds"),
])
def test_harder_keyword_config_errors_name_the_field(change, field):
    with pytest.raises(ValueError, match=f"CorpusConfig.{field}"):
        CorpusConfig(**{**HARD, **change}).check()


@pytest.mark.slow  # a subprocess per recording (~4 s)
def test_build_harder_keywords_with_a_fake_espeak(tmp_path, fake_espeak):
    manifest = build_corpus(tmp_path / "c", CorpusConfig(**HARD))
    keywords = [f for f in manifest["files"] if f["kind"] == "keyword"]
    assert all(f["samples"] == 16000 and "mix" in f for f in keywords)  # every keyword is exactly the 1 s window
    assert manifest["config"]["noise"] == ["pink", "babble"] and manifest["config"]["window_seconds"] == 1.0
    train = load_keywords(tmp_path / "c" / "keywords", "train")
    assert all(train[i][0].shape == (16000,) for i in range(len(train)))
    assert build_corpus(tmp_path / "d", CorpusConfig(**HARD))["files"] == manifest["files"]  # reproducible


def test_the_study_preset_and_flags_make_the_config(tmp_path):
    from tasks.audio.corpus import _parser, config_from_args
    from tasks.audio.corpus_plan import CORPUS_PRESETS, SPEECH_COMMANDS_35

    study = config_from_args(_parser().parse_args(["--out", "x", "--preset", "study"]))
    assert study.keywords == SPEECH_COMMANDS_35 and len(set(SPEECH_COMMANDS_35)) == 35
    assert study.window_seconds == 1.0 and study.noise == CORPUS_PRESETS["study"]["noise"]
    study.check()
    changed = config_from_args(_parser().parse_args(["--out", "x", "--preset", "study", "--test-speakers", "2",
                                                     "--snr-db", "5,15", "--noise", "white"]))
    assert changed.speakers == {**study.speakers, "test": 2} and changed.snr_db == (5.0, 15.0)
    assert changed.noise == ("white",)
    assert config_from_args(_parser().parse_args(["--out", "x"])) == CorpusConfig()  # clean: the defaults
