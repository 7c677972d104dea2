"""`data2vec finetune`: fine-tune a backbone on GLUE, SQuAD/XQuAD, an image classification data set, or speech
(keyword spotting, CTC character recognition: `finetune_audio.py`).

Where the backbone comes from (`--init`):
- a HuggingFace-format folder (`config.json` with "model_type", e.g. facebook/data2vec-text-base saved
  with `save_pretrained`): imported by `data2vec.hub.load_pretrained`, tokenizer from the same folder;
- one of our pretraining run folders (`<out>` of `data2vec pretrain`, holding `checkpoint/`) or a
  checkpoint folder itself: the method's student backbone (`backbone.*` weights), tokenizer from the run;
  a fine-tuned checkpoint (`<out>/best` of this command) also restores its task head when it fits;
- nothing: a randomly initialised encoder of `--preset` (a "from scratch" baseline).

Outputs in `--out`: `eval.jsonl` (one line per epoch), `metrics.json` (best and final metrics, config),
`best/` (the best epoch's weights, loadable again with `--init`), `checkpoint/` (the last evaluated epoch's
full state, for `--resume`), `tokenizer/` (text tasks).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import OVERWRITE_HELP, CliError, HelpFormatter
from .finetune_setup import (
    AUDIO_TASKS,
    TASKS,
    evaluate_only,
    finetune_config,
    finetune_with_selection,
    maybe_load_head,
    report_finetune,
    squad_files,
    text_backbone,
)
from .flags import add_device_and_threads, add_precision, apply_threads, resolve_precision

# ---- argument parsing ----------------------------------------------------------------------------------


def add_parser(sub) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune on GLUE, SQuAD/XQuAD, images or speech (evaluation each epoch, best checkpoint kept)",
        description="Fine-tune a pretrained (or random) backbone with a task head; evaluates after every epoch, "
        "keeps the best epoch in <out>/best and writes <out>/metrics.json and <out>/eval.jsonl. Ctrl-C or SIGTERM "
        "stops it with exit status 130 / 143 (0 = finished, 2 = bad input), keeping the last evaluated epoch in "
        "<out>/checkpoint: the same command with --resume continues (the run folder may have been moved).",
        formatter_class=HelpFormatter,
    )
    _add_task_flags(p)
    _add_recipe_flags(p)
    _add_input_flags(p)
    _add_run_flags(p)
    p.set_defaults(run=run)


def _add_task_flags(p) -> None:
    """The task, its data, and the starting weights."""
    p.add_argument("--task", required=True, choices=TASKS,
                   help="GLUE task (cola sst2 mrpc stsb qqp mnli qnli rte wnli: trains on train.tsv, evaluates on "
                   "dev.tsv), squad (SQuAD v1.1 JSON), xquad (evaluate a SQuAD model on an XQuAD language file), "
                   "image (classification on an image data set), keywords (speech keyword classification) or ctc "
                   "(speech to characters with CTC; CER selects the epoch, WER beside it)")
    p.add_argument("--data", required=True,
                   help="GLUE: the GLUE root or the task folder; squad/xquad: a SQuAD-format JSON file or a folder "
                   "with train-v1.1.json (+ dev-v1.1.json); image: 'digits', a CIFAR-10/MNIST folder, an "
                   "ImageFolder (<class>/<image>) or <split>/<class>/<image>; keywords: a keyword folder (Speech "
                   "Commands layout or <split>/<word>/) or a corpus built by python -m tasks.audio.corpus; ctc: a "
                   "LibriSpeech folder (train-*, dev-clean, test-clean), transcribed split folders or such a corpus")
    p.add_argument("--eval-data", default=None,
                   help="squad/xquad: the evaluation JSON (or the XQuAD folder with --language). Without it, "
                   "squad holds out 10%% of the --data articles for evaluation")
    p.add_argument("--language", default=None,
                   help="xquad: language code (en de es el ru tr ar vi th zh hi ro) picking xquad.<lang>.json "
                   "from the --eval-data (or --data) folder")
    p.add_argument("--eval-only", action="store_true",
                   help="skip training: evaluate --init (e.g. a fine-tuned <out>/best folder) on the evaluation data; "
                   "the way to test a SQuAD model zero-shot on XQuAD")
    p.add_argument("--init", default=None,
                   help="starting weights: a HuggingFace-format folder (speech: data2vec-audio, e.g. written by "
                   "data2vec convert --family data2vec-audio), a `data2vec pretrain` run folder (or its "
                   "checkpoint/), a fine-tuned <out>/best folder, or nothing for a random init of --preset")
    p.add_argument("--preset", default="mini",
                   help="encoder size when --init is not given: tiny (tests), mini (CPU minutes), small (one GPU), "
                   "base (the paper's 12 x 768)")
    p.add_argument("--tokenizer", default=None,
                   help="text tasks: tokenizer.json or a folder with tokenizer files; defaults to the one next to "
                   "--init. A random-init model needs one")


def _add_recipe_flags(p) -> None:
    """The optimisation recipe; each default is the task's published one (FinetuneConfig)."""
    p.add_argument("--epochs", type=int, default=None,
                   help="passes over the training data (default: 10 for GLUE, as RoBERTa; 2 for SQuAD; 10 images). "
                   "Small data sets (RTE, MRPC, STS-B, CoLA) benefit from the full 10")
    p.add_argument("--batch-size", type=int, default=None,
                   help="examples per update (default: 32 text, 64 images). If you change it, scale --lr "
                   "linearly for images (BEiT: 4e-3 at 1024)")
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate (default: 2e-5 for pretrained text models, 1e-4 for random-init text, "
                   "3e-5 SQuAD, 2.5e-4 images at batch 64). Too high shows as a loss that jumps or goes NaN; "
                   "RoBERTa's GLUE sweep is {1e-5, 2e-5, 3e-5}. The image default is BEiT's ViT-B rate for 100 "
                   "ImageNet epochs: small models and short runs want about 10x more (docs/usage.md)")
    p.add_argument("--layer-decay", type=float, default=None,
                   help="layer-wise lr decay: a block l of L gets lr * decay^(L+1-l), the head the full lr "
                   "(default: 0.65 for images as data2vec-vision ViT-B, none for text). Use 0.75 for shallower "
                   "models; 1.0 = off")
    p.add_argument("--weight-decay", type=float, default=None,
                   help="AdamW weight decay, not applied to biases and norms "
                   "(default: 0.1 text as RoBERTa, 0.05 images)")
    p.add_argument("--warmup-ratio", type=float, default=None,
                   help="fraction of updates for linear warm-up (default: 0.06 text as RoBERTa, 0.2 images)")
    p.add_argument("--label-smoothing", type=float, default=None,
                   help="classification label smoothing (default: 0.1 images, 0 GLUE)")


