"""`data2vec pretrain`: self-supervised pretraining of data2vec, BERT (MLM) or DINO on text, images or speech.

Wires the data (`tasks/`, through `pretrain_data.py`), the method (`data2vec.v1`, `data2vec.v2`, `baselines/`) and
the loop (`data2vec.engine`).
Under `torchrun --nproc_per_node N` it runs DDP: rank 0 trains the tokenizer and builds the token cache
first, the other ranks then load them; only rank 0 writes metrics, plots and checkpoints.
"""

from __future__ import annotations

import argparse
import json

from ..methods import METHODS, PRETRAINING_METHODS, get_method
from ..schedules import PRETRAIN_SCHEDULES
from .errors import OVERWRITE_HELP, CliError, HelpFormatter, config_refusal, signal_exit_code, with_fix
from .flags import add_device_and_threads, add_precision, apply_threads, resolve_precision

PRESETS = ("tiny", "mini", "small", "base")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "pretrain", help="self-supervised pretraining (data2vec, BERT, DINO) on text, images or speech",
        description="Pretrain a method on unlabelled data, writing OUT/metrics.jsonl (one line per update), "
        "OUT/config.json, OUT/plots/*.png and OUT/checkpoint/ (safetensors + optimiser state). Ctrl-C or SIGTERM "
        "saves a checkpoint; rerun the same command with --resume to continue exactly where it stopped (the run "
        "folder may have been copied or moved: paths inside it are stored relative to it). Exit status: 0 finished, "
        "130 / 143 stopped by Ctrl-C / SIGTERM with its checkpoint saved (so `pretrain ... && finetune ...` stops "
        "there; under torchrun a signal to torchrun reaches every worker and ends the job non-zero, while a worker "
        "stopped alone counts as failed and --max-restarts relaunches it, resuming), "
        "2 bad input or a run stopped by a guard (divergence, collapse). "
        "Multi-GPU: torchrun --nproc_per_node 8 -m data2vec pretrain ... (the global batch is "
        "batch-size x grad-accum x processes).",
        formatter_class=HelpFormatter)
    _add_what_flags(p)
    _add_optimisation_flags(p)
    _add_run_flags(p)
    _add_data_flags(p)
    _add_health_flags(p.add_argument_group("representation health (docs/health.md)"))
    p.set_defaults(run=run)


def _add_what_flags(p) -> None:
    """The method, the modality, the model size, the data and the run folder."""
    p.add_argument("--method", required=True, choices=PRETRAINING_METHODS,
                   help="; ".join(f"{name}: {METHODS[name].summary}" for name in PRETRAINING_METHODS))
    p.add_argument("--modality", choices=("text", "vision", "audio"), default=None,
                   help="text, vision or audio (data2vec and data2vec2 only); may be left out for a method that trains "
                   "on one modality only (bert: text, dino: vision)")
    p.add_argument("--preset", choices=PRESETS, default="mini",
                   help="model size: tiny (tests, seconds), mini (CPU, minutes), small (one GPU, hours), base (paper)")
    p.add_argument("--data", required=True,
                   help="text: a .txt file or a folder of them (one sentence per line, blank line between documents, "
                   "WikiText files recognised), or 'python-docs' (the docstrings of Python's standard library, about "
                   "170k words, built on first use: for trying the pipeline, far too small to learn much); "
                   "vision: 'digits' (bundled with scikit-learn), a CIFAR-10 or MNIST "
                   "folder, or an image folder <root>/<class>/<image>; audio: a keyword folder (Speech Commands "
                   "layout), a LibriSpeech folder (its train-* subsets, or one subset folder), transcribed split "
                   "folders, or a corpus built by python -m tasks.audio.corpus (the train splits only; labels and "
                   "transcripts unused; tasks/audio/README.md)")
    p.add_argument("--out", required=True,
                   help="run folder (created); one that holds a run is refused unless --resume or --overwrite")


