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

from .corpus_plan import SPLITS, CorpusConfig, Utterance, draw_speakers, plan_corpus
from .espeak import EspeakFailed, EspeakNotFound, espeak_version, find_espeak, synthesis_args, synthesise
from .waveform import SAMPLE_RATE, read_audio, resample, to_mono

OUTPUTS = ("keywords", "transcribed", "manifest.json")  # what a build writes into --out (and --overwrite replaces)
LIST_NAMES = {"validation": "validation_list.txt", "test": "testing_list.txt"}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _record(utt: Utterance, binary: str, tmp_wav: Path, target: Path) -> int:
    """Synthesise one utterance, convert it to 16 kHz mono 16-bit at `target`; returns its sample count."""
    import soundfile

    synthesise(binary, synthesis_args(utt.speaker.voice, utt.speaker.variant, utt.speed, utt.pitch), utt.text,
               tmp_wav)
    samples, rate = read_audio(tmp_wav)
    mono = resample(to_mono(samples), rate, SAMPLE_RATE)  # (N, C) at the synthesiser's rate -> (N',) at 16 kHz
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
              "espeak_args": synthesis_args(u.speaker.voice, u.speaker.variant, u.speed, u.pitch)} for u in plan]
    files += [{"path": p.relative_to(root).as_posix(), "sha256": sha256(p), "kind": "text"} for p in texts]
    return {"format": 1, "builder": "python -m tasks.audio.corpus", "espeak_ng": version, "sample_rate": SAMPLE_RATE,
            "config": {**asdict(cfg), "keywords": list(cfg.keywords)}, "speakers": speakers,
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
        for done, utt in enumerate(plan, start=1):
            samples[utt.path] = _record(utt, binary, staging / "espeak-ng.wav", staging / utt.path)
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
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    defaults = CorpusConfig()
    ap.add_argument("--out", required=True, help="the corpus folder")
    ap.add_argument("--seed", type=int, default=defaults.seed, help="seed of every random choice")
    for split in SPLITS:
        ap.add_argument(f"--{split}-speakers", type=int, default=defaults.speakers[split],
                        help=f"speakers (distinct voice timbres) in {split}")
    ap.add_argument("--keywords", default=",".join(defaults.keywords), help="comma-separated keywords")
    ap.add_argument("--repeats", type=int, default=defaults.repeats, help="recordings per speaker and keyword")
    ap.add_argument("--sentences-per-speaker", type=int, default=defaults.sentences_per_speaker)
    ap.add_argument("--min-words", type=int, default=defaults.min_words, help="words per sentence, at least")
    ap.add_argument("--max-words", type=int, default=defaults.max_words, help="words per sentence, at most")
    ap.add_argument("--espeak", default="espeak-ng", help="the espeak-ng program (a name on PATH or a path)")
    ap.add_argument("--overwrite", action="store_true", help="replace a corpus already in --out")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cfg = CorpusConfig(seed=args.seed, speakers={s: getattr(args, f"{s}_speakers") for s in SPLITS},
                       keywords=tuple(w.strip() for w in args.keywords.split(",") if w.strip()), repeats=args.repeats,
                       sentences_per_speaker=args.sentences_per_speaker, min_words=args.min_words,
                       max_words=args.max_words)

    def progress(done: int, total: int) -> None:
        if done == total or done % max(1, total // 10) == 0:
            print(f"{done}/{total} files", file=sys.stderr)

    try:
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
