"""data2vec from scratch: data2vec (v1, 2.0) for text and vision, with BERT and DINO on the same core."""

from .backbone import TextTransformer, VisionTransformer, build_backbone
from .config import EncoderConfig, get_preset, text_preset, vision_preset
from .embeddings import PatchEmbedding, RelativePositionBias, TextEmbedding
from .transformer import Attention, Block, Encoder, FeedForward

__version__ = "0.1.0"

__all__ = [
    "Attention", "Block", "Encoder", "EncoderConfig", "FeedForward", "PatchEmbedding", "RelativePositionBias",
    "TextEmbedding", "TextTransformer", "VisionTransformer", "build_backbone", "get_preset", "text_preset",
    "vision_preset",
]
