"""`python -m tasks.audio.corpus --out DIR`: a reproducible spoken-word corpus synthesised with espeak-ng.

What it builds (the plan, speakers and texts: `corpus_plan.py`; the program: `espeak.py`):
- `keywords/<word>/<speaker>_nohash_<r>.wav` with `validation_list.txt` and `testing_list.txt`: Speech Commands'
  layout, read by `tasks.audio.load_keywords`;
- `transcribed/<split>/<speaker>/1/<speaker>-1.trans.txt` and `<speaker>-1-<n>.flac`: LibriSpeech's layout (upper-
  case transcripts), read by `tasks.audio.load_transcribed` (one folder per split);
- `manifest.json`: the espeak-ng version, the config (seed included), every speaker's settings and split, and
  every file (audio, lists, transcripts) with its sha256, sample count and, for audio, the text and the exact
  espeak-ng arguments. Rebuilding with the same espeak-ng version and config gives the same hashes.
Every recording is converted to 16 kHz mono 16-bit (espeak-ng writes 22,050 Hz) with `waveform.resample`. Speakers
(voice timbres) are disjoint between train, validation and test. espeak-ng must be installed (`espeak.INSTALL_FIX`);
without it the command stops with one line naming the fix, before writing anything.

The corpus is written into a temporary folder next to `--out` and moved into place at the end, so an interrupted or
failed build leaves no partial corpus; an `--out` that already holds one is refused unless `--overwrite`.

Differences from the original: Speech Commands clips are people recorded on phones and padded to one second;
these are synthetic, silent before and after, and as long as espeak-ng makes them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .corpus_plan import CORPUS_PRESETS, SPLITS, CorpusConfig, Mix, Utterance, draw_speakers, plan_corpus
from .espeak import EspeakFailed, EspeakNotFound, espeak_version, find_espeak, synthesis_args, synthesise
from .noise import babble, coloured_noise, fit_full_scale, mix_at_snr, place_in_window, trim_silence
from .waveform import SAMPLE_RATE, read_audio, resample, to_mono

OUTPUTS = ("keywords", "transcribed", "manifest.json")  # what a build writes into --out (and --overwrite replaces)
LIST_NAMES = {"validation": "validation_list.txt", "test": "testing_list.txt"}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def harder(mono: np.ndarray, mix: Mix, window: int, root: Path) -> np.ndarray:
    """A clean keyword recording made harder (`tasks.audio.noise`): trimmed, placed in the window at the mix's
    offset, noise of the mix's kind added at its SNR (babble read from the sentences already written under `root`),
    scaled down if it would clip."""
    word = trim_silence(mono)
    speech = place_in_window(word, window, mix.offset)  # (window,)
    if mix.noise is None:
        return fit_full_scale(speech)
    rng = np.random.default_rng(mix.noise_seed)
    if mix.noise == "babble":
        noise = babble([to_mono(read_audio(root / path)[0]) for path in mix.babble], window, rng)
    else:
        noise = coloured_noise(mix.noise, window, rng)
    power = float(np.mean(word.astype(np.float64) ** 2))  # the speech's power while it is active
    return fit_full_scale(mix_at_snr(speech, noise, mix.snr_db, power))


def _record(utt: Utterance, binary: str, tmp_wav: Path, target: Path, window: int | None = None) -> int:
    """Synthesise one utterance, convert it to 16 kHz mono 16-bit at `target` (made harder when it has a `mix`,
    with `window` samples); returns its sample count."""
    import soundfile

    synthesise(binary, synthesis_args(utt.speaker.voice, utt.speaker.variant, utt.speed, utt.pitch), utt.text,
               tmp_wav)
    samples, rate = read_audio(tmp_wav)
    mono = resample(to_mono(samples), rate, SAMPLE_RATE)  # (N, C) at the synthesiser's rate -> (N',) at 16 kHz
    if utt.mix is not None:
        mono = harder(mono, utt.mix, window, tmp_wav.parent)  # (N',) -> (window,); sentences sit beside tmp_wav
    target.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(target, mono.clip(-1.0, 1.0), SAMPLE_RATE, subtype="PCM_16",
                    format="FLAC" if target.suffix == ".flac" else "WAV")
    return len(mono)


def _write_text_files(root: Path, plan: list[Utterance]) -> list[Path]:
    """Speech Commands' two lists and one LibriSpeech transcript file per speaker; returns their paths."""
    written = []
    for split, name in LIST_NAMES.items():
        lines = sorted(u.path.removeprefix("keywords/") for u in plan
                       if u.kind == "keyword" and u.speaker.split == split)
        (root / "keywords" / name).write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        written.append(root / "keywords" / name)
    by_file = defaultdict(list)
    for u in plan:
        if u.kind == "sentence":
            stem = Path(u.path).stem  # <speaker>-1-<n>
            by_file[Path(u.path).parent / f"{stem.rsplit('-', 1)[0]}.trans.txt"].append(f"{stem} {u.text.upper()}\n")
    for relative, lines in sorted(by_file.items()):
        (root / relative).write_text("".join(lines), encoding="utf-8")
        written.append(root / relative)
    return written


