"""Reading a checkpoint folder: config.json, the weights (single file or sharded, safetensors or torch), the
tokenizer files that travel with a model, and the shape check every loader applies to a tensor.

Differences from `transformers`: no download and no cache; a missing or corrupt file is an error that names the
fix.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                   "vocab.txt", "sentencepiece.bpe.model", "added_tokens.json")


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; a checkpoint folder needs config.json next to the weights "
                                f"(the layout `save_pretrained` writes)")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{path} is corrupt ({error}); fix: restore the checkpoint folder (or pretrain again)"
        ) from None


def _load_weight_file(path: Path) -> dict[str, Tensor]:
    from safetensors import SafetensorError

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, OSError, RuntimeError, EOFError, ValueError) as error:
        raise ValueError(f"{path} is corrupt or not a weights file ({error}); fix: restore it or download / "
                         "pretrain again") from None


def read_weights(folder: Path) -> dict[str, Tensor]:
    """All tensors of a folder: model.safetensors, pytorch_model.bin, or their sharded index."""
    for name in WEIGHT_FILES:
        path = folder / name
        if not path.is_file():
            continue
        if name.endswith(".index.json"):
            shards = sorted(set(read_json(path)["weight_map"].values()))
            state: dict[str, Tensor] = {}
            for shard in shards:
                if not (folder / shard).is_file():
                    raise FileNotFoundError(f"shard {folder / shard} listed in {path} is missing")
                state.update(_load_weight_file(folder / shard))
            return state
        return _load_weight_file(path)
    raise FileNotFoundError(f"no weights in {folder}: expected one of {WEIGHT_FILES}; download the model files "
                            f"(e.g. `huggingface-cli download facebook/data2vec-text-base --local-dir {folder}`)")


def fit_tensor(name: str, tensor: Tensor, target: Tensor) -> Tensor:
    if tuple(tensor.shape) != tuple(target.shape):
        raise ValueError(f"checkpoint tensor {name!r} has shape {tuple(tensor.shape)} but the model built from "
                         f"config.json expects {tuple(target.shape)}; config.json and the weights do not match")
    return tensor.to(target.dtype)


def find_tokenizer_dir(*folders: str | Path) -> Path | None:
    """The first of the folders (or their tokenizer/ sub-folder) that holds tokenizer files."""
    for folder in map(Path, folders):
        for candidate in (folder, folder / "tokenizer"):
            if any((candidate / name).is_file() for name in ("tokenizer.json", "vocab.json", "vocab.txt")):
                return candidate
    return None


def copy_tokenizer_files(src: str | Path, dst: str | Path) -> list[str]:
    """Copy the tokenizer files of a folder (tokenizer.json, vocab/merges, ...) next to the weights."""
    import shutil

    src, dst = Path(src), Path(dst)
    copied = []
    for name in TOKENIZER_FILES:
        if (src / name).is_file() and src.resolve() != dst.resolve():
            shutil.copyfile(src / name, dst / name)
            copied.append(name)
    return copied