def _add_input_flags(p) -> None:
    """How examples are cut (text) or sized (images), and the image head's pooling."""
    p.add_argument("--max-length", type=int, default=None,
                   help="max tokens per example (default: 128 GLUE, 384 SQuAD); must fit the encoder's positions")
    p.add_argument("--doc-stride", type=int, default=128,
                   help="SQuAD: tokens between the starts of consecutive context windows (BERT: 128)")
    p.add_argument("--image-size", type=int, default=None,
                   help="images: input resolution (default: the encoder's image_size; digits: 8)")
    p.add_argument("--pooling", choices=("mean", "cls"), default="mean",
                   help="images: mean of patch tokens + LayerNorm (BEiT/data2vec-vision) or the CLS token (ViT/DINO)")


def _add_run_flags(p) -> None:
    """Model selection, subsets for quick runs, the seed, the run folder, resume, device."""
    p.add_argument("--val-fraction", type=float, default=None,
                   help="GLUE and images: hold out this fraction of the TRAINING examples (seeded) as a validation "
                   "split that picks the epoch, and score the evaluation split (GLUE dev, the image test split) once "
                   "with the selected weights and once with the last ones. Without it the best epoch is picked on "
                   "the very split it is reported on: an optimistic number, most of all for small dev sets (RTE, "
                   "MRPC) and few-label runs. 0.1 is a good default. Speech (keywords, ctc): the layout's own "
                   "validation split selects the epoch and the test split is scored once; a layout without one "
                   "gets this fraction of the training data (default 0.1)")
    p.add_argument("--max-train-examples", type=int, default=None,
                   help="use only this many training examples (a seeded random subset): for quick runs")
    p.add_argument("--max-eval-examples", type=int, default=None,
                   help="evaluate on only this many examples (a seeded random subset): for quick runs")
    p.add_argument("--seed", type=int, default=1, help="random seed (data order, head init, dropout)")
    p.add_argument("--out", default=None,
                   help="output folder (default: runs/finetune-<task>); one that holds a result is refused unless "
                   "--resume or --overwrite")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last evaluated epoch (<out>/checkpoint/, written after "
                   "every evaluation): rerun the interrupted command with --resume and it ends with the weights and "
                   "scores an uninterrupted run would have. The options must be the same (--device may change); "
                   "without a checkpoint the run starts from epoch 1")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    add_device_and_threads(p)
    add_precision(p, compile_help="torch.compile the model's Transformer blocks: the same math, fused element-wise "
                  "kernels; the first epoch pays the compilation (tens of seconds on a CPU), so it pays in long runs")
    p.add_argument("--quiet", action="store_true", help="print only the final result")


