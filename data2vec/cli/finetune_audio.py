"""`data2vec finetune --task keywords | ctc`: speech fine-tuning (data2vec paper section 4.3 / 5.2; the released
data2vec-audio fine-tuning configs and HF's `Data2VecAudioForSequenceClassification` / `ForCTC`).

- keywords: classification of a keyword folder (Speech Commands layout, split folders or a built corpus): the
  frames of the backbone, projected and averaged over the real frames (`heads.AudioClassificationHead`),
  cross-entropy; accuracy selects the epoch.
- ctc: character recognition (LibriSpeech layout, split folders or a built corpus): a linear layer over the
  characters of `CharVocab.librispeech()` on every frame (`heads.CTCHead`), the CTC loss of `tasks/audio/ctc.py`
  (summed per utterance, averaged over the batch: fairseq's `sentence_avg`), greedy decoding; CER (%) selects
  the epoch, WER (%) is reported beside it.
The validation split selects the epoch and the test split is scored once at the end (with the selected and with
the last weights). A layout without a validation split gets one carved from the training data (--val-fraction,
default 0.1), as the image task does. `--init` takes a `data2vec pretrain` run folder, a fine-tuned <out>/best, or
a HuggingFace data2vec-audio folder (`data2vec convert --family data2vec-audio`); the CTC head of a `ForCTC`
checkpoint is kept when it has the 32 LibriSpeech characters.

Differences from the released recipes: no tri-stage schedule (warm-up then cosine decay), no freezing of the
Transformer for the first updates (`freeze_finetune_updates`), no SpecAugment-style masking during fine-tuning
(`mask_prob` 0.65 in fairseq's CTC fine-tuning), no language model in decoding. As released, the convolutional
feature encoder is frozen when the encoder is pretrained (`feature_grad_mult: 0.0`); a random encoder trains it.
"""

from __future__ import annotations

from pathlib import Path

from .errors import CliError

# fairseq's data2vec-audio fine-tuning: Adam (0.9, 0.98), eps 1e-8, no weight decay; lr 3e-5 at 100 h and 3.2M
# samples per batch. Reduced scale: a few hundred utterances, a few thousand updates at most, so larger rates.
AUDIO_RECIPE = dict(epochs=10, batch_size=16, min_lr=0.0, weight_decay=0.0, betas=(0.9, 0.98), eps=1e-8,
                    warmup_ratio=0.1, schedule="cosine", clip_grad=None)
LR = {"keywords": (2e-4, 1e-3), "ctc": (5e-4, 1e-3)}  # (pretrained, random init)


def audio_splits(args, task: str) -> tuple:
    """(train, validation or None, test or None) of --data for `task`, with a missing layout as one line."""
    from tasks.audio import audio_datasets

    if not Path(args.data).exists():
        raise CliError(f"--data {args.data}: no such folder; fix: pass a keyword folder, a LibriSpeech folder or a "
                       "corpus built by python -m tasks.audio.corpus (tasks/audio/README.md)")
    try:
        splits = audio_datasets(args.data, task)
    except ImportError as error:
        raise CliError(str(error)) from None
    except (FileNotFoundError, ValueError) as error:
        raise CliError(f"--data: {error}" if "fix:" in str(error) else
                       f"--data: {error}; fix: see tasks/audio/README.md for the layouts") from None
    return splits["train"], splits.get("validation"), splits.get("test")


def audio_init(args):
    """The speech encoder of --init (frozen feature encoder when pretrained), or a random one of --preset."""
    from .common import load_init

    init = load_init(args.init, "audio", args.preset)
    if args.init is not None:
        for p in init.backbone.embed.feature_encoder.parameters():  # released: feature_grad_mult 0.0
            p.requires_grad_(False)
    return init


