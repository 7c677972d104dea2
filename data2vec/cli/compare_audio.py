"""The speech study's flags of `data2vec compare` (--modality audio) and their check: the keyword corpus, the encoder,
the crops, turned into `data2vec.study.audio_config.AudioCompareConfig` (the study itself, its protocols and their
reasons are in `data2vec.study.audio` and `audio_protocols`).
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from ..study.audio_config import AUDIO_METHODS, AudioCompareConfig
from .errors import CliError


def add_audio_arguments(parser: argparse.ArgumentParser) -> None:
    """The speech comparison's own flags, added to `data2vec compare` (the shared ones: --data is the keyword corpus,
    --methods, --budget-minutes, --seeds, --preset, --dim/--depth/--heads, --batch-size, --out, --runs, --quick,
    --device, --threads, --finetune-full)."""
    g = parser.add_argument_group(
        "speech (--modality audio)",
        "data2vec and data2vec 2.0 pretrained on the training speech of --data (a keyword folder, or a corpus built "
        "by python -m tasks.audio.corpus --preset study) at an equal budget, scored on its keywords by frozen k-NN "
        "and linear probes and by fine-tuning with 1 % and 10 % of the labels; floors: random init, log-mel / MFCC "
        "features with the same probes, supervised from scratch. The study uses --dim 128 --depth 4 --heads 4 "
        "--conv-dim 64 --batch-size 32 and 1 s clips: on one CPU core an update costs ~0.9 s (data2vec) and ~1.5 s "
        "(data2vec2), so 15 minutes is ~1,000 / ~600 updates")
    g.add_argument("--conv-dim", type=int, default=64,
                   help="channels of the 7-layer feature encoder (released 512; its cost grows with it)")
    g.add_argument("--crop-seconds", type=float, default=1.0,
                   help="pretraining crops and the evaluation window, in seconds (keyword clips are 1 s)")


def audio_study_config(args: argparse.Namespace) -> AudioCompareConfig:
    """The flags checked and turned into an AudioCompareConfig (bad input is a one-line CliError)."""
    from ..study.records import say
    from .common import choose_device
    from .compare import study_compute
    from .compare_sets import parse_recipe_sets

    dim = args.dim or 128  # the speech study's width
    listed = ",".join(AUDIO_METHODS) if args.methods is None else args.methods
    methods = tuple(m.strip() for m in listed.split(",") if m.strip())
    for m in methods:
        if m not in AUDIO_METHODS:
            raise CliError(f"--methods: {m} is not a speech pretraining method; fix: use some of "
                           f"{', '.join(AUDIO_METHODS)} (the floors random/features/supervised are always included)")
    if not methods:
        raise CliError("--methods is empty; fix: e.g. --methods data2vec,data2vec2")
    sizes = dict(seeds=args.seeds, dim=dim, depth=args.depth, heads=args.heads, batch_size=args.batch_size,
                 conv_dim=args.conv_dim)
    for flag, value in sizes.items():
        if value < 1:
            raise CliError(f"--{flag.replace('_', '-')} must be >= 1, got {value}; fix: pass 1 or more")
    if dim % args.heads:
        raise CliError(f"--heads {args.heads} does not divide --dim {dim}; fix: e.g. --dim 128 --heads 4")
    if not 0.1 <= args.crop_seconds <= 30:
        raise CliError(f"--crop-seconds must lie in [0.1, 30], got {args.crop_seconds}; fix: e.g. 1 for keywords")
    out = "runs/compare-audio-quick" if args.quick and args.out == "runs/compare" else args.out  # never a real study's
    runs = args.runs or str(Path(out) / "runs")
    data = args.data
    if args.quick and data is None:
        from tasks.audio.synthetic import write_tone_keywords

        folder = Path(runs) / "synthetic-keywords"
        if not (folder / "testing_list.txt").is_file():
            write_tone_keywords(folder)
        data = str(folder)
        say(f"--quick: no --data given, so the keywords are a tiny SYNTHETIC folder of tones in noise ({data}); the "
            "numbers only show that the pipeline runs")
    if data is None:
        raise CliError("--modality audio needs --data; fix: pass a keyword folder or a corpus built by python -m "
                       "tasks.audio.corpus --preset study, or --quick")
    if not Path(data).is_dir():
        raise CliError(f"--data {data}: no such folder; fix: give a keyword folder or a built corpus")
    device = choose_device(args.device)
    values = dict(data=str(data), out=out, runs=runs, methods=methods, budget_minutes=args.budget_minutes,
                  seeds=tuple(range(1, args.seeds + 1)), preset=args.preset, dim=dim, depth=args.depth,
                  heads=args.heads, conv_dim=args.conv_dim, batch_size=args.batch_size, crop_seconds=args.crop_seconds,
                  finetune_fractions=(0.01, 0.1) + ((1.0,) if args.finetune_full else ()), device=device,
                  threads=args.threads, clock="cpu" if device == "cpu" else "wall", quick=args.quick,
                  command="data2vec " + " ".join(shlex.quote(a) for a in args.argv),
                  recipe_sets=parse_recipe_sets(args.recipe_sets, methods), **study_compute(args, out, device))
    if args.quick:  # seconds per method on a tiny encoder: checks the whole pipeline, numbers not meaningful
        values.update(seeds=(1,), budget_minutes=min(args.budget_minutes, 0.1), preset="tiny", dim=64, depth=2,
                      heads=2, conv_dim=32, batch_size=8, calibration_steps=3, frozen_fraction=0.5,
                      finetune_epochs={0.01: 3, 0.1: 3, 1.0: 2}, finetune_min_updates=6)
    return AudioCompareConfig(**values)