def _add_optimisation_flags(p) -> None:
    """Updates, batch, learning rate and its schedule, regularisation, seed."""
    p.add_argument("--steps", type=int, default=1000, help="optimiser updates; tiny runs need a few hundred to move")
    p.add_argument("--batch-size", type=int, default=32,
                   help="samples per process per micro-batch; when you change the global batch, scale --lr with it")
    p.add_argument("--grad-accum", type=int, default=1,
                   help="micro-batches per update: a larger global batch without more memory")
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate (default per method: data2vec text 5e-4, vision 1e-3; bert 5e-4; dino "
                   "5e-4 * global batch / 256, DINO's linear scaling rule, e.g. 1.25e-4 at 64; larger rates drive "
                   "tiny DINO runs to the uniform collapse). If the loss explodes or data2vec collapses, halve it and "
                   "lengthen --warmup-steps")
    p.add_argument("--min-lr", type=float, default=0.0, help="final learning rate of the cosine decay")
    p.add_argument("--warmup-steps", type=int, default=None,
                   help="linear warm-up updates (default 10%% of --steps); too short a warm-up is the most common "
                   "cause of divergence and of data2vec collapse")
    p.add_argument("--schedule", choices=PRETRAIN_SCHEDULES, default="cosine",
                   help="cosine: warm-up then cosine decay (data2vec/BEiT); tri_stage: fairseq's warm-up/hold/decay")
    p.add_argument("--weight-decay", type=float, default=None,
                   help="AdamW decay, never applied to biases, norms, tokens or position tables (default text 0.01, "
                   "vision 0.05, dino 0.04)")
    p.add_argument("--clip-norm", type=float, default=None, help="gradient-norm clipping (0 = off; default text 5, "
                   "vision 3, bert 1)")
    p.add_argument("--seed", type=int, default=1, help="seeds init, data order, masks and augmentation")


def _add_run_flags(p) -> None:
    """Where and how the run executes: device, checkpoints, logging, resume, precision, processes."""
    add_device_and_threads(p)
    p.add_argument("--save-every", type=int, default=0,
                   help="checkpoint every N updates (0 = at the end and on Ctrl-C/SIGTERM only); the checkpoint is "
                   "replaced atomically, so an interrupted save never corrupts it")
    p.add_argument("--log-every", type=int, default=10, help="console line every N updates when no progress bar")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint (the losses equal those of an uninterrupted "
                   "run); with no checkpoint there yet, start a new run. Put it in job scripts and torchrun "
                   "--max-restarts launches, so the same command line serves the first launch and every relaunch")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    add_precision(p)
    p.add_argument("--dist-timeout", type=float, default=300.0,
                   help="under torchrun: seconds a rank waits for the others (connecting, collectives, a checkpoint "
                   "being written); with --max-restarts a relaunch that cannot connect fails after this long and "
                   "torchrun tries again, so keep it a few times longer than a checkpoint save")
    p.add_argument("--workers", type=int, default=0,
                   help="DataLoader workers (samples are seeded individually, so results do not depend on it)")
    p.add_argument("--max-nonfinite", type=int, default=5,
                   help="stop after this many non-finite losses in a row (each one skips its update)")


def _add_data_flags(p) -> None:
    """Tokenizer and sequence length (text), image size (vision), --set overrides of the method's config."""
    p.add_argument("--tokenizer", default=None,
                   help="text: a tokenizer.json (or folder) to use instead of training a BPE on --data")
    p.add_argument("--vocab-size", type=int, default=None,
                   help="text: vocabulary of the BPE trained on --data (default: the preset's; tiny 1000, mini 8192); "
                   "a tiny corpus yields fewer tokens than asked")
    p.add_argument("--seq-len", type=int, default=128,
                   help="text: tokens per block (RoBERTa 512); at most the preset's positions (tiny/mini: 128/256)")
    p.add_argument("--image-size", type=int, default=None,
                   help="vision: input side in pixels (default: the preset's, 32 for tiny/mini/small)")
    p.add_argument("--crop-seconds", type=float, default=None,
                   help="audio: each utterance is a random window of at most this many seconds, drawn anew every "
                   "epoch (default by preset: tiny 1, mini 3, small 10, base 20 = the released 320,000 samples); "
                   "batches are padded to their longest crop, so this bounds the cost of an update")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a method or encoder field, e.g. --set tau_end=0.9999 --set loss_reduction=mean "
                   "--set dropout=0.0 (values parsed as JSON, else kept as text; none or null = None); see "
                   "Data2VecConfig for the fields")
    p.add_argument("--quiet", action="store_true", help="no progress bar or console lines")
    p.add_argument("--no-plots", dest="plots", action="store_false",
                   help="do not draw OUT/plots/*.png at checkpoints and at the end (metrics.jsonl has every value; "
                   "sweeps of many short runs save about a second per checkpoint)")