def _manifest(cfg: CorpusConfig, version: str, plan: list[Utterance], samples: dict[str, int], texts: list[Path],
              root: Path) -> dict:
    speakers = [{"id": s.id, **asdict(s)} for s in draw_speakers(cfg)]
    files = [{"path": u.path, "sha256": sha256(root / u.path), "kind": u.kind, "split": u.speaker.split,
              "speaker": u.speaker.id, "text": u.text, "samples": samples[u.path],
              "espeak_args": synthesis_args(u.speaker.voice, u.speaker.variant, u.speed, u.pitch),
              **({"mix": {**asdict(u.mix), "babble": list(u.mix.babble)}} if u.mix is not None else {})}
             for u in plan]
    files += [{"path": p.relative_to(root).as_posix(), "sha256": sha256(p), "kind": "text"} for p in texts]
    return {"format": 1, "builder": "python -m tasks.audio.corpus", "espeak_ng": version, "sample_rate": SAMPLE_RATE,
            "config": {**asdict(cfg), "keywords": list(cfg.keywords), "noise": list(cfg.noise),
                       "snr_db": list(cfg.snr_db)}, "speakers": speakers,
            "files": sorted(files, key=lambda f: f["path"])}


def _refuse_existing(out: Path, overwrite: bool) -> None:
    present = [name for name in OUTPUTS if (out / name).exists()]
    if present and not overwrite:
        raise FileExistsError(f"{out} already holds a corpus ({', '.join(present)}); fix: pass --overwrite to "
                              "replace it, or another --out")


