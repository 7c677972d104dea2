"""data2vec from scratch: data2vec (v1) for text and vision, with BERT and DINO on the same Transformer core.

The public names most people need are re-exported here; the training loop lives in `data2vec.engine`,
the command line in `data2vec.cli`, the reference methods in `baselines/` and the data in `tasks/`.
"""

from .backbone import TextTransformer, VisionTransformer, build_backbone
from .config import EncoderConfig, get_preset, text_preset, vision_preset
from .ema import EMATeacher, cosine_momentum, ema_update_, linear_tau
from .embeddings import PatchEmbedding, RelativePositionBias, TextEmbedding
from .heads import ImageClassificationHead, QuestionAnsweringHead, SequenceClassificationHead, TaskModel
from .hub import load_pretrained
from .hub_export import export_hf
from .losses import regression_loss
from .masking import bert_mask, block_mask, block_masks, span_mask
from .model import CollapseError, Data2Vec, Data2VecConfig
from .targets import build_targets
from .transformer import Attention, Block, Encoder, FeedForward

__version__ = "0.1.0"

__all__ = [
    "Attention", "Block", "CollapseError", "Data2Vec", "Data2VecConfig", "EMATeacher", "Encoder", "EncoderConfig",
    "FeedForward", "ImageClassificationHead", "PatchEmbedding", "QuestionAnsweringHead", "RelativePositionBias",
    "SequenceClassificationHead", "TaskModel", "TextEmbedding", "TextTransformer", "VisionTransformer", "bert_mask",
    "block_mask", "block_masks", "build_backbone", "build_targets", "cosine_momentum", "ema_update_", "export_hf",
    "get_preset", "linear_tau", "load_pretrained", "regression_loss", "span_mask", "text_preset", "vision_preset",
]
