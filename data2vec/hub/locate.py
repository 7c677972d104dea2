"""Locating a checkpoint: which folder a path means and in which format, and the one loader of the package
(`load_pretrained`) that `data2vec finetune --init`, `data2vec probe --init` and `data2vec convert` go through.

Differences from `transformers`' `from_pretrained`: local folders only; a run folder of `data2vec pretrain` /
`finetune` is accepted as it is (its checkpoint/, best/ or final/ is found here).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from .files import WEIGHT_FILES, read_json
from .hf_import import load_hf
from .own_format import load_own
from .pretrained import PretrainedModel

RUN_SUBFOLDERS = ("checkpoint", "best", "final")  # where `pretrain` / `finetune` put their weights


def locate_checkpoint(path: str | Path) -> tuple[Path, str]:
    """The folder that holds the weights for `path`, and its format ("huggingface" or "own").

    Accepted: a HuggingFace folder (config.json with "model_type"), one of our checkpoint folders
    (model.safetensors + config.json: a `convert` output, a `pretrain` checkpoint/, a `finetune` best/), a run
    folder holding one of those in checkpoint/ (or checkpoint.old/ after a crash mid-save), best/ or final/,
    or a weights file inside such a folder. Anything else is a FileNotFoundError / ValueError naming the fix."""
    from ..checkpoint import resolve_checkpoint

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; fix: give a HuggingFace-format folder, a "
                                "`data2vec pretrain` run folder (or its checkpoint/), or a `data2vec finetune` best/")
    if path.is_file():
        path = path.parent
    if (path / "config.json").is_file() and "model_type" in read_json(path / "config.json"):
        return path, "huggingface"
    candidates = [path]
    for name in RUN_SUBFOLDERS:
        try:
            candidates.append(resolve_checkpoint(path / name))
        except FileNotFoundError:
            continue
    for folder in candidates:
        if (folder / "config.json").is_file() and any((folder / name).is_file() for name in WEIGHT_FILES):
            return folder, "own"
    raise FileNotFoundError(f"{path} is not a checkpoint (no model.safetensors + config.json here or in "
                     f"{', '.join(n + '/' for n in RUN_SUBFOLDERS)}, and no config.json with \"model_type\"); fix: "
                     "point it at a `data2vec pretrain` run folder, its checkpoint/ folder, a `data2vec finetune` "
                     "best/ folder or a HuggingFace-format folder")


def load_pretrained(path: str | Path) -> PretrainedModel:
    """The one loader of the package: any folder `locate_checkpoint` accepts -> a `PretrainedModel`.

    `data2vec finetune --init`, `data2vec probe --init` and `data2vec convert` all go through it."""
    folder, kind = locate_checkpoint(path)
    return load_hf(folder) if kind == "huggingface" else load_own(folder)


def load_backbone(path: str | Path) -> nn.Module:
    """The encoder of a checkpoint folder (either format), ready for `TaskModel(backbone, head)`."""
    return load_pretrained(path).backbone
