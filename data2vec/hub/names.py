"""The HuggingFace families this package reads and writes, and the name tables (our key, HuggingFace key):
one source of truth for the import (`hf_import.py`) and the export (`hf_export.py`).

Families and the facts that matter (read from `transformers`' modelling code):
- `bert`: post-LN; word + position (0..T-1) + token-type embeddings; `[CLS]` pooler tanh(W x_0 + b),
  which with the classifier becomes our `SequenceClassificationHead(style="bert")`.
- `roberta`, `data2vec-text` (also `xlm-roberta`): a BERT whose positions are numbered from
  `padding_idx + 1` over the non-pad tokens (pads get `padding_idx`), i.e. our `position_offset =
  pad_token_id + 1`; their classification head is our `style="roberta"`. data2vec's own regression head
  is not in the released checkpoint; an `lm_head` is reported as unused.
- `vit` (also DINO's released ViTs): pre-LN, CLS + learned absolute positions, a final LayerNorm that
  `last_hidden_state` includes; the classifier reads the CLS token.
- `beit`, `data2vec-vision`: pre-LN with layer scale (`lambda_1`, `lambda_2` = our `gamma1`, `gamma2`),
  no key bias, relative position bias shared (`use_shared_relative_position_bias`) or per layer
  (`use_relative_position_bias`; with both, bias_shared[idx] + bias_layer[idx] = (table_s + table_l)[idx],
  so each block gets the summed table). The bias index is the same as ours:
  (dh + g - 1) (2g - 1) + (dw + g - 1), then CLS->patch, patch->CLS, CLS->CLS. With
  `use_mean_pooling` the final LayerNorm is NOT applied to `last_hidden_state` (our `final_norm=False`)
  and the pooler is LN(mean of patch tokens) = our `ImageClassificationHead(pooling="mean")`.
- `data2vec-audio` (`Data2VecAudioModel`, `Data2VecAudioForCTC` under the prefix `data2vec_audio.`): the
  feature encoder (`feature_extractor.conv_layers.{i}`), the projection, `masked_spec_embed` (our `mask_emb`),
  the layered positional conv (`encoder.pos_conv_embed.layers.{i}.conv`) and the encoder LayerNorm (our
  `embed.norm`), then post-LN blocks under `encoder.layers.{i}` with q/k/v/out projections named `*_proj`;
  the CTC head `lm_head` is our `CTCHead`.

Differences from `transformers`: q/k/v are one fused projection here, three in `transformers`
(`qkv_key_names` names the three).
"""

from __future__ import annotations

from torch import nn

from ..backbone import TextTransformer
from ..heads import CTCHead, QuestionAnsweringHead, SequenceClassificationHead

TEXT_FAMILIES = ("bert", "roberta", "data2vec-text")
VISION_FAMILIES = ("vit", "data2vec-vision", "beit")
AUDIO_FAMILIES = ("data2vec-audio",)
FAMILIES = TEXT_FAMILIES + VISION_FAMILIES + AUDIO_FAMILIES
ALIASES = {"xlm-roberta": "roberta", "camembert": "roberta"}  # RoBERTa architectures under other names
PREFIX = {"bert": "bert", "roberta": "roberta", "data2vec-text": "data2vec_text", "vit": "vit", "beit": "beit",
          "data2vec-vision": "data2vec_vision", "data2vec-audio": "data2vec_audio"}  # task models' `base_model_prefix`
BASE_CLASS = {"bert": "Bert", "roberta": "Roberta", "data2vec-text": "Data2VecText", "vit": "ViT", "beit": "Beit",
              "data2vec-vision": "Data2VecVision", "data2vec-audio": "Data2VecAudio"}  # stem for `architectures`


# ---------------------------------------------------------------------------------------------------
# Name tables: (our key, HuggingFace key). One source of truth for import and export.
# ---------------------------------------------------------------------------------------------------

