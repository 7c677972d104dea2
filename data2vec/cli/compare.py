"""`data2vec compare`: the command of the equal-budget study. It parses the flags, turns them into the study's
settings (`data2vec.study.vision_config.CompareConfig` for images, `text_config.TextCompareConfig` with
--modality text, `audio_config.AudioCompareConfig` with --modality audio) and runs
`data2vec.study.pipeline.run_comparison`; everything the study does is in `data2vec.study` (its docstrings describe
the protocols). Bad flags are a one-line CliError; a study stopped by
a signal exits with the signal's status.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from ..study.errors import StudyError, StudyInterrupted
from .errors import CliError, HelpFormatter, Interrupted
from .flags import add_device_and_threads, add_precision, resolve_precision

# ---- the command --------------------------------------------------------------------------------------------


def add_parser(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="pretrain several methods at an equal budget and compare them against the floors: on an image data set "
        "(k-NN, linear probe, few-label fine-tuning; data2vec, data2vec 2.0, DINO) or a text corpus (--modality text: "
        "GLUE, SQuAD/XQuAD; BERT, data2vec, data2vec 2.0)",
        description="Equal-budget comparison of self-supervised methods on an image data set (described here) or, "
        "with --modality text, a text corpus scored on GLUE and SQuAD/XQuAD (see --glue). Each method's "
        "seconds per update are measured once, its update count fixed to fill --budget-minutes, and every encoder "
        "is scored with the same protocols; the floors (random init, raw pixels, supervised from scratch with the "
        "pretraining + fine-tuning time) are always included. Writes OUT/<arm>/seed<k>/<protocol>.json, "
        "OUT/summary.json, OUT/table.md, OUT/table.txt and OUT/plots/. Rerun the same command to continue: "
        "finished results are skipped. Choosing the budget: what matters is updates x batch; on a CPU core a 4 x 128 "
        "ViT does about 2 data2vec updates per second at batch 64 on 32 px images, so 15 minutes is ~2 epochs of "
        "CIFAR-10 (enough to see frozen features separate from random init, far from the papers' 800 epochs); "
        "a GPU does the same budget ~50x faster, so give it a bigger encoder (--dim 384 --depth 6) and an hour.",
        formatter_class=HelpFormatter)
    p.add_argument("--modality", choices=("vision", "text", "audio"), default="vision",
                   help="vision: the image comparison described here; text: BERT-MLM, data2vec and data2vec 2.0 "
                   "pretrained on a text corpus and fine-tuned on GLUE tasks (see --glue); audio: data2vec and "
                   "data2vec 2.0 on a spoken-keyword corpus (see the speech group)")
    p.add_argument("--data", default=None,
                   help="vision: 'digits' (scikit-learn, no download), a CIFAR-10 or MNIST folder (or .tar.gz), or an "
                   "image folder <root>/<class>/<image> (split 80/20) or <root>/<split>/<class>/<image>; text: the "
                   "pretraining corpus (a .txt file or a folder of them)")
    p.add_argument("--methods", default=None,
                   help="comma-separated pretraining methods (registry names; default: images data2vec,data2vec2,dino, "
                   "text bert,data2vec,data2vec2); the floors are always added")
    p.add_argument("--budget-minutes", default="15", metavar="MINUTES[,MINUTES...]",
                   help="pretraining time per method and seed; the update count is fixed from a timed calibration "
                   "of every method at the start. On a CPU the time is this process's CPU time (immune to other "
                   "work on the machine; with --threads 1 it equals wall-clock on an idle core), on a GPU wall-clock. "
                   "A list (e.g. 4,15,60,240) makes a budget CURVE in --out: one study folder per budget "
                   "(OUT/budget-<b>min), every arm and floor at every budget, one calibration for all of them, "
                   "and OUT/curve.md plus plots/curve-*.png; the first seed of every budget runs before the second "
                   "seed of any, in the order given (put the budgets you most want first). Later runs may add budgets "
                   "(e.g. --budget-minutes 240 --seeds 1) to the same curve")
    p.add_argument("--reuse", action="append", default=[], metavar="DIR",
                   help="with a budget curve: a finished one-budget comparison (its --out) made with the same "
                   "settings counts as the curve's point at its budget (its calibration becomes the curve's, so "
                   "every point's update count follows from the same measured seconds per update); a study made "
                   "with other settings (data, encoder, batch, precision, probes) is refused, naming the setting")
    p.add_argument("--seeds", type=int, default=3, help="seeds per arm (report mean +- std over them); at least 3")
    add_encoder_arguments(p)
    p.add_argument("--set", dest="recipe_sets", action="append", default=[], metavar="METHOD.KEY=VALUE",
                   help="change one method's recipe for a TUNING run (images and text), e.g. --set dino.n_local=0 "
                   "--set dino.teacher_temp=0.02 --set data2vec.lr=1e-3 --set data2vec2.num_masks=4 --set "
                   "bert.mask_prob=0.2 (values parsed as JSON; lr = the peak lr). Use a separate --out per trial: "
                   "its calibration is its own (images: an --out made without the same sets is refused; text: a "
                   "trial that changes only lr or tau_* may start from a copy of the study's calibration.json, so "
                   "it gets the study's update count). Compare trials on the validation scores (carved from the "
                   "training data), never on the test or GLUE dev scores you report")
    p.add_argument("--out", default="runs/compare",
                   help="results folder: one JSON per result, summary, table and plots (small: commit it); "
                   "--quick defaults to runs/compare-quick")
    p.add_argument("--runs", default=None,
                   help="folder of the pretraining/fine-tuning run folders (checkpoints; default OUT/runs: keep it "
                   "out of git)")
    p.add_argument("--report-only", action="store_true",
                   help="only rebuild OUT/summary.json, the tables and the plots from OUT's results files")
    p.add_argument("--quick", action="store_true",
                   help="a smoke version on digits: 1 seed, ~10 s per method, small fine-tuning; a few minutes")
    add_device_and_threads(p, threads_help="CPU threads, for torch and numpy/scipy (default: one per core); pin it "
                           "(e.g. 1) when other work shares the machine, so the calibrated seconds per update hold for "
                           "the whole run")
    add_precision(p, compile_help="torch.compile the Transformer blocks of every arm's encoders (pretraining and "
                  "fine-tuning): the same math; the calibration includes the compiled step, so only worth it when the "
                  "budget is many minutes")
    add_image_arguments(p)
    from .compare_text import add_text_arguments

    add_text_arguments(p)
    from .compare_audio import add_audio_arguments

    add_audio_arguments(p)
    p.set_defaults(run=run)


def add_encoder_arguments(p) -> None:
    """The encoder every arm shares, and the batch."""
    p.add_argument("--preset", default="mini", choices=("tiny", "mini", "small", "base"),
                   help="the registry preset each method's recipe starts from (the encoder size is --dim/--depth)")
    p.add_argument("--dim", type=int, default=None,
                   help="encoder width shared by every arm (default: vision 128, text 256, the `mini` width)")
    p.add_argument("--depth", type=int, default=4, help="encoder blocks")
    p.add_argument("--heads", type=int, default=4, help="attention heads (must divide --dim)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="pretraining and fine-tuning batch (default 64; --modality audio 32)")


def budget_list(text: str) -> list[float]:
    """--budget-minutes: one number or a comma-separated list, each > 0 (else a one-line CliError)."""
    try:
        values = [float(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise CliError(f"--budget-minutes {text!r} is not a number or a comma-separated list; fix: e.g. "
                       "--budget-minutes 15 or 4,15,60") from None
    if not values or any(v <= 0 for v in values):
        raise CliError(f"--budget-minutes must be > 0, got {text}; fix: e.g. --budget-minutes 15 or 4,15,60")
    return values


def add_image_arguments(parser: argparse.ArgumentParser) -> None:
    """The image study's own flags (the shared ones: --data is the image data set, --methods, --budget-minutes,
    --seeds, --preset, --dim/--depth/--heads, --batch-size, --out, --runs, --quick, --device, --threads)."""
    g = parser.add_argument_group("images (--modality vision, the default)")
    g.add_argument("--patch-size", type=int, default=None, help="patch side in pixels (default 4; 2 under 16 px)")
    g.add_argument("--image-size", type=int, default=None, help="input side (default: the data's)")
    g.add_argument("--finetune-full", action="store_true",
                   help="also fine-tune on all labels (GPU work at CIFAR scale: hours on a CPU)")
    g.add_argument("--finetune-lr-grid", default=None,
                   help="comma-separated fine-tuning lrs, e.g. 1e-3,3e-3,1e-2: every fine-tuning protocol of every arm "
                   "runs once per lr and reports the lr chosen on the validation split (default: 1e-3 for every arm, "
                   "the studies' protocol). Costs len(grid) times the fine-tuning time; worth it when the arms differ "
                   "much (a random-init ViT wants a higher lr than a pretrained one: on 1 %% of MNIST, 27 %% at 1e-3 "
                   "and 60 %% at 3e-3 with the recipe's layer decay 0.75, 67 %% at 3e-3 without it, on validation)")


def run(args: argparse.Namespace) -> int:
    from ..study.curve import is_curve
    from ..study.pipeline import run_comparison
    from ..study.records import say
    from ..study.report import write_report

    budgets = budget_list(args.budget_minutes)
    args.budget_minutes = budgets[0]  # the one-budget configs read one
    curve = len(budgets) > 1 or bool(args.reuse) or is_curve(args.out)
    if args.report_only:
        if not Path(args.out).is_dir():
            raise CliError(f"--report-only: {args.out} does not exist; fix: pass the --out of a comparison")
        if is_curve(args.out):
            from ..study.curve_report import write_curve_report

            summary = write_curve_report(args.out)
            print(Path(args.out, "curve.txt").read_text())
            return 0 if summary["rows"] else 1
        summary = write_report(args.out)
        print(Path(args.out, "table.txt").read_text())
        return 0 if summary["rows"] else 1
    if args.batch_size is None:  # the modality's batch: 1 s speech clips cost more per example than 32 px images
        args.batch_size = 32 if args.modality == "audio" else 64
    if args.modality == "text":
        from .compare_text import text_study_config

        cfg = text_study_config(args)
    elif args.modality == "audio":
        from .compare_audio import audio_study_config

        cfg = audio_study_config(args)
    else:
        cfg = image_study_config(args)
    try:
        if curve:
            return run_curve_command(cfg, budgets, args.reuse)
        summary = run_comparison(cfg)
    except StudyInterrupted as error:  # saved what it had: the exit status of the signal
        raise Interrupted(str(error), error.signal_name) from None
    except StudyError as error:
        raise CliError(str(error)) from None
    print()
    print(Path(cfg.out, "table.txt").read_text())
    say(f"wrote {len(summary['rows'])} rows to {Path(cfg.out) / 'summary.json'}, table.md, table.txt and plots/")
    return 0


def run_curve_command(cfg, budgets: list[float], reuse: list[str]) -> int:
    """The budget curve (`data2vec.study.curve`): every point, then its table."""
    from ..study.curve import run_curve
    from ..study.pipeline import load_data, run_comparison
    from ..study.records import say

    for folder in reuse:
        if not Path(folder, "config.json").is_file():
            raise CliError(f"--reuse {folder}: not a comparison's --out (no config.json); fix: give a finished study")
    summary = run_curve(cfg, budgets, reuse, run_comparison, load_data)
    print()
    print(Path(cfg.out, "curve.txt").read_text())
    say(f"wrote {len(summary['rows'])} curves to {Path(cfg.out) / 'curve_summary.json'}, curve.md, curve.txt and "
        "plots/curve-*.png")
    return 0


def study_compute(args: argparse.Namespace, out: str, device: str) -> dict:
    """The study's `precision` and `compile` fields from the flags. --precision auto keeps the precision a study in
    `out` was started with (one precision per table; studies from before the flag are float32) and picks by the
    hardware for a new one (`data2vec.precision`)."""
    import json

    from ..precision import Precision

    stored = Path(out) / "curve.json" if Path(out, "curve.json").is_file() else Path(out) / "config.json"
    if args.precision == "auto" and not args.bf16 and stored.is_file():
        precision = Precision(json.loads(stored.read_text()).get("precision", "fp32"),
                              f"auto: the precision the study in {out} was started with")
        print(precision.describe(), flush=True)
    else:
        precision = resolve_precision(args, device)
    return {"precision": precision.name, "compile": args.compile}


def image_study_config(args: argparse.Namespace):
    """The flags checked and turned into the image study's CompareConfig (bad input is a one-line CliError)."""
    from ..methods import PRETRAINING_METHODS, get_method
    from ..study.vision_config import CompareConfig
    from .common import choose_device
    from .compare_sets import parse_recipe_sets

    if args.data is None and not args.quick:
        raise CliError("--data is required; fix: pass --data digits, a CIFAR-10/MNIST folder or an image folder, or "
                       "--quick for the digits smoke run")
    dim = args.dim or 128  # the image study's width
    listed = "data2vec,data2vec2,dino" if args.methods is None else args.methods  # the image study's arms
    methods = tuple(m.strip() for m in listed.split(",") if m.strip())
    for m in methods:
        try:
            spec = get_method(m)
        except ValueError as error:
            raise CliError(f"--methods: {error}") from None
        if m not in PRETRAINING_METHODS or "vision" not in spec.modalities:
            raise CliError(f"--methods: {m} is not an image pretraining method; fix: use some of data2vec, data2vec2, "
                           "dino (the floors random/pixels/supervised are always included)")
    if not methods:
        raise CliError("--methods is empty; fix: e.g. --methods data2vec,data2vec2,dino")
    sizes = dict(seeds=args.seeds, dim=dim, depth=args.depth, heads=args.heads, batch_size=args.batch_size)
    for flag, value in sizes.items():
        if value < 1:
            raise CliError(f"--{flag.replace('_', '-')} must be >= 1, got {value}; fix: pass 1 or more")
    if dim % args.heads:
        raise CliError(f"--heads {args.heads} does not divide --dim {dim}; fix: e.g. --dim 128 --heads 4")
    data = args.data or "digits"
    if data.lower() != "digits" and not Path(data).exists():
        raise CliError(f"--data {data}: no such file or folder; fix: give 'digits' or the path of an image data set")
    fractions = (0.01, 0.1) + ((1.0,) if args.finetune_full else ())
    try:
        lr_grid = tuple(float(x) for x in (args.finetune_lr_grid or "").split(",") if x.strip())
    except ValueError:
        raise CliError(f"--finetune-lr-grid {args.finetune_lr_grid!r}: not comma-separated numbers; fix: e.g. "
                       "--finetune-lr-grid 1e-3,3e-3,1e-2") from None
    if any(lr <= 0 for lr in lr_grid):
        raise CliError(f"--finetune-lr-grid {args.finetune_lr_grid!r}: every lr must be > 0; fix: e.g. "
                       "--finetune-lr-grid 1e-3,3e-3,1e-2")
    out = "runs/compare-quick" if args.quick and args.out == "runs/compare" else args.out  # never a real study's
    values = dict(data=data, out=out, runs=args.runs or str(Path(out) / "runs"), methods=methods,
                  budget_minutes=args.budget_minutes, seeds=tuple(range(1, args.seeds + 1)), preset=args.preset,
                  dim=dim, depth=args.depth, heads=args.heads, patch_size=args.patch_size,
                  image_size=args.image_size, batch_size=args.batch_size, finetune_fractions=fractions,
                  finetune_lr_grid=lr_grid, recipe_sets=parse_recipe_sets(args.recipe_sets, methods),
                  device=choose_device(args.device), threads=args.threads, quick=args.quick,
                  clock="cpu" if choose_device(args.device) == "cpu" else "wall",
                  command="data2vec " + " ".join(shlex.quote(a) for a in args.argv),
                  **study_compute(args, out, choose_device(args.device)))
    if args.quick:  # digits, one seed, seconds per method: checks the whole pipeline, numbers not meaningful
        values.update(data="digits", seeds=(1,), budget_minutes=min(args.budget_minutes, 0.15), dim=64, depth=4,
                      calibration_steps=3, finetune_epochs={0.01: 3, 0.1: 3, 1.0: 2}, finetune_min_updates=6,
                      frozen_fraction=0.1)
    return CompareConfig(**values)
