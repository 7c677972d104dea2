"""Export of our encoders to the HuggingFace layout (docs/design.md section 7): the way back from `hf_import.py`.

`export_hf(folder, model, family)` writes `config.json` + `model.safetensors` that `transformers` loads
as a `bert` / `roberta` / `data2vec-text`, `vit` / `beit` / `data2vec-vision` or `data2vec-audio` model, with a
classification, QA or CTC head when there is one (data2vec-audio also gets a `preprocessor_config.json` whose
`do_normalize` is the encoder's `normalize_waveform`). The key names come from the same tables the import uses
(`names.py`), so a round trip ours -> folder -> ours is the identity (tested), and so is ours ->
folder -> `transformers` on the outputs.

What a family's layout cannot express is refused with the reason and the fix, never written
approximately (`hf_config_for`, `_check_head_exportable`): a text encoder as a vision family or the
reverse, a pre-LN text encoder, positions that do not start where BERT (0) or RoBERTa (pad_id + 1) start
them, a patch-embedding LayerNorm, relative positions / layer scale / no final norm in a ViT, a head whose
pooling or style the family's head class does not have, or a head with no counterpart at all, an audio
encoder with ALiBi biases (data2vec 2.0's; no transformers class has them). A data2vec-audio encoder exports
as it is; `transformers` then zeroes padded frames before its first positional-conv layer only (ours: before
every layer), so its outputs equal ours on unpadded input (and on padded input with `pos_conv_zero_pads=False`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor, nn

from ..backbone import AudioTransformer, TextTransformer, VisionTransformer
from ..config import EncoderConfig
from ..heads import CTCHead, ImageClassificationHead, QuestionAnsweringHead, SequenceClassificationHead
from .files import copy_tokenizer_files
from .names import (
    ALIASES,
    AUDIO_FAMILIES,
    BASE_CLASS,
    FAMILIES,
    LAYER_REL,
    PREFIX,
    SHARED_REL,
    TEXT_FAMILIES,
    VISION_FAMILIES,
    head_key_pairs,
    key_pairs,
    qkv_key_names,
)
from .pretrained import PretrainedModel

AUDIO_PREPROCESSOR = {  # HF Wav2Vec2FeatureExtractor of the released data2vec-audio folders
    "feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1, "sampling_rate": 16000,
    "padding_side": "right", "padding_value": 0.0, "return_attention_mask": True,
}


def _export_error(family: str, problem: str, fix: str) -> ValueError:
    return ValueError(f"cannot export to the {family!r} layout: {problem}; {fix}")


def audio_hf_config(cfg: EncoderConfig, head: nn.Module | None) -> dict:
    """config.json of the `Data2VecAudioModel` / `Data2VecAudioForCTC` that reproduces our audio encoder."""
    family = "data2vec-audio"
    if cfg.alibi:
        raise _export_error(family, "the encoder adds ALiBi attention biases (data2vec 2.0 audio)",
                            "transformers has no class for it; keep it in our format")
    if head is not None and not isinstance(head, CTCHead):
        raise _export_error(family, f"a {type(head).__name__} has no data2vec-audio counterpart here",
                            "export the backbone alone or with a CTCHead")
    n = len(cfg.conv_kernels)
    config = {
        "model_type": family, "hidden_size": cfg.dim, "num_hidden_layers": cfg.depth, "num_attention_heads": cfg.heads,
        "intermediate_size": int(cfg.dim * cfg.mlp_ratio), "hidden_act": "gelu", "hidden_dropout": cfg.dropout,
        "attention_dropout": cfg.attn_dropout, "activation_dropout": 0.0, "feat_proj_dropout": cfg.feature_dropout,
        "layerdrop": 0.0, "layer_norm_eps": cfg.norm_eps, "initializer_range": cfg.init_std,
        "feat_extract_activation": "gelu", "conv_bias": False, "num_feat_extract_layers": n,
        "conv_dim": [cfg.conv_dim] * n, "conv_kernel": list(cfg.conv_kernels), "conv_stride": list(cfg.conv_strides),
        "num_conv_pos_embeddings": cfg.pos_conv_depth, "conv_pos_kernel_size": cfg.pos_conv_kernel,
        "num_conv_pos_embedding_groups": cfg.pos_conv_groups,
        "mask_time_prob": 0.05 if cfg.use_mask_token else 0.0,  # HF builds masked_spec_embed only when > 0
        "architectures": ["Data2VecAudioForCTC" if head is not None else "Data2VecAudioModel"],
    }
    if head is not None:
        config.update(vocab_size=head.vocab_size, final_dropout=head.dropout.p, pad_token_id=0)  # blank = 0
    return config


def hf_config_for(cfg: EncoderConfig, family: str, head: nn.Module | None) -> dict:
    """config.json of the `transformers` model that reproduces our encoder (checks that it can)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown export family {family!r}; use one of {FAMILIES}")
    kinds = {"text": TEXT_FAMILIES, "vision": VISION_FAMILIES, "audio": AUDIO_FAMILIES}
    if family not in kinds[cfg.modality]:
        raise _export_error(family, f"the encoder is a {cfg.modality} encoder", f"use one of {kinds[cfg.modality]}")
    if cfg.modality == "audio":
        return audio_hf_config(cfg, head)
    if cfg.modality == "vision" and (not cfg.norm_first or cfg.embed_norm):
        # data2vec 2.0's image encoder: post-LN blocks, fixed sin-cos positions, a LayerNorm after the CLS prepend
        raise _export_error(family, "the encoder is data2vec 2.0's post-LN ViT (a LayerNorm after the CLS prepend, "
                            "post-LN blocks); transformers has no class for it (ViT, BEiT and Data2VecVision are "
                            "pre-LN)", "keep it in our format (`data2vec finetune/probe --init RUN` read it), or "
                            "export a text encoder, which is RoBERTa-shaped")
    common = {
        "model_type": family, "hidden_size": cfg.dim, "num_hidden_layers": cfg.depth,
        "num_attention_heads": cfg.heads, "intermediate_size": int(cfg.dim * cfg.mlp_ratio), "hidden_act": "gelu",
        "hidden_dropout_prob": cfg.dropout, "attention_probs_dropout_prob": cfg.attn_dropout,
        "layer_norm_eps": cfg.norm_eps, "initializer_range": cfg.init_std,
    }
    if family in TEXT_FAMILIES:
        if cfg.norm_first:
            raise _export_error(family, "the encoder is pre-LN", "BERT/RoBERTa layouts are post-LN (norm_first=False)")
        if family == "bert" and cfg.position_offset != 0:
            raise _export_error(family, f"position_offset={cfg.position_offset}", "use --family roberta")
        if family != "bert" and cfg.position_offset != cfg.pad_id + 1:
            raise _export_error(family, f"positions start at {cfg.position_offset}, RoBERTa's at pad_id + 1 = "
                                f"{cfg.pad_id + 1}", "use --family bert for position_offset=0 encoders")
        config = dict(common, vocab_size=cfg.vocab_size, max_position_embeddings=cfg.max_positions,
                      type_vocab_size=max(cfg.type_vocab_size, 1), pad_token_id=cfg.pad_id,
                      position_embedding_type="absolute")
    else:
        if cfg.patch_norm:
            raise _export_error(family, "the encoder has a LayerNorm after the patch embedding (data2vec 2.0)",
                                "no transformers model has it; keep this checkpoint in our format")
        config = dict(common, image_size=cfg.image_size, patch_size=cfg.patch_size, num_channels=cfg.in_chans)
        if family == "vit":
            if cfg.position == "relative":
                raise _export_error(family, "ViT has no relative position bias", "use --family data2vec-vision")
            if cfg.layer_scale is not None:
                raise _export_error(family, "ViT has no layer scale", "use --family data2vec-vision")
            if not cfg.final_norm:
                raise _export_error(family, "ViT ends with a final LayerNorm, this encoder has none",
                                    "use --family data2vec-vision (mean pooling)")
            config.update(qkv_bias=cfg.qkv_bias, encoder_stride=cfg.patch_size)
        else:
            absolute = cfg.position in ("learned", "sincos")
            relative = cfg.position == "relative"
            config.update(
                use_mask_token=cfg.use_mask_token, use_absolute_position_embeddings=absolute,
                use_relative_position_bias=relative and not cfg.shared_rel_pos,
                use_shared_relative_position_bias=relative and cfg.shared_rel_pos,
                layer_scale_init_value=cfg.layer_scale or 0.0, drop_path_rate=cfg.drop_path,
                use_mean_pooling=not cfg.final_norm,
            )
    arch = BASE_CLASS[family] + "Model"
    if head is not None:
        _check_head_exportable(head, family, cfg)
        task = {SequenceClassificationHead: "ForSequenceClassification", QuestionAnsweringHead: "ForQuestionAnswering",
                ImageClassificationHead: "ForImageClassification"}[type(head)]
        arch = BASE_CLASS[family] + task
        n = getattr(head, "num_labels", getattr(head, "num_classes", None))
        if n is not None:
            config["id2label"] = {str(i): f"LABEL_{i}" for i in range(n)}
            config["label2id"] = {f"LABEL_{i}": i for i in range(n)}
        if isinstance(head, SequenceClassificationHead):
            config["classifier_dropout"] = head.dropout.p
    config["architectures"] = [arch]
    return config


