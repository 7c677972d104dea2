"""The data of a `data2vec pretrain` run, per modality: text blocks and their tokenizer, images (or DINO's crops)
and the online k-NN's labelled images, speech crops. Rank 0 builds first (it trains the tokenizer and fills the
caches the other ranks then reuse).

Differences from the original: none of the method's; fairseq and the BEiT fork read prepared binaries and
manifests, these builders read the folders (`data2vec.study.data`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .errors import CliError


def build_data(args: argparse.Namespace, spec, modality: str, user: dict, out, resuming: bool, rank: int):
    """-> (dataset, data_info for config.json, config overrides derived from the data, collate_fn, k-NN probe)."""
    from .. import distributed as dist_utils

    builders = {"text": text_data, "vision": vision_data, "audio": audio_data}
    built = None
    for turn in (0, 1):
        if (rank == 0) == (turn == 0):
            built = builders[modality](args, spec, modality, user, out, resuming, rank)
        dist_utils.barrier()
    return built


def text_data(args: argparse.Namespace, spec, modality: str, user: dict, out, resuming: bool, rank: int):
    """Token blocks of --seq-len (the tokenizer trained on --data, or --tokenizer); ids become config fields."""
    from ..config import get_preset
    from ..study.data import build_text_data, text_overrides

    enc = get_preset(modality, args.preset)
    if args.seq_len > enc.max_positions - enc.position_offset:
        raise CliError(f"--seq-len {args.seq_len} exceeds the {args.preset} preset's "
                       f"{enc.max_positions - enc.position_offset} positions; fix: lower --seq-len")
    vocab = args.vocab_size or enc.vocab_size
    dataset, tok, data_info = build_text_data(args.data, out, tokenizer=args.tokenizer, vocab_size=vocab,
                                              seq_len=args.seq_len, resume=resuming or rank > 0)
    if resuming:
        data_info = keep_legacy_tokenizer_entry(data_info, out)
    return dataset, data_info, text_overrides(tok), None, None


def vision_data(args: argparse.Namespace, spec, modality: str, user: dict, out, resuming: bool, rank: int):
    """Augmented images (or the method's own views: DINO's multi-crop) and the online k-NN's labelled images."""
    from ..config import get_preset
    from ..study.data import build_vision_data, health_knn_probe
    from .pretrain import method_config

    size = args.image_size or get_preset(modality, args.preset).image_size
    views = spec.views(args.preset, size, args.steps) if spec.views else None
    derived, collate, multicrop, knn = {}, None, None, None
    if views:
        collate = views.collate
        derived.update(views.derived)
        # the crops of the config the method will be built with (--set n_local=... reaches the data)
        multicrop = views.multicrop(method_config(args.method, modality, args.preset, {**derived, "image_size": size},
                                                  user))
    dataset, data_info = build_vision_data(args.data, size, multicrop=multicrop)
    derived.update(image_size=size, in_chans=data_info["channels"])
    if args.health_every and args.health_knn:
        knn = health_knn_probe(args.data, size, args.health_knn, args.seed)
    return dataset, data_info, derived, collate, knn


def audio_data(args: argparse.Namespace, spec, modality: str, user: dict, out, resuming: bool, rank: int):
    """Random crops of at most --crop-seconds of the training speech, padded into {"waveform", "lengths"}."""
    from ..study.data import AUDIO_CROP_SECONDS, build_audio_data

    seconds = args.crop_seconds if args.crop_seconds is not None else AUDIO_CROP_SECONDS[args.preset]
    dataset, data_info, collate = build_audio_data(args.data, crop_seconds=seconds)
    return dataset, data_info, {}, collate, None


def keep_legacy_tokenizer_entry(data_info: dict, out) -> dict:
    """Run folders written before paths inside them were stored relative to them recorded a tokenizer trained on
    --data as `<out>/tokenizer`, with --out as it was given then. Such an entry names the run's own tokenizer
    wherever the folder now is, so it is kept (the checkpoint's config then matches and the run resumes)."""
    from ..checkpoint import CONFIG, resolve_checkpoint

    try:
        saved = json.loads((resolve_checkpoint(Path(out) / "checkpoint") / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # no checkpoint, or an unreadable config.json
        return data_info  # load_checkpoint reports a missing or corrupt file with its fix
    saved_data = saved.get("data") if isinstance(saved.get("data"), dict) else {}
    entry = saved_data.get("tokenizer")
    if (data_info.get("tokenizer_trained_on_data") and saved_data.get("tokenizer_trained_on_data")
            and isinstance(entry, str) and len(Path(entry).parts) > 1 and Path(entry).name == "tokenizer"):
        return {**data_info, "tokenizer": entry}
    return data_info
