"""Import of a HuggingFace-format folder (docs/design.md section 7): `load_hf(folder)` reads config.json into
an `EncoderConfig`, builds our backbone, copies every weight into it by the name tables of `names.py`, rebuilds
the task head the checkpoint carries, and reports what it did not import.

Differences from `transformers`: the three q/k/v projections are concatenated into our fused one; a BEiT with
both a shared and a per-layer relative position bias gets the summed table per block; only the exact GELU and
absolute text positions are accepted (anything else would not reproduce the checkpoint's outputs).
data2vec-audio: the waveform normalisation of the HF feature extractor (`preprocessor_config.json`
`do_normalize`) moves into our backbone (`normalize_waveform`, off when the folder has no such file, as the
HF model itself does not normalise); the positional convolution zeroes padded frames before every layer
(`pos_conv_zero_pads=True`, so padding never leaks), where `transformers` zeroes them before the first only:
equal outputs without padding, and on padded batches after `load_hf(folder, pos_conv_zero_pads=False)`.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import Tensor, nn

from ..backbone import build_backbone
from ..config import EncoderConfig
from ..heads import CTCHead, ImageClassificationHead, QuestionAnsweringHead, SequenceClassificationHead
from .files import fit_tensor, read_json, read_weights
from .names import (
    ALIASES,
    AUDIO_FAMILIES,
    FAMILIES,
    LAYER_REL,
    NEW_STYLE_RENAMES,
    PREFIX,
    SHARED_REL,
    TEXT_FAMILIES,
    head_key_pairs,
    key_pairs,
    qkv_key_names,
)
from .pretrained import ImportReport, PretrainedModel

IGNORED_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")  # index buffers of old checkpoints


# ---------------------------------------------------------------------------------------------------
# The family and the key names of a checkpoint
# ---------------------------------------------------------------------------------------------------


def family_of(hf_config: dict) -> str:
    model_type = hf_config.get("model_type")
    family = ALIASES.get(model_type, model_type)
    if family not in FAMILIES:
        raise ValueError(f"config.json has model_type={model_type!r}, which this importer does not know; "
                         f"supported families: {FAMILIES + tuple(ALIASES)}; fix: point at a HuggingFace folder of one "
                         "of them (its config.json names the model_type)")
    return family


def normalise_keys(state: dict[str, Tensor], family: str) -> dict[str, Tensor]:
    """Strip the task model's prefix (`roberta.` ...), rename TF-era gamma/beta and newer module names.

    In a task model's checkpoint the keys without the prefix belong to the task head; one that would
    collide with a backbone key after stripping (BeitForMaskedImageModeling's own `layernorm`) is kept
    apart as `task.<key>` and reported unused."""
    prefix = PREFIX[family] + "."
    prefixed = any(key.startswith(prefix) for key in state)

    def rename(key: str) -> str:
        key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", key)
        key = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key)
        for pattern, repl in NEW_STYLE_RENAMES:
            if re.match(pattern, key):
                return re.sub(pattern, repl, key)
        return key

    body = {rename(k[len(prefix):]): v for k, v in state.items() if k.startswith(prefix)} if prefixed else \
        {rename(k): v for k, v in state.items()}
    if prefixed:
        for key, value in state.items():
            if not key.startswith(prefix):
                body["task." + key if rename(key) in body else rename(key)] = value
    return body


# ---------------------------------------------------------------------------------------------------
# config.json -> EncoderConfig
# ---------------------------------------------------------------------------------------------------


def _get(hf: dict, key: str, default=None):
    value = hf.get(key, default)
    if value is None:
        raise ValueError(f"config.json lacks {key!r}, which the import needs")
    return value


def _mlp_ratio(hf: dict) -> float:
    dim, hidden = _get(hf, "hidden_size"), _get(hf, "intermediate_size")
    ratio = hidden / dim
    if int(dim * ratio) != hidden:  # float rounding: nudge so that int(dim * ratio) == hidden
        ratio = (hidden + 0.5) / dim
    return ratio


def _check_activation(hf: dict) -> None:
    act = hf.get("hidden_act", "gelu")
    if act != "gelu":
        raise ValueError(f"config.json hidden_act={act!r}: our FFN uses the exact GELU ('gelu'); "
                         f"a checkpoint trained with {act!r} would not reproduce its outputs")


def _image_size(hf: dict, key: str) -> int:
    size = _get(hf, key)
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise ValueError(f"config.json {key}={size}: only square images/patches are supported")
        size = size[0]
    return int(size)


def audio_config_from_hf(hf: dict, state: dict[str, Tensor], normalize: bool) -> EncoderConfig:
    """The EncoderConfig of a `Data2VecAudioConfig` (what it cannot express is refused with the reason)."""
    _check_activation(hf)
    if hf.get("feat_extract_activation", "gelu") != "gelu":
        raise ValueError(f"config.json feat_extract_activation={hf['feat_extract_activation']!r}: our feature "
                         "encoder uses the exact GELU ('gelu')")
    if hf.get("conv_bias", False) or hf.get("add_adapter", False):
        raise ValueError("config.json has conv_bias=true or add_adapter=true; the data2vec-audio import supports the "
                         "released layout (bias-free feature convs, no adapter)")
    conv_dim = list(_get(hf, "conv_dim"))
    if len(set(conv_dim)) != 1:
        raise ValueError(f"config.json conv_dim={conv_dim}: only feature encoders of one width are supported")
    return EncoderConfig(
        modality="audio", norm_first=False, final_norm=False, layer_scale=None, init="bert", position="none",
        dim=_get(hf, "hidden_size"), depth=_get(hf, "num_hidden_layers"), heads=_get(hf, "num_attention_heads"),
        mlp_ratio=_mlp_ratio(hf), dropout=float(hf.get("hidden_dropout", 0.0)),
        attn_dropout=float(hf.get("attention_dropout", 0.0)), norm_eps=float(_get(hf, "layer_norm_eps")),
        init_std=float(hf.get("initializer_range", 0.02)), conv_dim=conv_dim[0],
        conv_kernels=tuple(_get(hf, "conv_kernel")), conv_strides=tuple(_get(hf, "conv_stride")),
        feature_dropout=float(hf.get("feat_proj_dropout", 0.0)),
        pos_conv_depth=int(_get(hf, "num_conv_pos_embeddings")),
        pos_conv_kernel=int(_get(hf, "conv_pos_kernel_size")),
        pos_conv_groups=int(_get(hf, "num_conv_pos_embedding_groups")), normalize_waveform=normalize,
        use_mask_token="masked_spec_embed" in state,
    )


def encoder_config_from_hf(hf: dict, family: str, state: dict[str, Tensor]) -> EncoderConfig:
    """The EncoderConfig that reproduces a `transformers` model of this family."""
    _check_activation(hf)
    common = dict(
        dim=_get(hf, "hidden_size"), depth=_get(hf, "num_hidden_layers"), heads=_get(hf, "num_attention_heads"),
        mlp_ratio=_mlp_ratio(hf), dropout=float(hf.get("hidden_dropout_prob", 0.0)),
        attn_dropout=float(hf.get("attention_probs_dropout_prob", 0.0)), norm_eps=float(_get(hf, "layer_norm_eps")),
        init_std=float(hf.get("initializer_range", 0.02)),
    )
    if family in TEXT_FAMILIES:
        kind = hf.get("position_embedding_type", "absolute")
        if kind not in (None, "absolute"):
            raise ValueError(f"config.json position_embedding_type={kind!r}: only 'absolute' positions are supported")
        pad = hf.get("pad_token_id")
        pad = 0 if pad is None and family == "bert" else pad
        if pad is None:
            raise ValueError("config.json lacks pad_token_id, which RoBERTa-style positions are numbered from")
        return EncoderConfig(
            modality="text", norm_first=False, qkv_bias=True, k_bias=True, final_norm=False, init="bert",
            vocab_size=_get(hf, "vocab_size"), max_positions=_get(hf, "max_position_embeddings"),
            position_offset=0 if family == "bert" else pad + 1, type_vocab_size=int(hf.get("type_vocab_size", 2)),
            pad_id=pad, **common,
        )
    image, patch = _image_size(hf, "image_size"), _image_size(hf, "patch_size")
    if family == "vit":
        qkv_bias = bool(hf.get("qkv_bias", True))
        return EncoderConfig(
            modality="vision", norm_first=True, layer_scale=None, qkv_bias=qkv_bias, k_bias=qkv_bias, final_norm=True,
            init="bert", image_size=image, patch_size=patch, in_chans=int(hf.get("num_channels", 3)),
            position="learned", use_mask_token="embeddings.mask_token" in state, **common,
        )
    absolute = bool(hf.get("use_absolute_position_embeddings", False))
    shared, per_layer = bool(hf.get("use_shared_relative_position_bias")), bool(hf.get("use_relative_position_bias"))
    if absolute and (shared or per_layer):
        raise ValueError("config.json uses absolute positions and a relative position bias together; our encoder "
                         "has one position scheme (set use_absolute_position_embeddings=false or drop the bias)")
    position = "learned" if absolute else "relative" if (shared or per_layer) else "none"
    scale = float(hf.get("layer_scale_init_value", 0.1))
    return EncoderConfig(
        modality="vision", norm_first=True, layer_scale=scale if scale > 0 else None, qkv_bias=True, k_bias=False,
        final_norm=not hf.get("use_mean_pooling", True), init="beit", drop_path=float(hf.get("drop_path_rate", 0.0)),
        image_size=image, patch_size=patch, in_chans=int(hf.get("num_channels", 3)), position=position,
        shared_rel_pos=not per_layer, use_mask_token="embeddings.mask_token" in state, **common,
    )


# ---------------------------------------------------------------------------------------------------
# Copying the weights
# ---------------------------------------------------------------------------------------------------


def import_state(backbone: nn.Module, head: nn.Module | None, hf: dict[str, Tensor]) -> ImportReport:
    """Copy a normalised HF state dict into backbone (+ head). Returns the report of missing/unused names."""
    hf = dict(hf)
    report = ImportReport()
    for key in list(hf):  # index buffers (recomputed here, never trained), e.g. in older checkpoints
        if key in IGNORED_BUFFERS or key.endswith("relative_position_index"):
            hf.pop(key)
            report.ignored_buffers.append(key)
    ours = backbone.state_dict()
    new: dict[str, Tensor] = {}

    def take(our_key: str, hf_key: str, target: Tensor) -> None:
        if hf_key in hf:
            new[our_key] = fit_tensor(hf_key, hf.pop(hf_key), target)

    for our_key, hf_key in key_pairs(backbone):
        take(our_key, hf_key, ours[our_key])
    for i in range(len(backbone.encoder.blocks)):
        names = qkv_key_names(i, backbone.cfg.modality)
        qkv_key = f"encoder.blocks.{i}.attn.qkv.weight"
        D = ours[qkv_key].shape[1]
        if all(f"{names[p]}.weight" in hf for p in "qkv"):
            parts = [fit_tensor(f"{names[p]}.weight", hf.pop(f"{names[p]}.weight"), ours[qkv_key][:D]) for p in "qkv"]
            new[qkv_key] = torch.cat(parts)  # (3D, D) = [Wq; Wk; Wv]
        for p in "qkv":
            our_bias = f"encoder.blocks.{i}.attn.{p}_bias"
            if our_bias in ours:
                take(our_bias, f"{names[p]}.bias", ours[our_bias])
    if getattr(backbone, "rel_pos", None) is not None:
        if isinstance(backbone.rel_pos, nn.ModuleList):  # per layer, plus the shared table when both exist
            shared = hf.pop(SHARED_REL, None)
            for i in range(len(backbone.rel_pos)):
                key = LAYER_REL.format(i=i)
                if key in hf:
                    table = fit_tensor(key, hf.pop(key), ours[f"rel_pos.{i}.table"])
                    if shared is not None:  # bias_s[idx] + bias_l[idx] = (table_s + table_l)[idx]
                        table = table + fit_tensor(SHARED_REL, shared, table)
                    new[f"rel_pos.{i}.table"] = table
        else:
            take("rel_pos.table", SHARED_REL, ours["rel_pos.table"])
    report.missing = [k for k in ours if k not in new]
    backbone.load_state_dict({**ours, **new})

    if head is not None:
        head_state = head.state_dict()
        head_new = {}
        for our_key, hf_key in head_key_pairs(head):
            leaf = our_key[len("head."):]
            if hf_key in hf:
                head_new[leaf] = fit_tensor(hf_key, hf.pop(hf_key), head_state[leaf])
            else:
                report.missing.append(our_key)
        head.load_state_dict({**head_state, **head_new})
    report.unused = sorted(hf)
    return report


# ---------------------------------------------------------------------------------------------------
# The task head a checkpoint carries, and the loader
# ---------------------------------------------------------------------------------------------------


def head_from_hf(hf_config: dict, family: str, state: dict[str, Tensor], cfg: EncoderConfig) -> nn.Module | None:
    """The task head a checkpoint carries (from `architectures`, else from its keys), or None."""
    arch = " ".join(hf_config.get("architectures") or [])
    if family in AUDIO_FAMILIES:
        if "ForCTC" in arch or (not arch and "lm_head.weight" in state):
            if "lm_head.weight" in state:
                dropout = float(hf_config.get("final_dropout", 0.0))
                return CTCHead(cfg.dim, state["lm_head.weight"].shape[0], dropout=dropout)
        return None
    dropout = hf_config.get("classifier_dropout")
    dropout = float(hf_config.get("hidden_dropout_prob", 0.0) if dropout is None else dropout)
    if family in TEXT_FAMILIES:
        if "ForQuestionAnswering" in arch or (not arch and "qa_outputs.weight" in state):
            return QuestionAnsweringHead(cfg.dim)
        keys_say_sequence = "classifier.out_proj.weight" in state or (
            "classifier.weight" in state and "pooler.dense.weight" in state)
        if "ForSequenceClassification" in arch or (not arch and keys_say_sequence):
            if "classifier.out_proj.weight" in state:
                return SequenceClassificationHead(cfg.dim, state["classifier.out_proj.weight"].shape[0],
                                                  style="roberta", dropout=dropout)
            if "classifier.weight" in state:
                return SequenceClassificationHead(cfg.dim, state["classifier.weight"].shape[0], style="bert",
                                                  dropout=dropout)
        return None
    if ("ForImageClassification" in arch or not arch) and "classifier.weight" in state:
        num = state["classifier.weight"].shape[0]
        if family == "vit" or hf_config.get("use_mean_pooling", True) is False:
            return ImageClassificationHead(cfg.dim, num, pooling="cls", norm=False)
        return ImageClassificationHead(cfg.dim, num, pooling="mean", norm=True, eps=cfg.norm_eps)
    return None


def load_hf(folder: str | Path, **encoder_overrides) -> PretrainedModel:
    """Import a `transformers` checkpoint folder (see the module docstring for the families); `encoder_overrides`
    change fields of the imported EncoderConfig (e.g. `pos_conv_zero_pads=False`, `dropout=0.0`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder {folder} does not exist")
    hf_config = read_json(folder / "config.json")
    family = family_of(hf_config)
    state = normalise_keys(read_weights(folder), family)
    if family in AUDIO_FAMILIES:
        preprocessor = folder / "preprocessor_config.json"
        normalize = bool(read_json(preprocessor).get("do_normalize", False)) if preprocessor.is_file() else False
        cfg = audio_config_from_hf(hf_config, state, normalize)
    else:
        cfg = encoder_config_from_hf(hf_config, family, state)
    cfg = cfg.replace(**encoder_overrides) if encoder_overrides else cfg
    backbone = build_backbone(cfg)
    head = head_from_hf(hf_config, family, state, cfg)
    report = import_state(backbone, head, state)
    return PretrainedModel(backbone, head, family, report, extra={"hf_config": hf_config}).eval()
