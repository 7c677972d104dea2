"""Import of HuggingFace-format checkpoints (docs/design.md section 7), and our own checkpoint format.

A HuggingFace folder is what `save_pretrained` writes: `config.json` plus `model.safetensors` (or
`pytorch_model.bin`, or a sharded `*.index.json`). `load_pretrained(folder)` builds our backbone
(`TextTransformer` / `VisionTransformer`) with the architecture the config describes, copies every weight
into it and returns a `PretrainedModel` that is called like the `transformers` model. Nothing here
touches the network, and `transformers` itself is not needed (it is only the reference in the tests).

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

Differences from `transformers`: q/k/v are one fused projection (the import concatenates them), and an
attention mask is our bool `padding_mask` (True = pad). `data2vec.hub_export.export_hf` writes the same
layout back for the text (RoBERTa / data2vec-text / BERT) and vision (ViT / data2vec-vision / BEiT)
encoders, from the name tables defined here.

Our own format (`save_backbone` / `load_backbone`): `model.safetensors` with the state-dict keys of a
`TaskModel` (`backbone.*`, `head.*`) and `config.json` =
{"encoder": EncoderConfig.to_dict(), "family": ..., "head": ...}.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from .backbone import TextTransformer, VisionTransformer, build_backbone
from .config import EncoderConfig
from .heads import ImageClassificationHead, QuestionAnsweringHead, SequenceClassificationHead

TEXT_FAMILIES = ("bert", "roberta", "data2vec-text")
VISION_FAMILIES = ("vit", "data2vec-vision", "beit")
FAMILIES = TEXT_FAMILIES + VISION_FAMILIES
ALIASES = {"xlm-roberta": "roberta", "camembert": "roberta"}  # RoBERTa architectures under other names
PREFIX = {"bert": "bert", "roberta": "roberta", "data2vec-text": "data2vec_text", "vit": "vit", "beit": "beit",
          "data2vec-vision": "data2vec_vision"}  # `base_model_prefix` of the task models
BASE_CLASS = {"bert": "Bert", "roberta": "Roberta", "data2vec-text": "Data2VecText", "vit": "ViT", "beit": "Beit",
              "data2vec-vision": "Data2VecVision"}  # class-name stem for `architectures`
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                   "vocab.txt", "sentencepiece.bpe.model", "added_tokens.json")
IGNORED_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")  # index buffers of old checkpoints

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
# Reading a folder
# ---------------------------------------------------------------------------------------------------


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
# Key mapping between our backbone and a `transformers` state dict
# ---------------------------------------------------------------------------------------------------


def key_pairs(backbone: nn.Module) -> list[tuple[str, str]]:
    """(our key, HF key) for every 1:1 weight of this backbone (q/k/v and relative bias handled apart)."""
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


def qkv_key_names(i: int, text: bool) -> dict[str, str]:
    base = f"encoder.layer.{i}.{TEXT_QKV if text else VISION_QKV}"
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
    else:
        names = [("classifier", "classifier")] + ([("norm", "pooler.layernorm")] if head.norm is not None else [])
    return [(f"head.{o}.{leaf}", f"{h}.{leaf}") for o, h in names for leaf in ("weight", "bias")]


@dataclass
class ImportReport:
    """What the import did with the checkpoint's tensors; nothing is dropped without a name here."""

    missing: list[str] = field(default_factory=list)  # our parameters the checkpoint did not provide (left at init)
    unused: list[str] = field(default_factory=list)  # checkpoint tensors we did not import (e.g. pooler, lm_head)
    ignored_buffers: list[str] = field(default_factory=list)  # index buffers that hold no weights

    def __str__(self) -> str:
        return (f"missing (initialised here): {self.missing or 'none'}\n"
                f"unused (in the checkpoint, not imported): {self.unused or 'none'}")


