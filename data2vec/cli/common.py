"""Helpers shared by the subcommands: devices, run folders and the starting encoder (`--init`).

The data the commands read (corpora, image splits, seeded subsets) is built by `data2vec.study.data`; this
module belongs to the CLI layer and imports `tasks/` lazily, inside the functions, so that `data2vec --help`
stays fast.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from ..checkpoint import set_seed  # noqa: F401  (re-exported for the subcommands)
from ..config import EncoderConfig
from ..devices import resolve_device
from ..study.data import image_splits
from .errors import CliError, with_fix


# ---- devices and folders -----------------------------------------------------------------------------
def choose_device(name: str) -> str:
    """The --device value resolved ('auto' -> 'cuda' when a GPU is visible, else 'cpu'); a device this machine
    does not have is a one-line CliError."""
    try:
        return str(resolve_device(name))
    except ValueError as error:
        raise CliError(str(error)) from None


# non-empty, show that training has started (a failed launch then keeps its folder for diagnosis or --resume).
@dataclass(frozen=True)
class RunOutputs:
    result: tuple[str, ...]  # entries that make the folder a result
    outputs: tuple[str, ...]  # entries the command writes (the result's and the run's other files)
    progress: tuple[str, ...] = ()  # files that are non-empty once the first update is done


RUN_OUTPUTS = {
    "pretrain": RunOutputs(("checkpoint", "checkpoint.old"),
                           ("checkpoint", "checkpoint.old", "checkpoint.tmp", "metrics.jsonl", "config.json",
                            "summary.json", "plots", "tokenizer", "cache"), progress=("metrics.jsonl",)),
    "finetune": RunOutputs(("metrics.json", "best", "checkpoint", "checkpoint.old"),
                           ("metrics.json", "best", "checkpoint", "checkpoint.old", "checkpoint.tmp", "eval.jsonl",
                            "tokenizer", "vocab.json", "decoded.txt"), progress=("eval.jsonl",)),
    "probe": RunOutputs(("metrics.json",), ("metrics.json",)),
    "demo": RunOutputs(("results.json", "pretrain-*"), ("results.json", "results.txt", "plots", "pretrain-*")),
    "convert": RunOutputs(("config.json", "model.safetensors", "pytorch_model.bin"),
                          ("config.json", "model.safetensors", "pytorch_model.bin", "tokenizer.json",
                           "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt", "vocab.txt",
                           "sentencepiece.bpe.model", "added_tokens.json")),
}


def _entries(out: Path, patterns: tuple[str, ...]) -> list[Path]:
    """The entries of `out` (top level) that match any of `patterns`, sorted."""
    return sorted({p for pattern in patterns for p in out.glob(pattern)}) if out.is_dir() else []


def _remove(path: Path) -> None:
    """Delete a file, a link or a folder with everything in it."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def prepare_run_dir(out: str | Path, command: str, *, resume: bool = False, overwrite: bool = False,
                    can_resume: bool = False) -> tuple[Path, bool]:
    """The run folder of `command`, and whether this launch continues a checkpoint.

    A folder that already holds a result of the command (RUN_OUTPUTS) is refused, so a finished or running run
    is never replaced by accident; --overwrite deletes that result's files first. With `can_resume` (pretrain,
    finetune), --resume continues the checkpoint in `out` when there is one and otherwise starts a new run (with
    a notice), so one command line serves the first launch and every relaunch (a scheduler's requeue,
    `torchrun --max-restarts`, a kill before the first checkpoint)."""
    out = Path(out)
    if resume and overwrite:
        raise CliError("--resume and --overwrite contradict each other; fix: keep --resume to continue the run in "
                       "--out, or --overwrite to replace it")
    spec = RUN_OUTPUTS[command]
    found = _entries(out, spec.result)
    has_ckpt = (out / "checkpoint").is_dir() or (out / "checkpoint.old").is_dir()
    if found and overwrite:
        if os.environ.get("RANK", "0") == "0":
            for path in _entries(out, spec.outputs):
                _remove(path)
        found, has_ckpt = [], False
    if found and not (resume and has_ckpt):
        flags = (["--resume to continue it"] if can_resume and has_ckpt else []) + ["--overwrite to replace it"]
        raise CliError(f"{out} already holds a {command} result ({found[0].name}); fix: add {', '.join(flags)}, "
                       "or choose another --out")
    if resume and not has_ckpt and os.environ.get("RANK", "0") == "0":
        print(f"{command}: --resume: {out} holds no checkpoint yet; starting a new run there", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    return out, resume and has_ckpt


def _started(out: Path, spec: RunOutputs, before: set[str]) -> bool:
    """Whether a launch produced something worth keeping: a result, or a progress file with content."""
    if any(p.name not in before for p in _entries(out, spec.result)):
        return True
    return any((out / name).is_file() and (out / name).stat().st_size > 0 for name in spec.progress)


@contextmanager
def removed_on_failure(out: str | Path, command: str):
    """Run the body; when it fails before training produced anything (`_started`), remove what this launch
    created in `out` -- the folder itself if it did not exist, else only the entries that are new -- so that a
    typo in --data leaves no empty or half-built run folder behind. What was there before is never touched, and
    a run that trained keeps its folder (its metrics explain the failure; --resume continues a checkpoint). Only
    rank 0 removes anything (the folder is shared)."""
    out = Path(out)
    existed = out.exists()
    before = set(os.listdir(out)) if out.is_dir() else set()
    new_parents = [p for p in out.parents if not p.exists()]  # created by `mkdir(parents=True)` (e.g. runs/)
    try:
        yield
    except BaseException:
        if os.environ.get("RANK", "0") == "0" and out.is_dir() and not _started(out, RUN_OUTPUTS[command], before):
            if not existed:
                shutil.rmtree(out, ignore_errors=True)
                for parent in new_parents:  # innermost first; a parent another launch has filled since is kept
                    with suppress(OSError):
                        parent.rmdir()
            else:
                for name in set(os.listdir(out)) - before:
                    _remove(out / name)
        raise


def positive(name: str, value, allow_zero: bool = False):
    if value is None:
        return value
    if value < 0 or (value == 0 and not allow_zero):
        raise CliError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}; fix: pass a "
                       f"{'non-negative' if allow_zero else 'positive'} value")
    return value