TEXT_EMBED = [
    ("embed.tokens.weight", "embeddings.word_embeddings.weight"),
    ("embed.positions.weight", "embeddings.position_embeddings.weight"),
    ("embed.token_types.weight", "embeddings.token_type_embeddings.weight"),
    ("embed.norm.weight", "embeddings.LayerNorm.weight"),
    ("embed.norm.bias", "embeddings.LayerNorm.bias"),
]
TEXT_BLOCK = [  # per block: encoder.blocks.{i}.<ours> <-> encoder.layer.{i}.<theirs>
    ("attn.proj", "attention.output.dense"), ("norm1", "attention.output.LayerNorm"),
    ("ffn.fc1", "intermediate.dense"), ("ffn.fc2", "output.dense"), ("norm2", "output.LayerNorm"),
]
TEXT_QKV = "attention.self"
VISION_EMBED = [
    ("embed.cls_token", "embeddings.cls_token"),
    ("embed.mask_token", "embeddings.mask_token"),
    ("embed.pos_embed", "embeddings.position_embeddings"),
    ("embed.proj.weight", "embeddings.patch_embeddings.projection.weight"),
    ("embed.proj.bias", "embeddings.patch_embeddings.projection.bias"),
    ("encoder.norm.weight", "layernorm.weight"),
    ("encoder.norm.bias", "layernorm.bias"),
]
VISION_BLOCK = [
    ("norm1", "layernorm_before"), ("attn.proj", "attention.output.dense"), ("norm2", "layernorm_after"),
    ("ffn.fc1", "intermediate.dense"), ("ffn.fc2", "output.dense"),
]
VISION_QKV = "attention.attention"
AUDIO_EMBED = [
    ("embed.proj_norm.weight", "feature_projection.layer_norm.weight"),
    ("embed.proj_norm.bias", "feature_projection.layer_norm.bias"),
    ("embed.proj.weight", "feature_projection.projection.weight"),
    ("embed.proj.bias", "feature_projection.projection.bias"),
    ("embed.mask_emb", "masked_spec_embed"),
    ("embed.norm.weight", "encoder.layer_norm.weight"),
    ("embed.norm.bias", "encoder.layer_norm.bias"),
]
AUDIO_CONV = [  # per layer: embed.feature_encoder.layers.{i}.<ours> <-> feature_extractor.conv_layers.{i}.<theirs>
    ("conv.weight", "conv.weight"), ("layer_norm.weight", "layer_norm.weight"), ("layer_norm.bias", "layer_norm.bias"),
]
AUDIO_POS_CONV = ("embed.pos_conv.layers.{i}", "encoder.pos_conv_embed.layers.{i}.conv")
AUDIO_BLOCK = [  # per block: encoder.blocks.{i}.<ours> <-> encoder.layers.{i}.<theirs>
    ("attn.proj", "attention.out_proj"), ("norm1", "layer_norm"), ("ffn.fc1", "feed_forward.intermediate_dense"),
    ("ffn.fc2", "feed_forward.output_dense"), ("norm2", "final_layer_norm"),
]
SHARED_REL = "encoder.relative_position_bias.relative_position_bias_table"
LAYER_REL = "encoder.layer.{i}.attention.attention.relative_position_bias.relative_position_bias_table"

# transformers >= 5 names some vision modules differently in memory; folders written by `save_pretrained`
# use the names above, but accept the newer ones too.
NEW_STYLE_RENAMES = [
    (r"^layers\.(\d+)\.attention\.q_proj\.", r"encoder.layer.\1.attention.attention.query."),
    (r"^layers\.(\d+)\.attention\.k_proj\.", r"encoder.layer.\1.attention.attention.key."),
    (r"^layers\.(\d+)\.attention\.v_proj\.", r"encoder.layer.\1.attention.attention.value."),
    (r"^layers\.(\d+)\.attention\.o_proj\.", r"encoder.layer.\1.attention.output.dense."),
    (r"^layers\.(\d+)\.mlp\.fc1\.", r"encoder.layer.\1.intermediate.dense."),
    (r"^layers\.(\d+)\.mlp\.fc2\.", r"encoder.layer.\1.output.dense."),
    (r"^layers\.(\d+)\.relative_position_bias\.", r"encoder.layer.\1.attention.attention.relative_position_bias."),
    (r"^layers\.(\d+)\.", r"encoder.layer.\1."),
    (r"^shared_position_bias\.", r"encoder.relative_position_bias."),
]