def _fit(name: str, tensor: Tensor, target: Tensor) -> Tensor:
    if tuple(tensor.shape) != tuple(target.shape):
        raise ValueError(f"checkpoint tensor {name!r} has shape {tuple(tensor.shape)} but the model built from "
                         f"config.json expects {tuple(target.shape)}; config.json and the weights do not match")
    return tensor.to(target.dtype)


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
    text = isinstance(backbone, TextTransformer)

    def take(our_key: str, hf_key: str, target: Tensor) -> None:
        if hf_key in hf:
            new[our_key] = _fit(hf_key, hf.pop(hf_key), target)

    for our_key, hf_key in key_pairs(backbone):
        take(our_key, hf_key, ours[our_key])
    for i in range(len(backbone.encoder.blocks)):
        names = qkv_key_names(i, text)
        qkv_key = f"encoder.blocks.{i}.attn.qkv.weight"
        D = ours[qkv_key].shape[1]
        if all(f"{names[p]}.weight" in hf for p in "qkv"):
            parts = [_fit(f"{names[p]}.weight", hf.pop(f"{names[p]}.weight"), ours[qkv_key][:D]) for p in "qkv"]
            new[qkv_key] = torch.cat(parts)  # (3D, D) = [Wq; Wk; Wv]
        for p in "qkv":
            our_bias = f"encoder.blocks.{i}.attn.{p}_bias"
            if our_bias in ours:
                take(our_bias, f"{names[p]}.bias", ours[our_bias])
    if isinstance(backbone, VisionTransformer) and backbone.rel_pos is not None:
        if isinstance(backbone.rel_pos, nn.ModuleList):  # per layer, plus the shared table when both exist
            shared = hf.pop(SHARED_REL, None)
            for i in range(len(backbone.rel_pos)):
                key = LAYER_REL.format(i=i)
                if key in hf:
                    table = _fit(key, hf.pop(key), ours[f"rel_pos.{i}.table"])
                    if shared is not None:  # bias_s[idx] + bias_l[idx] = (table_s + table_l)[idx]
                        table = table + _fit(SHARED_REL, shared, table)
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
                head_new[leaf] = _fit(hf_key, hf.pop(hf_key), head_state[leaf])
            else:
                report.missing.append(our_key)
        head.load_state_dict({**head_state, **head_new})
    report.unused = sorted(hf)
    return report


# ---------------------------------------------------------------------------------------------------
# The imported model
# ---------------------------------------------------------------------------------------------------


def head_from_hf(hf_config: dict, family: str, state: dict[str, Tensor], cfg: EncoderConfig) -> nn.Module | None:
    """The task head a checkpoint carries (from `architectures`, else from its keys), or None."""
    arch = " ".join(hf_config.get("architectures") or [])
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


class PretrainedModel(nn.Module):
    """An imported checkpoint, called like the `transformers` model.

    forward(input_ids, attention_mask, token_type_ids) for text or forward(pixel_values, bool_masked_pos)
    for vision -> final output (B, T, D) = `last_hidden_state`; with return_layers="block" also the list of
    block outputs = `hidden_states[1:]`, with "ffn" the FFN outputs (data2vec-text targets).
    `logits(...)` applies the imported head (if any) to the final output.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module | None, family: str,
                 report: ImportReport | None = None, extra: dict | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.family = family
        self.report = report or ImportReport()
        self.extra = extra or {}

    @property
    def encoder_config(self) -> EncoderConfig:
        return self.backbone.cfg

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, pixel_values: Tensor | None = None,
                bool_masked_pos: Tensor | None = None, return_layers: str | None = None):
        if isinstance(self.backbone, TextTransformer):
            if input_ids is None:
                raise ValueError(f"this {self.family} model is a text encoder: pass input_ids (B, T)")
            # attention_mask: 1 = real token (HF) -> padding_mask: True = pad (ours)
            padding_mask = None if attention_mask is None else attention_mask == 0
            # HF numbers RoBERTa positions over the tokens that are not <pad> (input_ids != padding_idx)
            cfg = self.backbone.cfg
            position_pad = input_ids == cfg.pad_id if cfg.position_offset > 0 else None
            x = self.backbone.embed(input_ids, position_pad, token_type_ids)  # (B, T, D)
            return self.backbone.encoder(x, padding_mask=padding_mask, return_layers=return_layers)
        if pixel_values is None and input_ids is not None and input_ids.is_floating_point():
            pixel_values = input_ids  # called positionally, model(images)
        if pixel_values is None:
            raise ValueError(f"this {self.family} model is a vision encoder: pass pixel_values (B, C, H, W)")
        mask = None if bool_masked_pos is None else bool_masked_pos.bool()
        return self.backbone(pixel_values, mask=mask, return_layers=return_layers)

    def logits(self, **inputs):
        if self.head is None:
            raise ValueError(f"this checkpoint has no task head (unused tensors: {self.report.unused or 'none'}); "
                             f"fine-tune one with `data2vec finetune --init FOLDER`")
        return self.head(self.forward(**inputs))


def load_hf(folder: str | Path) -> PretrainedModel:
    """Import a `transformers` checkpoint folder (see the module docstring for the families)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder {folder} does not exist")
    hf_config = read_json(folder / "config.json")
    family = family_of(hf_config)
    state = normalise_keys(read_weights(folder), family)
    cfg = encoder_config_from_hf(hf_config, family, state)
    backbone = TextTransformer(cfg) if cfg.modality == "text" else VisionTransformer(cfg)
    head = head_from_hf(hf_config, family, state, cfg)
    report = import_state(backbone, head, state)
    return PretrainedModel(backbone, head, family, report, extra={"hf_config": hf_config}).eval()