def _add_health_flags(h) -> None:
    """The representation-health pass and its guard (docs/health.md)."""
    h.add_argument("--health-every", type=int, default=100,
                   help="a health pass every N updates (and after the first and the last): anisotropy, effective "
                   "rank and (labelled images) an online k-NN accuracy of the student's features on a fixed probe "
                   "batch, logged as health/* in metrics.jsonl and drawn in plots/health.png; 0 = off. Costs "
                   "under 5%% of a run at 100 (docs/health.md); lower it for short runs to see more points")
    h.add_argument("--health-probe-size", type=int, default=64, help="samples in the fixed probe batch")
    h.add_argument("--health-knn", type=int, default=256,
                   help="vision: labelled training images of the online k-NN (3/4 memory bank, 1/4 held-out "
                   "queries, evaluation transform; the test split is never read); 0 = no k-NN. Raise it for a "
                   "steadier curve, lower it if the pass is slow")
    h.add_argument("--health-max-anisotropy", type=float, default=None,
                   help="text: stop when the probe tokens' mean cosine stays above this after the warm-up (0 = off; "
                   "default 0.6, between healthy and collapsed runs in docs/health.md): a run whose tokens share one "
                   "direction is dead even when target_std looks fine (not applied to images, whose healthy level "
                   "depends on the encoder)")
    h.add_argument("--health-min-effective-rank", type=float, default=None,
                   help="stop when the effective rank (RankMe) of the probe tokens, as a FRACTION of the width D, "
                   "stays below this after the warm-up (0 = off; default PretrainConfig's)")
    h.add_argument("--health-warmup-steps", type=int, default=None,
                   help="updates before the health thresholds apply (default 5x the lr warm-up): healthy runs pass a "
                   "transient of high anisotropy around the peak learning rate")
    h.add_argument("--health-patience", type=int, default=None,
                   help="health passes in a row past a threshold before stopping (default PretrainConfig's)")


def _parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"--set {item!r} is not KEY=VALUE; fix: e.g. --set tau_end=0.9999")
        if value.strip().lower() == "none":
            out[key.strip()] = None
            continue
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def check_sets(spec, user: dict) -> None:
    """Every --set name must be a field of the method's config or of the encoder (checked before any work)."""
    from ..config import split_overrides

    try:
        split_overrides(spec.config_class, user)
    except ValueError as error:
        raise CliError(with_fix(f"--set: {error}", "use a field of the method's config or the encoder")) from None


def method_config(name: str, modality: str, preset: str, derived: dict, user: dict):
    """The method's config from the registry; `derived` overrides (from the data) are kept only where the config
    has the field, `user` overrides (--set) must all exist."""
    from ..config import EncoderConfig, field_names

    spec = get_method(name)
    check_sets(spec, user)
    known = field_names(spec.config_class) | field_names(EncoderConfig)
    overrides = {k: v for k, v in derived.items() if k in known}
    overrides.update(user)
    return spec.config_class.preset(modality, preset, **overrides)


def build_method(name: str, modality: str, preset: str, derived: dict, user: dict):
    """The method object built from `method_config`."""
    return get_method(name).method_class(method_config(name, modality, preset, derived, user))


def run(args: argparse.Namespace) -> int:
    from .common import choose_device, positive, removed_on_failure

    spec = get_method(args.method)
    modality = chosen_modality(args, spec)
    positive("--seq-len", args.seq_len)
    positive("--crop-seconds", args.crop_seconds)
    positive("--health-knn", args.health_knn, allow_zero=True)
    user = _parse_sets(args.set)
    check_sets(spec, user)
    device = choose_device(args.device)
    try:  # every other flag is checked where its meaning is defined: PretrainConfig.validate
        config_from_flags(args, spec, modality, device).validate()
    except ValueError as error:
        raise config_refusal(error, "PretrainConfig", {"num_workers": "--workers"}) from None
    apply_threads(args.threads)
    with removed_on_failure(args.out, "pretrain"):  # a launch that fails before training leaves no folder behind
        return _train(args, spec, modality, user, device)