def _check_head_exportable(head: nn.Module, family: str, cfg: EncoderConfig) -> None:
    if isinstance(head, SequenceClassificationHead):
        wanted = "bert" if family == "bert" else "roberta"
        if head.style != wanted:
            raise _export_error(family, f"its sequence head is {head.style!r}-style, the family's is {wanted!r}",
                                f"fine-tune with the {wanted!r} head or export to a matching family")
    elif isinstance(head, ImageClassificationHead):
        if family == "vit" and (head.pooling != "cls" or head.norm is not None):
            raise _export_error(family, "ViT classifies the CLS token without an extra norm",
                                "use --family data2vec-vision for a mean-pooling head")
        if family != "vit":
            mean_ok = head.pooling == "mean" and head.norm is not None and not cfg.final_norm
            cls_ok = head.pooling == "cls" and head.norm is None and cfg.final_norm
            if not (mean_ok or cls_ok):
                raise _export_error(family, "BEiT pools either LN(mean of patches) without a final norm or the CLS "
                                    "token after the final norm", "build the head and final_norm accordingly")
    elif not isinstance(head, QuestionAnsweringHead) or family in VISION_FAMILIES:
        raise _export_error(family, f"a {type(head).__name__} has no {family} counterpart", "export the backbone alone")


def split_qkv(out: dict[str, Tensor], ours: dict[str, Tensor], cfg: EncoderConfig, i: int) -> dict[str, str]:
    """Write block i's fused (3D, D) = [Wq; Wk; Wv] as three HF weights into `out`; returns their HF names."""
    names = qkv_key_names(i, cfg.modality)
    D = cfg.dim
    w = ours[f"encoder.blocks.{i}.attn.qkv.weight"]  # (3D, D) = [Wq; Wk; Wv]
    for j, p in enumerate("qkv"):
        out[f"{names[p]}.weight"] = w[j * D:(j + 1) * D]
    return names