# ---- the command ---------------------------------------------------------------------------------------


def _check_flags(args) -> None:
    """Refuse bad flags before any work; the recipe's flags are checked by `FinetuneConfig.validate`."""
    from .common import choose_device, positive  # imports torch: kept out of `data2vec --help`

    args.device = choose_device(args.device)
    apply_threads(args.threads)
    args.resolved_precision = resolve_precision(args, args.device, quiet=args.quiet)
    if args.val_fraction is not None and not 0 < args.val_fraction < 1:
        raise CliError(f"--val-fraction must lie in (0, 1), got {args.val_fraction}; fix: e.g. 0.1")
    if args.val_fraction is not None and args.task in ("squad", "xquad"):
        raise CliError("--val-fraction is for GLUE and image tasks; fix: leave it out (squad holds out articles)")
    for name in ("max_length", "max_train_examples", "max_eval_examples", "image_size"):
        positive(f"--{name.replace('_', '-')}", getattr(args, name, None))
    finetune_config(args, "classification", "score")  # the recipe flags over FinetuneConfig's defaults


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import set_seed
    from .common import prepare_run_dir, removed_on_failure

    _check_flags(args)
    args.out = args.out or f"runs/finetune-{args.task}"
    try:
        with removed_on_failure(args.out, "finetune"):  # a launch that fails before training leaves no folder
            prepare_run_dir(args.out, "finetune", resume=args.resume, overwrite=args.overwrite, can_resume=True)
            set_seed(args.seed)  # before any model is built: the new task head's initial weights come from --seed
            if args.task == "image":
                return _run_image(args)
            if args.task in AUDIO_TASKS:
                from .finetune_audio import run_audio

                return run_audio(args)
            if args.task in ("squad", "xquad"):
                return _run_squad(args)
            return _run_glue(args)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (cli.main exits 130 / 143): say what was kept
        _say_how_to_continue(args)
        raise


def _say_how_to_continue(args) -> None:
    """After a signal: where the last evaluated epoch's state is, and the command that continues from it."""
    from ..finetune import CHECKPOINT

    ckpt = Path(args.out or ".") / CHECKPOINT
    if args.out and not args.eval_only and (ckpt.is_dir() or ckpt.with_name(f"{CHECKPOINT}.old").is_dir()):
        print(f"finetune: stopped; {ckpt} holds the last evaluated epoch: continue with the same command and "
              "--resume", file=sys.stderr, flush=True)


def _run_glue(args) -> int:
    from tasks.text import glue
    from tasks.text.glue_metrics import glue_metrics

    from ..heads import SequenceClassificationHead, TaskModel
    from ..study.data import seeded_subset

    args.max_length = args.max_length or 128
    spec = glue.get_task(args.task)
    eval_split = "dev_matched" if spec.name == "mnli" else "dev"
    train_examples = [] if args.eval_only else glue.load_glue(spec.name, "train", args.data)
    eval_examples = glue.load_glue(spec.name, eval_split, args.data)
    init, tokenizer = text_backbone(args)
    head = SequenceClassificationHead(init.encoder_config.dim, spec.num_labels, style=tokenizer.style)
    model = TaskModel(init.backbone, head)
    maybe_load_head(model, init)
    train_set = seeded_subset(glue.GlueDataset(train_examples, tokenizer, args.max_length),
                              args.max_train_examples, args.seed)
    eval_set = seeded_subset(glue.GlueDataset(eval_examples, tokenizer, args.max_length),
                             args.max_eval_examples, args.seed)
    collate = glue.GlueCollator(tokenizer.pad_id, regression=spec.is_regression)
    task_type = "regression" if spec.is_regression else "classification"

    def metric_fn(outputs, labels):
        preds = outputs if spec.is_regression else outputs.argmax(-1)
        return glue_metrics(spec.name, preds, labels)

    pretrained = args.init is not None
    cfg = finetune_config(args, task_type, "score", lr=2e-5 if pretrained else 1e-4)
    info = {"task": spec.name, "init": init.source, "encoder": init.encoder_config.to_dict(),
            "tokenizer": str(args.tokenizer or init.tokenizer_dir)}
    if args.eval_only:
        return evaluate_only(args, model, eval_set, collate, metric_fn, cfg, info)
    summary = finetune_with_selection(args, model, train_set, eval_set, cfg, metric_fn, collate_fn=collate,
                                       run_info=info)
    return report_finetune(args, summary)


