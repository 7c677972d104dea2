"""What every task of `data2vec finetune` shares: the encoder and tokenizer of `--init`, the `FinetuneConfig`
from the flags, the validation split of `--val-fraction`, evaluation without training (`--eval-only`), the
SQuAD / XQuAD files, and the closing summary lines.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import CliError, config_refusal

GLUE_TASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")  # every GLUE task, WNLI too
TASKS = GLUE_TASKS + ("squad", "xquad", "image", "keywords", "ctc")
AUDIO_TASKS = ("keywords", "ctc")


def split_validation(train_set, fraction: float | None, seed: int):
    """(train part, validation part or None): a seeded random `fraction` of the training examples held out."""
    import torch
    from torch.utils.data import Subset

    if fraction is None:
        return train_set, None
    order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed + 7919)).tolist()
    n_val = int(round(fraction * len(order)))
    if n_val < 1 or n_val >= len(order):
        raise CliError(f"--val-fraction {fraction} leaves {n_val} of {len(order)} training examples for validation; "
                       "fix: use a fraction that keeps at least one example on each side (e.g. 0.1)")
    return Subset(train_set, sorted(order[n_val:])), Subset(train_set, sorted(order[:n_val]))


def finetune_with_selection(args, model, train_set, eval_set, cfg, metric_fn, **kwargs) -> dict:
    """finetune(); with --val-fraction the epoch is chosen on a validation split of the training data and the
    evaluation split is scored once (summary["test"])."""
    from ..finetune import finetune

    train_part, val_part = split_validation(train_set, args.val_fraction, args.seed)
    scored = "GLUE dev" if args.task in GLUE_TASKS else "test"  # the split the task is reported on
    if val_part is None:
        return finetune(model, train_set, eval_set, cfg, args.out, metric_fn, quiet=args.quiet, resume=args.resume,
                        split_names=(scored, scored), **kwargs)
    return finetune(model, train_part, val_part, cfg, args.out, metric_fn, quiet=args.quiet, test_set=eval_set,
                    resume=args.resume, split_names=("validation", scored), **kwargs)


def _shown(metrics: dict) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()
                     if k not in ("epoch", "step", "train_loss", "elapsed_s") and isinstance(v, (int, float)))


def report_finetune(args, summary: dict) -> int:
    out = Path(args.out)
    best = summary.get("best") or {}
    main = summary.get("main_metric")
    test = summary.get("test")
    if test:
        scored = "GLUE dev" if args.task in GLUE_TASKS else "test"
        print(f"finetune {args.task}: {scored} at the epoch chosen on validation "
              f"({test['selected']['epoch']}): {_shown(test['selected'])}; at the last epoch: {_shown(test['last'])}")
    else:
        print(f"finetune {args.task}: best epoch {best.get('epoch')} ({main}): {_shown(best)} (picked on the split it "
              f"is measured on: optimistic; --val-fraction 0.1 picks it on held-out training data); last epoch: "
              f"{_shown(summary.get('final') or {})}")
    best_note = f", {out / 'best'}" if (out / "best").exists() else ""
    print(f"wrote {out / 'metrics.json'}, {out / 'eval.jsonl'}" + best_note)
    return 0


def text_backbone(args, default_preset_overrides: dict | None = None):
    """Init + tokenizer for text tasks; a random init takes the vocabulary size from the tokenizer."""
    from .common import load_init, load_text_tokenizer

    if args.init is None:
        tokenizer = load_text_tokenizer(args.tokenizer, None)
        style_overrides = {"vocab_size": tokenizer.vocab_size, "pad_id": tokenizer.pad_id}
        if tokenizer.style == "bert":
            style_overrides.update(position_offset=0, type_vocab_size=2)
        init = load_init(None, "text", args.preset, style_overrides)
    else:
        init = load_init(args.init, "text", args.preset)
        tokenizer = load_text_tokenizer(args.tokenizer, init.tokenizer_dir)
        if tokenizer.vocab_size > init.encoder_config.vocab_size:
            raise CliError(f"the tokenizer has {tokenizer.vocab_size} tokens but the encoder only "
                           f"{init.encoder_config.vocab_size}; fix: use the tokenizer the model was pretrained with")
    cfg = init.encoder_config
    limit = cfg.max_positions - cfg.position_offset
    if args.max_length > limit:
        raise CliError(f"--max-length {args.max_length} exceeds the encoder's {limit} positions; fix: use "
                       f"--max-length {limit} or less")
    tokenizer.save(Path(args.out) / "tokenizer")  # so that <out>/best works as --init on its own
    return init, tokenizer


def finetune_config(args, task_type: str, main_metric: str, **defaults):
    """The run's `FinetuneConfig`: the task's `defaults`, then every recipe flag the user gave (--layer-decay 1
    = off); a value the config refuses is the one-line refusal naming the flag."""
    from ..finetune_config import FinetuneConfig

    precision = getattr(args, "resolved_precision", None)  # flags.resolve_precision, set by the command
    values = dict(task_type=task_type, main_metric=main_metric, seed=args.seed, device=args.device,
                  bf16=bool(precision and precision.bf16), compile=bool(getattr(args, "compile", False)))
    values.update(defaults)
    for name in ("epochs", "batch_size", "lr", "layer_decay", "weight_decay", "warmup_ratio", "label_smoothing"):
        value = getattr(args, name, None)
        if value is not None:
            values[name] = value
    if values.get("layer_decay") == 1.0:
        values["layer_decay"] = None
    try:
        return FinetuneConfig(**values)
    except ValueError as error:  # "FinetuneConfig.field: problem; fix: what to do"
        raise config_refusal(error, "FinetuneConfig") from None


def maybe_load_head(model, init) -> None:
    """Restore a fine-tuned head (from a <out>/best checkpoint) when its tensors fit the new head exactly."""
    if not init.head_state:
        return
    own = model.head.state_dict()
    if set(own) == set(init.head_state) and all(own[k].shape == init.head_state[k].shape for k in own):
        model.head.load_state_dict(init.head_state)
        print(f"restored the task head from {init.source}")


def evaluate_only(args, model, eval_set, collate, metric_fn, cfg, info) -> int:
    from torch.utils.data import DataLoader

    from ..finetune import predict

    if args.init is None:
        raise CliError("--eval-only needs --init (a fine-tuned <out>/best folder); "
                       "fix: fine-tune first or drop --eval-only")
    loader = DataLoader(eval_set, batch_size=cfg.eval_batch_size or 2 * cfg.batch_size, collate_fn=collate)
    outputs, labels = predict(model.to(cfg.device), loader, cfg.task_type, cfg.device)
    metrics = metric_fn(outputs, labels)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"main_metric": cfg.main_metric, "eval_only": True, "final": metrics, "best": metrics,
               "eval_examples": len(eval_set), **info}
    (out / "metrics.json").write_text(json.dumps(summary, indent=2, default=str))
    shown = ", ".join(f"{k} {v:.2f}" for k, v in metrics.items())
    print(f"evaluate {args.task}: {shown}")
    print(f"wrote {out / 'metrics.json'}")
    return 0


def squad_files(args):
    """(train articles, eval articles, eval description) from --data / --eval-data / --language."""
    import random

    from tasks.text.squad import load_squad

    def resolve(path: Path, role: str, names: tuple[str, ...]) -> Path:
        if path.is_file():
            return path
        if not path.exists():
            raise CliError(f"{role} {path}: no such file or folder; fix: give a SQuAD-format JSON file or its folder")
        for name in names:
            if (path / name).is_file():
                return path / name
        raise CliError(f"{role} {path}: none of {', '.join(names)} in this folder; fix: point it at the JSON file")

    data = Path(args.data)
    eval_path = None
    if args.language:
        folder = Path(args.eval_data) if args.eval_data else data
        folder = folder if folder.is_dir() else folder.parent
        eval_path = resolve(folder, "--language", (f"xquad.{args.language}.json",))
    elif args.eval_data:
        eval_path = resolve(Path(args.eval_data), "--eval-data", ("dev-v1.1.json",))
    elif args.task == "xquad":
        raise CliError("--task xquad needs the XQuAD file: pass --eval-data xquad.<lang>.json or --language <code> "
                       "with --data/--eval-data pointing at the XQuAD folder; fix: add one of them")
    if args.eval_only:
        target = eval_path or resolve(data, "--data", ("dev-v1.1.json",))
        return [], load_squad(target)["data"], str(target)
    train_path = resolve(data, "--data", ("train-v1.1.json", "dev-v1.1.json"))
    train_articles = load_squad(train_path)["data"]
    if eval_path is not None:
        return train_articles, load_squad(eval_path)["data"], str(eval_path)
    # no separate evaluation file: hold out 10% of the articles (whole articles, so no context leaks)
    if len(train_articles) < 2:
        raise CliError(f"--data {train_path} has a single article, too few to hold some out; fix: pass --eval-data")
    order = list(range(len(train_articles)))
    random.Random(args.seed).shuffle(order)
    n_eval = max(1, len(order) // 10)
    held = set(order[:n_eval])
    return ([a for i, a in enumerate(train_articles) if i not in held],
            [a for i, a in enumerate(train_articles) if i in held], f"{train_path} (held-out articles)")