# ---------------------------------------------------------------------------------------------------
# Our own format
# ---------------------------------------------------------------------------------------------------


def head_spec(head: nn.Module | None) -> dict | None:
    """A JSON description of a head from which `build_head` rebuilds it."""
    if head is None:
        return None
    if isinstance(head, SequenceClassificationHead):
        return {"type": "sequence", "num_labels": head.num_labels, "style": head.style, "dropout": head.dropout.p}
    if isinstance(head, QuestionAnsweringHead):
        return {"type": "qa"}
    if isinstance(head, ImageClassificationHead):
        return {"type": "image", "num_classes": head.num_classes, "pooling": head.pooling,
                "norm": head.norm is not None, "eps": head.norm.eps if head.norm is not None else 1e-6}
    raise ValueError(f"cannot save a head of type {type(head).__name__}; use one of data2vec.heads")


def build_head(spec: dict | None, dim: int) -> nn.Module | None:
    if spec is None:
        return None
    kind = spec.get("type")
    if kind == "sequence":
        return SequenceClassificationHead(dim, spec["num_labels"], style=spec["style"], dropout=spec["dropout"])
    if kind == "qa":
        return QuestionAnsweringHead(dim)
    if kind == "image":
        return ImageClassificationHead(dim, spec["num_classes"], pooling=spec["pooling"], norm=spec["norm"],
                                       eps=spec["eps"])
    raise ValueError(f"config.json head type {kind!r} is unknown; expected 'sequence', 'qa' or 'image'")