def audio_export_state(backbone: nn.Module, head: nn.Module | None) -> dict[str, Tensor]:
    """An `AudioTransformer` (+ CTC head) under `Data2VecAudioModel` (`Data2VecAudioForCTC`) names."""
    ours = {k: v.detach() for k, v in backbone.state_dict().items()}
    out = {hf_key: ours[our_key] for our_key, hf_key in key_pairs(backbone)}
    for i in range(backbone.cfg.depth):
        names = split_qkv(out, ours, backbone.cfg, i)
        attn = backbone.encoder.blocks[i].attn
        for p in "qkv":
            bias = getattr(attn, f"{p}_bias")
            out[f"{names[p]}.bias"] = torch.zeros(backbone.cfg.dim) if bias is None else bias.detach()
    if head is not None:
        out = {"data2vec_audio." + k: v for k, v in out.items()}
        out.update({hf_key: head.state_dict()[our_key[len("head."):]].detach()
                    for our_key, hf_key in head_key_pairs(head)})
    return {k: v.contiguous().clone() for k, v in out.items()}


def export_state(backbone: nn.Module, family: str, head: nn.Module | None = None) -> dict[str, Tensor]:
    """Our weights under `transformers`' names (task models prefix the backbone with `roberta.` etc.)."""
    if backbone.cfg.modality == "audio":
        return audio_export_state(backbone, head)
    ours = {k: v.detach() for k, v in backbone.state_dict().items()}
    cfg: EncoderConfig = backbone.cfg
    text = cfg.modality == "text"
    out: dict[str, Tensor] = {}
    for our_key, hf_key in key_pairs(backbone):
        if our_key == "embed.mask_token" and family == "vit":
            continue  # ViTModel's config cannot declare a mask token; it is only used in pretraining
        out[hf_key] = ours[our_key]
    if text and cfg.type_vocab_size == 0:
        out["embeddings.token_type_embeddings.weight"] = torch.zeros(1, cfg.dim)  # adds nothing, as ours
    if not text and family == "vit" and cfg.position in ("sincos", "none"):
        table = backbone.embed.positions_for((cfg.grid_size, cfg.grid_size))
        out["embeddings.position_embeddings"] = torch.zeros(1, cfg.num_patches + 1, cfg.dim) if table is None else table
    if not text and family != "vit" and cfg.position == "sincos":
        out["embeddings.position_embeddings"] = backbone.embed.pos_embed.detach()
    for i in range(cfg.depth):
        names = split_qkv(out, ours, cfg, i)
        D = cfg.dim
        attn = backbone.encoder.blocks[i].attn
        for p in "qkv":
            bias = getattr(attn, f"{p}_bias")  # None when qkv_bias=False; k: zero buffer when k_bias=False
            if p == "k" and not text and family != "vit":  # BEiT: the key projection has no bias
                if bias is not None and bias.abs().max() > 0:
                    raise _export_error(family, f"block {i} has a non-zero key bias", "BEiT has no key bias")
                continue
            if family == "vit" and not cfg.qkv_bias:  # ViT(qkv_bias=False) has no q/k/v biases
                continue
            out[f"{names[p]}.bias"] = torch.zeros(D) if bias is None else bias.detach()
    if not text and backbone.rel_pos is not None:
        if isinstance(backbone.rel_pos, nn.ModuleList):
            for i, rel in enumerate(backbone.rel_pos):
                out[LAYER_REL.format(i=i)] = rel.table.detach()
        else:
            out[SHARED_REL] = backbone.rel_pos.table.detach()
    head_out: dict[str, Tensor] = {}
    if head is not None:
        head_state = head.state_dict()
        for our_key, hf_key in head_key_pairs(head):
            head_out[hf_key] = head_state[our_key[len("head."):]].detach()
    pooled = family == "beit" or (family != "vit" and head is not None)  # BeitModel builds its pooler by default,
    # Data2VecVisionModel only under a classification head (add_pooling_layer=False otherwise)
    if not text and pooled and not cfg.final_norm and "pooler.layernorm.weight" not in head_out:
        # the pooler's LayerNorm exists in the model; give it its initial values (it does not touch
        # last_hidden_state)
        out["pooler.layernorm.weight"], out["pooler.layernorm.bias"] = torch.ones(cfg.dim), torch.zeros(cfg.dim)
    if head is None:
        return {k: v.contiguous().clone() for k, v in out.items()}
    prefix = PREFIX[family] + "."
    full = {prefix + k: v for k, v in out.items()}
    for k, v in head_out.items():
        full[(prefix + k) if k.startswith("pooler.") else k] = v
    return {k: v.contiguous().clone() for k, v in full.items()}