def run_audio(args) -> int:
    """Build the task's data, model, loss and metric, then fine-tune with epoch selection on validation."""
    from tasks.audio import AudioCollate, CharVocab, CTCObjective, CTCScores

    from ..heads import AudioClassificationHead, CTCHead, TaskModel
    from ..study.data import seeded_subset
    from .finetune_setup import evaluate_only, finetune_config, maybe_load_head, report_finetune

    train, val, test = audio_splits(args, args.task)
    init = audio_init(args)
    dim = init.encoder_config.dim
    if args.task == "keywords":
        head, collate, loss_fn = AudioClassificationHead(dim, len(train.classes)), AudioCollate(), None
        metric_fn, main, greater, task_type = accuracy, "accuracy", True, "classification"
        info = {"classes": list(train.classes)}
    else:
        vocab = CharVocab.librispeech()
        vocab.save(Path(args.out) / "vocab.json")
        head, collate, loss_fn = CTCHead(dim, len(vocab)), AudioCollate(vocab=vocab), CTCObjective("sentence")
        metric_fn, main, greater, task_type = CTCScores(vocab), "cer", False, "ctc"
        info = {"vocab": "librispeech", "vocab_size": len(vocab)}
    model = TaskModel(init.backbone, head)
    maybe_load_head(model, init)
    train = seeded_subset(train, args.max_train_examples, args.seed)
    test = None if test is None else seeded_subset(test, args.max_eval_examples, args.seed)
    train, val = validation_split(args, train, val)
    pretrained = args.init is not None
    cfg = finetune_config(args, task_type, main, **AUDIO_RECIPE, greater_is_better=greater,
                          lr=LR[args.task][0 if pretrained else 1])
    info = {"task": args.task, "data": str(args.data), "init": init.source, "encoder": init.encoder_config.to_dict(),
            "feature_encoder_frozen": pretrained, **info}
    if args.eval_only:
        return evaluate_only(args, model, test if test is not None else val, collate, metric_fn, cfg, info)
    from ..finetune import finetune

    summary = finetune(model, train, val, cfg, args.out, metric_fn, collate_fn=collate, run_info=info,
                       quiet=args.quiet, test_set=test, resume=args.resume, loss_fn=loss_fn,
                       split_names=("validation", "test"))
    if args.task == "ctc":
        write_decodings(args, model, test if test is not None else val, collate, metric_fn, cfg.device)
    return report_finetune(args, summary)


def write_decodings(args, model, dataset, collate, scores, device, n: int = 5) -> None:
    """The greedy transcripts of the first `n` utterances of `dataset` (the selected weights when a test split was
    scored), printed and written to <out>/decoded.txt as "reference<TAB>hypothesis" lines."""
    from torch.utils.data import DataLoader, Subset

    from ..finetune import predict

    subset = Subset(dataset, range(min(n, len(dataset))))
    frame_logits, transcripts = predict(model, DataLoader(subset, batch_size=n, collate_fn=collate), "ctc", device)
    refs = [scores.vocab.decode(scores.vocab.encode(t)) for t in transcripts]
    lines = [f"{ref}\t{hyp}" for ref, hyp in zip(refs, scores.decode(frame_logits), strict=True)]
    (Path(args.out) / "decoded.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if not args.quiet:
        print("greedy decoding (reference -> hypothesis):\n" + "\n".join(
            f"  {line.replace(chr(9), '  ->  ')}" for line in lines), flush=True)


def validation_split(args, train, val):
    """(train, validation): the layout's validation split, or --val-fraction (default 0.1) of the training data."""
    from ..study.data import seeded_subset
    from .finetune_setup import split_validation

    if val is not None:
        if args.val_fraction is not None:
            raise CliError("--val-fraction: this data set has its own validation split, which selects the epoch; "
                           "fix: leave --val-fraction out")
        return train, seeded_subset(val, args.max_eval_examples, args.seed)
    return split_validation(train, args.val_fraction or 0.1, args.seed)


def accuracy(outputs, labels) -> dict[str, float]:
    return {"accuracy": 100.0 * float((outputs.argmax(-1) == labels).mean())}