# ---- the starting encoder of finetune / probe (--init) ---------------------------------------------------
@dataclass
class Init:
    """The encoder a fine-tuning or probing run starts from."""

    backbone: nn.Module  # TextTransformer | VisionTransformer | AudioTransformer
    encoder_config: EncoderConfig
    source: str  # "huggingface:<family>", "checkpoint:<folder>" or "random:<preset>"
    tokenizer_dir: Path | None = None  # where a tokenizer was found next to the weights
    head_state: dict | None = None  # the task head's tensors of a fine-tuned checkpoint (a `finetune` best/)


def load_init(init: str | None, modality: str, preset: str, overrides: dict | None = None) -> Init:
    """A random encoder of `preset` (init None), or the encoder of any folder `hub.load_pretrained` reads: a
    HuggingFace folder, a `pretrain` run folder or its checkpoint/, a `finetune` best/, a `convert` output."""
    from ..backbone import build_backbone
    from ..config import get_preset
    from ..hub import find_tokenizer_dir, load_pretrained, locate_checkpoint

    if init is None:
        cfg = get_preset(modality, preset, **(overrides or {}))
        return Init(build_backbone(cfg), cfg, f"random:{preset}")
    try:
        folder, kind = locate_checkpoint(init)
        model = load_pretrained(folder)
    except (ValueError, KeyError, OSError, RuntimeError) as error:
        raise CliError(with_fix(f"--init {init}: {error}", "pass a HuggingFace folder, a `data2vec pretrain` run "
                                "folder (or its checkpoint/) or a fine-tuned <out>/best folder")) from None
    cfg = model.encoder_config
    if cfg.modality != modality:
        raise CliError(f"--init {init} is a {cfg.modality} encoder but this task needs a {modality} encoder; "
                       f"fix: use a {modality} checkpoint (or leave --init out for a random {modality} encoder)")
    source = f"huggingface:{model.family}" if kind == "huggingface" else f"checkpoint:{folder}"
    tokenizer_dir = find_tokenizer_dir(folder) if kind == "huggingface" else find_tokenizer_dir(folder, folder.parent)
    # a fine-tuned head of ours, or a HuggingFace CTC head (its characters are the task's, not a dataset's labels)
    keep_head = model.head is not None and (kind == "own" or cfg.modality == "audio")
    head_state = model.head.state_dict() if keep_head else None
    return Init(model.backbone, cfg, source, tokenizer_dir, head_state)


def load_text_tokenizer(tokenizer: str | None, init_tokenizer_dir: Path | None):
    """--tokenizer wins; else the tokenizer found next to the --init weights."""
    from tasks.text.tokenizer import load_tokenizer

    source = tokenizer or init_tokenizer_dir
    if source is None:
        raise CliError("text tasks need a tokenizer; fix: pass --tokenizer PATH (a tokenizer.json or a folder with "
                       "tokenizer.json / vocab.json+merges.txt / vocab.txt), or an --init folder that contains one")
    try:
        return load_tokenizer(source)
    except Exception as error:  # the tokenizers library raises its own Exception type
        raise CliError(f"cannot load the tokenizer {source} ({error}); fix: pass --tokenizer with a valid "
                       "tokenizer.json (train one with tasks.text.tokenizer.train_tokenizer)") from None


def vision_init(data: str, init_path: str | None, preset: str, image_size: int | None, seed: int) -> tuple[Init, int]:
    """The vision encoder (`--init`, or a random `--preset` fitted to the data's size and channels) and the
    input size to use (--image-size, else the encoder's; digits: 8 px for a random encoder)."""
    from ..config import get_preset

    if init_path is None:
        size = image_size or (8 if str(data).lower() == "digits" else get_preset("vision", preset).image_size)
        chans = image_splits(data, size, seed, augment_train=False)[3]
        overrides = {"image_size": size, "in_chans": chans}
        if size % get_preset("vision", preset).patch_size:
            overrides["patch_size"] = 2 if size % 2 == 0 else 1  # small images: the largest patch that fits
        init = load_init(None, "vision", preset, overrides)
    else:
        init = load_init(init_path, "vision", preset)
    patch = init.encoder_config.patch_size
    size = image_size or init.encoder_config.image_size
    if size % patch:
        raise CliError(f"--image-size {size} is not divisible by the encoder's patch size {patch}; "
                       f"fix: use a multiple of {patch}")
    return init, size


def check_channels(data_chans: int, encoder_chans: int) -> None:
    if data_chans != encoder_chans:
        raise CliError(f"the images have {data_chans} channel(s) but the encoder expects {encoder_chans}; fix: use "
                       "a data set with matching channels or an encoder trained on such images")


def dataset_labels(dataset) -> np.ndarray:
    """Every label of an image data set without decoding an image: the `labels` array of the loaders in
    `tasks.vision` (through any Subset), else one pass over the items (slow: decodes everything)."""
    from torch.utils.data import Subset

    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset)[np.asarray(dataset.indices)]
    labels = getattr(dataset, "labels", None)
    if labels is not None:
        return np.asarray(labels)
    return np.asarray([int(dataset[i][1]) for i in range(len(dataset))])