def chosen_modality(args: argparse.Namespace, spec) -> str:
    """--modality, or the method's only one; refused when the method does not train on it."""
    if args.modality is None and len(spec.modalities) > 1:
        raise CliError(f"--method {args.method} needs --modality ({' or '.join(spec.modalities)}); fix: add "
                       f"--modality {spec.modalities[0]} (or {' or '.join(spec.modalities[1:])})")
    modality = args.modality or spec.modalities[0]
    if modality not in spec.modalities:
        trains_on = ", ".join(f"{name}: {'/'.join(METHODS[name].modalities)}" for name in PRETRAINING_METHODS)
        raise CliError(f"--method {args.method} does not train on {modality} ({args.method} is "
                       f"{'/'.join(spec.modalities)}-only); fix: pick a method for it ({trains_on})")
    return modality


def config_from_flags(args: argparse.Namespace, spec, modality: str, device: str, world: int = 1, rank: int = 0,
                      bf16: bool = False):
    """The loop's `PretrainConfig` from the flags, the method's optimiser defaults where a flag is left out;
    `bf16` is the resolved --precision (`flags.resolve_precision`)."""
    from ..engine import PretrainConfig

    defaults = spec.optim[modality]
    global_batch = args.batch_size * args.grad_accum * world
    return PretrainConfig(
        steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum,
        lr=args.lr if args.lr is not None else defaults.scaled_lr(global_batch), min_lr=args.min_lr,
        warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay if args.weight_decay is not None else defaults.weight_decay,
        betas=defaults.betas, clip_norm=args.clip_norm if args.clip_norm is not None else defaults.clip_norm,
        schedule=args.schedule, bf16=bf16, compile=args.compile, save_every=args.save_every,
        log_every=args.log_every, max_nonfinite=args.max_nonfinite, seed=args.seed, device=device,
        num_workers=args.workers, find_unused_parameters=spec.find_unused_parameters, quiet=args.quiet or rank > 0,
        plots=args.plots, health_every=args.health_every, health_probe_size=args.health_probe_size,
        health_warmup_steps=args.health_warmup_steps,
        **{k: getattr(args, k) for k in ("health_max_anisotropy", "health_min_effective_rank", "health_patience")
           if getattr(args, k) is not None})


def _train(args: argparse.Namespace, spec, modality: str, user: dict, device: str) -> int:
    """Claim the run folder, build the data and the method, and run the engine."""
    from .. import distributed as dist_utils
    from ..checkpoint import set_seed
    from ..engine import TrainingAborted, pretrain
    from .common import prepare_run_dir
    from .pretrain_data import build_data

    # --resume without a checkpoint starts afresh
    out, resuming = prepare_run_dir(args.out, "pretrain", resume=args.resume, overwrite=args.overwrite,
                                    can_resume=True)
    rank, _, world = dist_utils.init_distributed(device, timeout_s=args.dist_timeout)
    dataset, data_info, derived, collate, knn = build_data(args, spec, modality, user, out, resuming, rank)
    set_seed(args.seed)  # the same initial weights on every rank
    method = build_method(args.method, modality, args.preset, derived, user)
    precision = resolve_precision(args, device, quiet=args.quiet or rank > 0, resumed=stored_bf16(out, resuming))
    cfg = config_from_flags(args, spec, modality, device, world, rank, bf16=precision.bf16)
    run_config = {"command": "pretrain", "method": args.method, "modality": modality, "preset": args.preset,
                  "data": data_info, "overrides": user}
    try:
        summary = pretrain(method, dataset, cfg, out, resume=resuming, collate_fn=collate, run_config=run_config,
                           health_data=knn)
        # leave the process group together (only after a run that finished on every rank: on an error path the
        # others may be gone); a rank tearing gloo down while another still uses it can abort that rank
        dist_utils.barrier()
    except TrainingAborted as error:
        raise CliError(with_fix(str(error), "read the run's metrics.jsonl and plots/; docs/health.md lists the "
                                "usual causes and cures (a lower --lr, a longer --warmup-steps)")) from None
    finally:
        dist_utils.cleanup()
    # stopped by a signal: the engine saved and printed how to continue; the status says the run is unfinished
    return signal_exit_code(summary["stopped_by"]) if summary["stopped_by"] else 0


def stored_bf16(out, resuming: bool) -> bool | None:
    """The precision a run being resumed was started with (config.json's pretrain.bf16), else None: --precision
    auto resumes in it, so a run continued on another CPU computes as it began."""
    from pathlib import Path

    path = Path(out) / "config.json"
    if not resuming or not path.is_file():
        return None
    return bool(json.loads(path.read_text()).get("pretrain", {}).get("bf16", False))