def export_hf(folder: str | Path, model: nn.Module, family: str, head: nn.Module | None = None,
              tokenizer_dir: str | Path | None = None) -> Path:
    """Write `model` (a backbone or a PretrainedModel, whose head is exported too) as a `transformers`
    folder: config.json + model.safetensors, plus the tokenizer files found in `tokenizer_dir`."""
    from safetensors.torch import save_file

    if isinstance(model, PretrainedModel):
        head = model.head if head is None else head
        model = model.backbone
    if not isinstance(model, (TextTransformer, VisionTransformer, AudioTransformer)):
        raise ValueError(f"export_hf needs a Text/Vision/AudioTransformer, got {type(model).__name__}")
    family = ALIASES.get(family, family)
    config = hf_config_for(model.cfg, family, head)
    state = export_state(model, family, head)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with open(folder / "config.json", "w") as f:
        json.dump(config, f, indent=2)
    if tokenizer_dir is not None:
        copy_tokenizer_files(tokenizer_dir, folder)
    if model.cfg.modality == "audio":  # the waveform normalisation lives in HF's feature extractor
        with open(folder / "preprocessor_config.json", "w") as f:
            json.dump(AUDIO_PREPROCESSOR | {"do_normalize": model.cfg.normalize_waveform}, f, indent=2)
    return folder


__all__ = ["export_hf", "export_state", "hf_config_for"]