def build_corpus(out: str | Path, cfg: CorpusConfig | None = None, espeak: str = "espeak-ng",
                 overwrite: bool = False, progress=None) -> dict:
    """Build the corpus into `out`; returns the manifest. `progress(done, total)` is called after each file."""
    cfg = cfg or CorpusConfig()
    cfg.check()
    out = Path(out)
    _refuse_existing(out, overwrite)
    binary = find_espeak(espeak)  # before anything is written: a missing espeak-ng leaves no folder behind
    version = espeak_version(binary)
    plan = plan_corpus(cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        samples = {}
        window = None if cfg.window_seconds is None else int(round(cfg.window_seconds * SAMPLE_RATE))
        ordered = sorted(plan, key=lambda u: u.kind != "sentence")  # sentences first: babble reads them
        for done, utt in enumerate(ordered, start=1):
            samples[utt.path] = _record(utt, binary, staging / "espeak-ng.wav", staging / utt.path, window)
            if progress is not None:
                progress(done, len(plan))
        (staging / "espeak-ng.wav").unlink(missing_ok=True)
        texts = _write_text_files(staging, plan)
        manifest = _manifest(cfg, version, plan, samples, texts, staging)
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        out.mkdir(exist_ok=True)
        for name in OUTPUTS:  # move into place; with --overwrite the old corpus goes first
            if (out / name).is_dir():
                shutil.rmtree(out / name)
            (staging / name).replace(out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m tasks.audio.corpus", description=__doc__.split("\n")[0],
                                 epilog="Every setting left out comes from --preset (clean: CorpusConfig's defaults).")
    defaults = CorpusConfig()
    ap.add_argument("--out", required=True, help="the corpus folder")
    ap.add_argument("--preset", default="clean", choices=tuple(CORPUS_PRESETS),
                    help="clean: 20 keywords as espeak-ng says them (easy: a log-spectrogram baseline gets them all "
                    "right); study: the equal-budget study's harder corpus (35 words in a 1 s window with noise at a "
                    "random SNR; tasks/audio/README.md)")
    ap.add_argument("--seed", type=int, default=None, help=f"seed of every random choice ({defaults.seed})")
    for split in SPLITS:
        ap.add_argument(f"--{split}-speakers", type=int, default=None,
                        help=f"speakers (distinct voice timbres) in {split} ({defaults.speakers[split]})")
    ap.add_argument("--keywords", default=None, help="comma-separated keywords (the 20 commands and digits)")
    ap.add_argument("--repeats", type=int, default=None,
                    help=f"recordings per speaker and keyword ({defaults.repeats})")
    ap.add_argument("--sentences-per-speaker", type=int, default=None, help=f"({defaults.sentences_per_speaker})")
    ap.add_argument("--min-words", type=int, default=None, help=f"words per sentence, at least ({defaults.min_words})")
    ap.add_argument("--max-words", type=int, default=None, help=f"words per sentence, at most ({defaults.max_words})")
    ap.add_argument("--window-seconds", type=float, default=None,
                    help="place every keyword, trimmed of its silence, at a random offset in a window this long")
    ap.add_argument("--noise", default=None, help="comma-separated noise kinds drawn per keyword: white, pink, brown, "
                    "babble (other speakers' sentences of the same split); needs --window-seconds")
    ap.add_argument("--snr-db", default=None, metavar="LOW,HIGH", help="SNR range of the noise in dB (0,20)")
    ap.add_argument("--babble-talkers", type=int, default=None, help=f"talkers in babble ({defaults.babble_talkers})")
    ap.add_argument("--espeak", default="espeak-ng", help="the espeak-ng program (a name on PATH or a path)")
    ap.add_argument("--overwrite", action="store_true", help="replace a corpus already in --out")
    return ap


def config_from_args(args: argparse.Namespace) -> CorpusConfig:
    """--preset's values, each replaced by its flag when given (ValueError on a malformed list)."""
    values = dict(CORPUS_PRESETS[args.preset])
    speakers = dict(values.get("speakers", CorpusConfig().speakers))
    for split in SPLITS:
        if getattr(args, f"{split}_speakers") is not None:
            speakers[split] = getattr(args, f"{split}_speakers")
    values["speakers"] = speakers
    for name in ("seed", "repeats", "sentences_per_speaker", "min_words", "max_words", "window_seconds",
                 "babble_talkers"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    if args.keywords is not None:
        values["keywords"] = tuple(w.strip() for w in args.keywords.split(",") if w.strip())
    if args.noise is not None:
        values["noise"] = tuple(w.strip() for w in args.noise.split(",") if w.strip())
    if args.snr_db is not None:
        try:
            low, high = (float(x) for x in args.snr_db.split(","))
        except ValueError:
            raise ValueError(f"--snr-db {args.snr_db!r} is not LOW,HIGH; fix: e.g. --snr-db 0,20") from None
        values["snr_db"] = (low, high)
    return CorpusConfig(**values)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    def progress(done: int, total: int) -> None:
        if done == total or done % max(1, total // 10) == 0:
            print(f"{done}/{total} files", file=sys.stderr)

    try:
        cfg = config_from_args(args)
        manifest = build_corpus(args.out, cfg, args.espeak, args.overwrite, progress)
    except (EspeakNotFound, EspeakFailed, FileExistsError, ValueError) as error:
        print(f"python -m tasks.audio.corpus: error: {error}", file=sys.stderr)
        return 2
    audio = [f for f in manifest["files"] if f["kind"] != "text"]
    seconds = sum(f["samples"] for f in audio) / SAMPLE_RATE
    print(f"wrote {len(audio)} recordings ({seconds / 60:.1f} min of speech, {manifest['espeak_ng']}) and "
          f"{Path(args.out) / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
