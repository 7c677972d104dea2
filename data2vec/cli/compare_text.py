"""The text study's flags of `data2vec compare` (--modality text) and their check: the corpus, GLUE, the encoder
and the fine-tuning recipe, turned into `data2vec.study.text_config.TextCompareConfig` (the study itself, its
protocols and their reasons are in `data2vec.study.text`, `glue` and `squad`).
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from ..study.text_config import GLUE_STUDY_TASKS, TASK_EPOCHS, TEXT_METHODS, TextCompareConfig
from .errors import CliError


def add_text_arguments(parser: argparse.ArgumentParser) -> None:
    """The text comparison's own flags, added to `data2vec compare` (the shared ones: --data is the corpus,
    --methods, --budget-minutes, --seeds, --preset, --dim/--depth/--heads, --batch-size, --out, --runs, --quick,
    --device, --threads)."""
    g = parser.add_argument_group(
        "text (--modality text)",
        "BERT-MLM, data2vec and data2vec 2.0 pretrained on --data (a text corpus) at an equal budget, fine-tuned on "
        "GLUE with one recipe per task; floors: random init and the majority class. Methods: bert, data2vec, "
        "data2vec2. The study uses --dim 256 --depth 4 --heads 4 (BERT-Mini, docs/design.md section 8) and at least 20 "
        "minutes per method. Choosing the budget: on one CPU core at --batch-size 64 and --seq-len 128 the study's "
        "calibration measured 3.3 s per update (bert), 4.1 s (data2vec) and 5.8 s (data2vec2 with the "
        "comparison's 2 masks and 2-block decoder; ~45 s with the released 8 masks and 5 blocks), so 20 minutes "
        "is 365 / 294 / 206 updates, 1.2 / 1.0 / 0.7 passes over the study corpus's 19k blocks of 128 tokens: "
        "far from BERT-Mini's billions of words, expect small gaps over random init")
    g.add_argument("--glue", default=None,
                   help="the GLUE root (SST-2/, STS-B/, MRPC/, RTE/, CoLA/ with train.tsv and dev.tsv); --quick "
                   "without it writes a tiny synthetic SST-2/STS-B folder")
    g.add_argument("--tasks", default=",".join(GLUE_STUDY_TASKS),
                   help="comma-separated GLUE tasks to fine-tune; SST-2 and STS-B carry the signal at 4 x 256, "
                   "MRPC/RTE/CoLA are reported beside their majority class")
    g.add_argument("--tokenizer", default=None,
                   help="a tokenizer.json (or folder) shared by every arm; default: a byte-level BPE of "
                   "--vocab-size trained once on --data and kept in RUNS/text-data/tokenizer")
    g.add_argument("--vocab-size", type=int, default=8192, help="BPE vocabulary trained on --data (about 8k)")
    g.add_argument("--seq-len", type=int, default=128, help="tokens per pretraining block (at most 256 for mini)")
    g.add_argument("--sst2-train-examples", type=int, default=20000,
                   help="seeded SST-2 training subset (the same for every arm); 0 = all 67,349 (3x the time)")
    g.add_argument("--task-epochs", default=None,
                   help="fine-tuning epochs per task, e.g. sst2=3,stsb=10 (default: sst2 3, stsb 5, mrpc/rte/cola 3; "
                   "at 4 x 256 on one CPU core that is ~50 min of fine-tuning per arm and seed, a third of it SST-2)")
    g.add_argument("--finetune-lr", type=float, default=1e-4,
                   help="peak fine-tuning lr of every arm (small encoders want 1e-4 to 3e-4, not RoBERTa's 2e-5)")
    g.add_argument("--heldout", default=None,
                   help="held-out text (e.g. the corpus builder's heldout.txt) for the bert arm's masked-token "
                   "accuracy; without it that protocol is skipped")
    from .compare_squad import add_squad_arguments

    add_squad_arguments(parser)


def parse_epochs(text: str | None) -> dict:
    epochs = dict(TASK_EPOCHS)
    for item in (text or "").split(","):
        if not item.strip():
            continue
        task, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit() or int(value) < 1:
            raise CliError(f"--task-epochs {item!r} is not TASK=N with N >= 1; fix: e.g. --task-epochs sst2=3,stsb=10")
        epochs[task.strip().lower()] = int(value)
    return epochs


def text_study_config(args: argparse.Namespace) -> TextCompareConfig:
    """The flags checked and turned into a TextCompareConfig (bad input is a one-line CliError)."""
    from tasks.text.glue import get_task

    from ..study.data import PYTHON_DOCS
    from ..study.glue import write_synthetic_glue
    from ..study.records import say
    from .common import choose_device
    from .compare import study_compute
    from .compare_sets import parse_recipe_sets
    from .compare_squad import squad_values

    dim = args.dim or 256  # the `mini` text width
    listed = ",".join(TEXT_METHODS) if args.methods is None else args.methods  # the text study's arms
    methods = tuple(m.strip() for m in listed.split(",") if m.strip())
    for m in methods:
        if m not in TEXT_METHODS:
            raise CliError(f"--methods: {m} is not a text pretraining method; fix: use some of "
                           f"{', '.join(TEXT_METHODS)} (the floors random/majority are always included)")
    if not methods:
        raise CliError("--methods is empty; fix: e.g. --methods bert,data2vec,data2vec2")
    try:
        tasks = tuple(get_task(t.strip()).name for t in args.tasks.split(",") if t.strip())
    except ValueError as error:
        raise CliError(f"--tasks: {error}") from None
    if not tasks:
        raise CliError("--tasks is empty; fix: e.g. --tasks sst2,stsb")
    sizes = dict(seeds=args.seeds, dim=dim, depth=args.depth, heads=args.heads, batch_size=args.batch_size,
                 seq_len=args.seq_len, vocab_size=args.vocab_size)
    for flag, value in sizes.items():
        if value < 1:
            raise CliError(f"--{flag.replace('_', '-')} must be >= 1, got {value}; fix: pass 1 or more")
    if dim % args.heads:
        raise CliError(f"--heads {args.heads} does not divide --dim {dim}; fix: e.g. --dim 256 --heads 4")
    if args.finetune_lr <= 0:
        raise CliError(f"--finetune-lr must be > 0, got {args.finetune_lr}; fix: e.g. 1e-4")
    if args.sst2_train_examples < 0:
        raise CliError(f"--sst2-train-examples must be >= 0 (0 = all), got {args.sst2_train_examples}; fix: pass 0 "
                       "or a number of examples")
    if args.heldout and not Path(args.heldout).is_file():
        raise CliError(f"--heldout {args.heldout}: no such file; fix: give a text file held out of the corpus")
    runs = args.runs or str(Path(args.out) / "runs")
    data, glue, heldout = args.data, args.glue, args.heldout
    if args.quick:
        data = data or PYTHON_DOCS
        if glue is None:
            glue = str(write_synthetic_glue(Path(runs) / "synthetic-glue"))
            say(f"--quick: no --glue given, so SST-2 and STS-B are a tiny SYNTHETIC folder ({glue}); the numbers "
                "only show that the pipeline runs")
            tasks = tuple(t for t in tasks if t in ("sst2", "stsb")) or ("sst2", "stsb")
            heldout = heldout or str(Path(glue) / "heldout.txt")
    if data is None:
        raise CliError("--modality text needs --data; fix: pass the pretraining corpus (a .txt file, a folder of them "
                       "or python-docs), or --quick")
    if glue is None:
        raise CliError("--modality text needs --glue; fix: pass the GLUE root (with SST-2/, STS-B/, ...), or --quick")
    if str(data) != PYTHON_DOCS and not Path(data).exists():
        raise CliError(f"--data {data}: no such file or folder; fix: give a text corpus (.txt file or folder)")
    values = dict(data=str(data), glue=str(glue), out=args.out, runs=runs, methods=methods, tasks=tasks,
                  budget_minutes=args.budget_minutes, seeds=tuple(range(1, args.seeds + 1)), preset=args.preset,
                  dim=dim, depth=args.depth, heads=args.heads, batch_size=args.batch_size, seq_len=args.seq_len,
                  vocab_size=args.vocab_size, tokenizer=args.tokenizer, heldout=heldout,
                  sst2_train_examples=args.sst2_train_examples or None, task_epochs=parse_epochs(args.task_epochs),
                  finetune_lr=args.finetune_lr, device=choose_device(args.device), threads=args.threads,
                  clock="cpu" if choose_device(args.device) == "cpu" else "wall",
                  quick=args.quick, command="data2vec " + " ".join(shlex.quote(a) for a in args.argv),
                  recipe_sets=parse_recipe_sets(getattr(args, "recipe_sets", []), methods),
                  **study_compute(args, args.out, choose_device(args.device)),
                  **squad_values(args, ("random",) + methods))
    if args.quick:  # seconds per method on a tiny encoder: checks the whole pipeline, numbers not meaningful
        values.update(seeds=(1,), budget_minutes=min(args.budget_minutes, 0.1), dim=64, depth=2, heads=2,
                      batch_size=16, seq_len=64, vocab_size=min(args.vocab_size, 2000), calibration_steps=3,
                      task_epochs={t: 2 for t in GLUE_STUDY_TASKS}, sst2_train_examples=2000, heldout_max_blocks=64,
                      squad_epochs=1, squad_max_length=128, squad_eval_max_questions=100,
                      squad_max_questions=min(args.squad_max_questions or 200, 200))
    return TextCompareConfig(**values)