# ---- SQuAD / XQuAD -------------------------------------------------------------------------------------


def _run_squad(args) -> int:
    from tasks.text import squad

    from ..finetune import finetune
    from ..heads import QuestionAnsweringHead, TaskModel

    args.max_length = args.max_length or 384
    train_articles, eval_articles, eval_name = squad_files(args)
    train_articles = squad.limit_questions(train_articles, args.max_train_examples, args.seed)
    eval_articles = squad.limit_questions(eval_articles, args.max_eval_examples, args.seed)
    init, tokenizer = text_backbone(args)
    model = TaskModel(init.backbone, QuestionAnsweringHead(init.encoder_config.dim))
    maybe_load_head(model, init)
    stride = min(args.doc_stride, max(1, args.max_length // 2))
    try:
        train_feats = squad.prepare_features({"data": train_articles}, tokenizer, args.max_length, stride) \
            if train_articles else []
        eval_examples = squad.read_examples({"data": eval_articles})
        eval_feats = squad.prepare_features(eval_examples, tokenizer, args.max_length, stride)
    except ValueError as error:
        raise CliError(f"{error}; fix: raise --max-length") from None
    collate = squad.SquadCollator(tokenizer.pad_id)

    def metric_fn(outputs, _labels):
        answers = squad.postprocess_predictions(eval_examples, eval_feats, [s for s, _ in outputs],
                                                [e for _, e in outputs])
        return squad.squad_scores({"data": eval_articles}, answers)

    pretrained = args.init is not None
    # BERT SQuAD v1.1: lr 5e-5, batch 32, 2-3 epochs; RoBERTa: 1.5e-5, batch 48, 2 epochs, 6% warm-up
    cfg = finetune_config(args, "span", "f1", epochs=2, lr=3e-5 if pretrained else 1e-4)
    # eval_examples / train_examples count context windows (features); the questions scored are counted here
    info = {"task": args.task, "init": init.source, "eval_data": eval_name, "encoder": init.encoder_config.to_dict(),
            "eval_questions": squad.count_questions(eval_articles),
            "train_questions": squad.count_questions(train_articles)}
    if args.eval_only:
        return evaluate_only(args, model, eval_feats, collate, metric_fn, cfg, info)
    summary = finetune(model, train_feats, eval_feats, cfg, args.out, metric_fn, collate_fn=collate, run_info=info,
                       quiet=args.quiet, resume=args.resume, split_names=(Path(eval_name).name,) * 2)
    return report_finetune(args, summary)


# ---- images --------------------------------------------------------------------------------------------


def _run_image(args) -> int:
    from tasks.vision import image_collate

    from ..finetune_config import FinetuneConfig
    from ..heads import ImageClassificationHead, TaskModel
    from ..study.data import image_splits, seeded_subset
    from .common import check_channels, vision_init

    init, size = vision_init(args.data, args.init, args.preset, args.image_size, args.seed)
    cfg_enc = init.encoder_config
    train_set, eval_set, num_classes, in_chans = image_splits(args.data, size, args.seed)
    check_channels(in_chans, cfg_enc.in_chans)
    head = ImageClassificationHead(cfg_enc.dim, num_classes, pooling=args.pooling)
    model = TaskModel(init.backbone, head)
    maybe_load_head(model, init)
    train_set = seeded_subset(train_set, args.max_train_examples, args.seed)
    eval_set = seeded_subset(eval_set, args.max_eval_examples, args.seed)

    def metric_fn(outputs, labels):
        return {"accuracy": 100.0 * float((outputs.argmax(-1) == labels).mean())}

    defaults = {k: v for k, v in vars(FinetuneConfig.vision_defaults()).items()
                if k not in ("seed", "device", "task_type", "main_metric")}
    if args.init is None:
        defaults["layer_decay"] = None  # nothing pretrained to protect in the lower layers
        defaults["lr"] = 1e-3
    cfg = finetune_config(args, "classification", "accuracy", **defaults)
    info = {"task": "image", "data": str(args.data), "init": init.source, "encoder": cfg_enc.to_dict(),
            "num_classes": num_classes}
    if args.eval_only:
        return evaluate_only(args, model, eval_set, image_collate, metric_fn, cfg, info)
    summary = finetune_with_selection(args, model, train_set, eval_set, cfg, metric_fn, collate_fn=image_collate,
                                       run_info=info)
    return report_finetune(args, summary)