def save_backbone(path: str | Path, backbone: nn.Module, extra_config: dict | None = None,
                  head: nn.Module | None = None) -> Path:
    """Write our format: model.safetensors (TaskModel keys: `backbone.*`, `head.*`) + config.json, which
    `data2vec finetune --init` and `load_pretrained` read."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {f"backbone.{k}": v.detach().contiguous().cpu() for k, v in backbone.state_dict().items()}
    if head is not None:
        state.update({f"head.{k}": v.detach().contiguous().cpu() for k, v in head.state_dict().items()})
    config = {"family": None, **(extra_config or {}), "encoder": backbone.cfg.to_dict(), "head": head_spec(head)}
    save_file(state, str(path / "model.safetensors"))
    with open(path / "config.json", "w") as f:
        json.dump(config, f, indent=2)
    return path


def find_encoder_dict(config) -> dict | None:
    """The EncoderConfig fields inside a saved config: top-level "encoder", or nested in a run config
    (`data2vec pretrain` / `data2vec finetune` write the method's or fine-tuning's config around it)."""
    fields = set(EncoderConfig.__dataclass_fields__)
    if isinstance(config, dict):
        if "modality" in config and "dim" in config and set(config) <= fields:
            return config
        for value in ([config["encoder"]] if isinstance(config.get("encoder"), dict) else []) + list(config.values()):
            found = find_encoder_dict(value)
            if found is not None:
                return found
    return None


def is_pretraining_run(config: dict) -> bool:
    """A checkpoint written by `data2vec pretrain` (its config.json holds the method's configuration)."""
    return config.get("command") == "pretrain" or isinstance(config.get("method_config"), dict)


def is_own_format(folder: str | Path) -> bool:
    path = Path(folder) / "config.json"
    return path.is_file() and "model_type" not in read_json(path) and find_encoder_dict(read_json(path)) is not None


def infer_head(head_state: dict[str, Tensor], cfg: EncoderConfig) -> nn.Module | None:
    """Rebuild a head from its tensors when config.json does not describe it (a `data2vec finetune` best/
    folder): dense+out = sequence head (bert style for position_offset 0, else roberta), qa = span head,
    classifier (+ norm) = image head (norm -> mean pooling, no norm -> CLS)."""
    if not head_state:
        return None
    if {"dense.weight", "out.weight"} <= set(head_state):
        style = "bert" if cfg.position_offset == 0 else "roberta"
        return SequenceClassificationHead(cfg.dim, head_state["out.weight"].shape[0], style=style)
    if "qa.weight" in head_state:
        return QuestionAnsweringHead(cfg.dim)
    if "classifier.weight" in head_state:
        norm = "norm.weight" in head_state
        return ImageClassificationHead(cfg.dim, head_state["classifier.weight"].shape[0],
                                       pooling="mean" if norm else "cls", norm=norm, eps=cfg.norm_eps)
    raise ValueError(f"head tensors {sorted(head_state)[:4]} match none of data2vec.heads")


def load_own(folder: str | Path) -> PretrainedModel:
    """Read our format back (strict: every key must match). Also reads the `checkpoint/` or `best/` folder
    of a `data2vec pretrain` / `finetune` run (student backbone under `backbone.` or `student.backbone.`)."""
    folder = Path(folder)
    config = read_json(folder / "config.json")
    encoder = find_encoder_dict(config)
    if encoder is None:
        raise ValueError(f"{folder}/config.json names no encoder configuration: it is not a data2vec checkpoint "
                         f"(a HuggingFace folder has 'model_type'; see load_pretrained)")
    cfg = EncoderConfig.from_dict(encoder)
    backbone = build_backbone(cfg)
    state = read_weights(folder)
    head_state = {k[len("head."):]: v for k, v in state.items() if k.startswith("head.")}
    prefixes = sorted({k[:k.index("backbone.") + len("backbone.")] for k in state if "backbone." in k}, key=len)
    if prefixes:  # TaskModel / method layout: the (shortest, i.e. student) `...backbone.` prefix
        body_state = {k[len(prefixes[0]):]: v for k, v in state.items() if k.startswith(prefixes[0])}
    else:  # a bare backbone state dict
        body_state = {k: v for k, v in state.items() if not k.startswith("head.")}
    _strict_load(backbone, body_state, folder)
    if is_pretraining_run(config):
        spec = None  # the method's own heads (regression, MLM, DINO) are not task heads: fine-tuning adds one
        head_state = {}
    else:
        spec = config.get("head") if "head" in config else "infer"
    head = infer_head(head_state, cfg) if spec == "infer" else build_head(spec, cfg.dim)
    if head is not None:
        _strict_load(head, head_state, folder, prefix="head.")
    elif head_state:
        raise ValueError(f"{folder} holds head weights {sorted(head_state)[:4]} but config.json has head: null")
    extra = {k: v for k, v in config.items() if k not in ("encoder", "head")}
    family = config.get("family") if isinstance(config.get("family"), str) else cfg.modality
    return PretrainedModel(backbone, head, family, extra=extra).eval()


def _strict_load(module: nn.Module, state: dict[str, Tensor], folder: Path, prefix: str = "") -> None:
    expected = module.state_dict()
    missing = [prefix + k for k in expected if k not in state]
    unexpected = [prefix + k for k in state if k not in expected]
    if missing or unexpected:
        raise ValueError(f"{folder}/model.safetensors does not fit config.json: missing {missing[:8]}, "
                         f"unexpected {unexpected[:8]}")
    for k, v in state.items():
        _fit(prefix + k, v, expected[k])
    module.load_state_dict(state)


RUN_SUBFOLDERS = ("checkpoint", "best", "final")  # where `pretrain` / `finetune` put their weights


def locate_checkpoint(path: str | Path) -> tuple[Path, str]:
    """The folder that holds the weights for `path`, and its format ("huggingface" or "own").

    Accepted: a HuggingFace folder (config.json with "model_type"), one of our checkpoint folders
    (model.safetensors + config.json: a `convert` output, a `pretrain` checkpoint/, a `finetune` best/), a run
    folder holding one of those in checkpoint/ (or checkpoint.old/ after a crash mid-save), best/ or final/,
    or a weights file inside such a folder. Anything else is a FileNotFoundError / ValueError naming the fix."""
    from .checkpoint import resolve_checkpoint

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


__all__ = [
    "FAMILIES", "ImportReport", "PretrainedModel", "copy_tokenizer_files", "find_tokenizer_dir", "load_backbone",
    "load_hf", "load_own", "load_pretrained", "locate_checkpoint", "save_backbone",
]