# ---------------------------------------------------------------------------------------------------
# Key mapping between our backbone and a `transformers` state dict
# ---------------------------------------------------------------------------------------------------


def audio_key_pairs(backbone: nn.Module) -> list[tuple[str, str]]:
    """(our key, HF key) for every 1:1 weight of an `AudioTransformer` (q/k/v handled apart)."""
    ours = set(backbone.state_dict())
    pairs = [(o, h) for o, h in AUDIO_EMBED if o in ours]
    for i in range(len(backbone.embed.feature_encoder.layers)):
        pairs += [(f"embed.feature_encoder.layers.{i}.{o}", f"feature_extractor.conv_layers.{i}.{h}")
                  for o, h in AUDIO_CONV]
    for i in range(len(backbone.embed.pos_conv.layers)):
        o, h = (name.format(i=i) for name in AUDIO_POS_CONV)
        pairs += [(f"{o}.{leaf}", f"{h}.{leaf}") for leaf in ("weight", "bias")]
    for i in range(len(backbone.encoder.blocks)):
        pairs += [(f"encoder.blocks.{i}.{o}.{leaf}", f"encoder.layers.{i}.{h}.{leaf}")
                  for o, h in AUDIO_BLOCK for leaf in ("weight", "bias")]
    return pairs


def key_pairs(backbone: nn.Module) -> list[tuple[str, str]]:
    """(our key, HF key) for every 1:1 weight of this backbone (q/k/v and relative bias handled apart)."""
    if backbone.cfg.modality == "audio":
        return audio_key_pairs(backbone)
    ours = set(backbone.state_dict())
    text = isinstance(backbone, TextTransformer)
    pairs = [(o, h) for o, h in (TEXT_EMBED if text else VISION_EMBED) if o in ours]
    for i in range(len(backbone.encoder.blocks)):
        for o, h in TEXT_BLOCK if text else VISION_BLOCK:
            for leaf in ("weight", "bias"):
                pairs.append((f"encoder.blocks.{i}.{o}.{leaf}", f"encoder.layer.{i}.{h}.{leaf}"))
        if f"encoder.blocks.{i}.gamma1" in ours:
            pairs += [(f"encoder.blocks.{i}.gamma1", f"encoder.layer.{i}.lambda_1"),
                      (f"encoder.blocks.{i}.gamma2", f"encoder.layer.{i}.lambda_2")]
    return pairs


def qkv_key_names(i: int, modality: str) -> dict[str, str]:
    """HF names (without .weight / .bias) of block i's q, k and v projections."""
    if modality == "audio":
        return {part: f"encoder.layers.{i}.attention.{part}_proj" for part in "qkv"}
    base = f"encoder.layer.{i}.{TEXT_QKV if modality == 'text' else VISION_QKV}"
    return {part: f"{base}.{name}" for part, name in (("q", "query"), ("k", "key"), ("v", "value"))}


def head_key_pairs(head: nn.Module | None) -> list[tuple[str, str]]:
    """(our key, HF key after prefix stripping) for the head's weights."""
    if head is None:
        return []
    if isinstance(head, SequenceClassificationHead):
        names = [("dense", "classifier.dense"), ("out", "classifier.out_proj")] if head.style == "roberta" else \
            [("dense", "pooler.dense"), ("out", "classifier")]
    elif isinstance(head, QuestionAnsweringHead):
        names = [("qa", "qa_outputs")]
    elif isinstance(head, CTCHead):
        names = [("proj", "lm_head")]
    else:
        names = [("classifier", "classifier")] + ([("norm", "pooler.layernorm")] if head.norm is not None else [])
    return [(f"head.{o}.{leaf}", f"{h}.{leaf}") for o, h in names for leaf in ("weight", "bias")]
