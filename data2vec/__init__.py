"""data2vec from scratch: data2vec (v1) and data2vec 2.0 for text and vision, with BERT and DINO on the same
Transformer core.

The public names most people need are re-exported here; the training loop lives in `data2vec.engine`,
the command line in `data2vec.cli`, the reference methods in `baselines/` and the data in `tasks/`.

The re-exports are resolved on first use (PEP 562 module `__getattr__`): `import data2vec` and the
command line's `data2vec --help` do not import torch, which takes seconds; `from data2vec import Data2Vec2`
and `data2vec.Data2Vec2` work as with eager imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> the submodule that defines it
_EXPORTS = {
    "backbone": ("TextTransformer", "VisionTransformer", "build_backbone"),
    "config": ("EncoderConfig", "get_preset", "text_preset", "vision_preset"),
    "ema": ("EMATeacher", "cosine_momentum", "ema_update_", "linear_tau"),
    "embeddings": ("PatchEmbedding", "RelativePositionBias", "TextEmbedding"),
    "heads": ("ImageClassificationHead", "QuestionAnsweringHead", "SequenceClassificationHead", "TaskModel"),
    "hub.hf_export": ("export_hf",),
    "hub.locate": ("load_pretrained",),
    "losses": ("regression_loss",),
    "masking": ("bert_mask", "block_mask", "block_masks", "span_mask"),
    "v1": ("CollapseError", "Data2Vec", "Data2VecConfig"),
    "v2": ("Data2Vec2", "Data2Vec2Config"),
    "targets": ("build_targets",),
    "transformer": ("Attention", "Block", "Encoder", "FeedForward"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'data2vec' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what a type checker and an IDE see: the same names, eagerly
    from .backbone import TextTransformer, VisionTransformer, build_backbone  # noqa: F401
    from .config import EncoderConfig, get_preset, text_preset, vision_preset  # noqa: F401
    from .ema import EMATeacher, cosine_momentum, ema_update_, linear_tau  # noqa: F401
    from .embeddings import PatchEmbedding, RelativePositionBias, TextEmbedding  # noqa: F401
    from .heads import (  # noqa: F401
        ImageClassificationHead,
        QuestionAnsweringHead,
        SequenceClassificationHead,
        TaskModel,
    )
    from .hub.hf_export import export_hf  # noqa: F401
    from .hub.locate import load_pretrained  # noqa: F401
    from .losses import regression_loss  # noqa: F401
    from .masking import bert_mask, block_mask, block_masks, span_mask  # noqa: F401
    from .targets import build_targets  # noqa: F401
    from .transformer import Attention, Block, Encoder, FeedForward  # noqa: F401
    from .v1 import CollapseError, Data2Vec, Data2VecConfig  # noqa: F401
    from .v2 import Data2Vec2, Data2Vec2Config  # noqa: F401
