"""Encoder configuration and named presets.

One dataclass, `EncoderConfig`, describes every Transformer this project builds: the post-LN text
encoders of BERT / RoBERTa / data2vec-text (data2vec paper, arXiv 2202.03555, section 4 "Experimental
setup": the BERT/RoBERTa base architecture), the pre-LN vision encoders of ViT / BEiT / data2vec-vision
(ViT-B/16 with BEiT's relative position bias and layer scale) and the post-LN speech encoders of
data2vec-audio (section 4.3 "Speech processing": wav2vec 2.0's waveform feature encoder, a convolutional
positional encoder, 12 x 768 blocks; `audio_embedding.py`).

Presets are starting points. `tiny` exists for unit tests, `mini` for CPU experiments in minutes, `small`
for one GPU in hours, `base` is the official 12 x 768 size. Their defaults are commented with where they
come from. Differences from the original: the originals hard-code one size per config file; here one
dataclass holds all of them and `validate()` explains any impossible combination.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

MODALITIES = ("text", "vision", "audio")
_FIELD_TYPES = {  # annotation -> accepted Python types (an int is a valid float)
    "str": (str,), "int": (int,), "float": (float, int), "bool": (bool,), "float | None": (float, int, type(None)),
    "tuple[int, ...]": (tuple,),
}
WAV2VEC2_KERNELS = (10, 3, 3, 3, 3, 2, 2)  # wav2vec 2.0 / data2vec-audio feature encoder: 400-sample receptive field
WAV2VEC2_STRIDES = (5, 2, 2, 2, 2, 2, 2)  # ... and 320x down-sampling: one frame per 20 ms at 16 kHz
POSITION_SCHEMES = ("learned", "sincos", "relative", "none")
INIT_SCHEMES = ("bert", "beit")


# ---- helpers shared by every configuration class (EncoderConfig, Data2VecConfig, the baselines') ----
def config_error(owner: str, field_name: str, problem: str, fix: str) -> ValueError:
    """The one error format of every config: "Owner.field: problem; fix: what to do" (the caller raises it)."""
    return ValueError(f"{owner}.{field_name}: {problem}; {fix if fix.startswith('fix:') else 'fix: ' + fix}")


def check_choices(config, choices: dict[str, tuple]) -> None:
    """Raise `config_error` for the first field whose value is not among its allowed choices."""
    for name, allowed in choices.items():
        value = getattr(config, name)
        if value not in allowed:
            raise config_error(type(config).__name__, name, f"unknown value {value!r}", f"use one of {allowed}")


def field_names(cls) -> set[str]:
    """The dataclass fields of `cls`, without the nested `encoder` field."""
    return {f.name for f in dataclasses.fields(cls)} - {"encoder"}


def split_overrides(cls, overrides: dict) -> tuple[dict, dict]:
    """Split `preset(**overrides)` keywords into (encoder fields, fields of the method config `cls`).

    A name that is neither raises a ValueError listing both sets, so a typo on the command line
    (`--set tau_ned=...`) is named instead of silently ignored."""
    encoder_fields, own_fields = field_names(EncoderConfig), field_names(cls)
    unknown = set(overrides) - encoder_fields - own_fields
    if unknown:
        raise ValueError(f"unknown field(s) {sorted(unknown)}; {cls.__name__} fields: {sorted(own_fields)}; "
                         f"encoder fields: {sorted(encoder_fields)}")
    encoder = {k: v for k, v in overrides.items() if k in encoder_fields and k not in own_fields}
    own = {k: v for k, v in overrides.items() if k in own_fields}
    return encoder, own


def from_dict_checked(cls, values: dict):
    """`cls(**values)` for a saved config, naming the fields this version does not know."""
    unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {sorted(unknown)}; is this config from another version?")
    values = dict(values)
    if isinstance(values.get("encoder"), dict):
        values["encoder"] = EncoderConfig.from_dict(values["encoder"])
    return cls(**values)


@dataclass
class EncoderConfig:
    """Everything needed to build an embedding + Transformer encoder."""

    modality: str = "text"  # "text" (token ids in), "vision" (images in) or "audio" (16 kHz waveforms in)
    # --- Transformer body (docs/design.md section 3) -------------------------------------------------------
    dim: int = 768  # width D; base = 768 (BERT-base, ViT-B)
    depth: int = 12  # number of blocks; base = 12
    heads: int = 12  # attention heads; D must be divisible by it (head width 64 in base)
    mlp_ratio: float = 4.0  # FFN hidden width = mlp_ratio * D (3072 in base)
    norm_first: bool = False  # False = post-LN (BERT/RoBERTa/data2vec-text), True = pre-LN (ViT/BEiT)
    layer_scale: float | None = None  # BEiT/data2vec-vision per-channel gain init (1e-4 at base); None = off
    drop_path: float = 0.0  # max stochastic-depth rate, linearly increased over depth (0.25 data2vec-vision)
    dropout: float = 0.1  # dropout on attention/FFN outputs and embeddings (0.1 BERT; 0.0 ViT pretraining)
    attn_dropout: float = 0.1  # dropout on attention probabilities (0.1 BERT; 0.0 ViT)
    qkv_bias: bool = True  # bias on the q/k/v projections
    k_bias: bool = True  # False = key projection without bias (BEiT/data2vec-vision keep it at 0)
    norm_eps: float = 1e-5  # LayerNorm epsilon (1e-5 RoBERTa, 1e-12 BERT/HF-ViT, 1e-6 BEiT/timm)
    final_norm: bool = False  # final LayerNorm after the stack (pre-LN models only)
    init: str = "bert"  # "bert": normal(0.02); "beit": truncated normal(0.02) + depth rescaling
    init_std: float = 0.02  # standard deviation of weight initialisation (BERT, BEiT)
    # --- text embedding ------------------------------------------------------------------------------
    vocab_size: int = 50265  # RoBERTa/data2vec-text BPE; set from the tokenizer when training our own
    max_positions: int = 514  # learned position table size (RoBERTa: 512 + padding offset 2)
    position_offset: int = 2  # RoBERTa: position ids start at padding_idx + 1 = 2; BERT: 0
    type_vocab_size: int = 1  # token-type (segment) table size; 2 for BERT, 1 for RoBERTa, 0 = none
    pad_id: int = 1  # padding token id (RoBERTa <pad> = 1, BERT [PAD] = 0)
    # --- vision embedding ----------------------------------------------------------------------------
    image_size: int = 224  # input resolution (square); data2vec-vision base: 224
    patch_size: int = 16  # patch side in pixels; must divide image_size (ViT-B/16)
    in_chans: int = 3  # image channels (1 for MNIST/digits)
    position: str = "relative"  # "learned" (ViT), "sincos" (MAE, data2vec 2.0), "relative" (BEiT), "none"
    shared_rel_pos: bool = True  # relative bias shared by all blocks (data2vec-vision) or one per block
    patch_norm: bool = False  # LayerNorm right after the patch embedding (data2vec 2.0 images)
    use_mask_token: bool = False  # learned embedding that replaces masked patches (student of data2vec)
    embed_norm: bool = False  # LayerNorm over [CLS, patches] after the CLS prepend (and after the visible-token
    #                           gather): data2vec 2.0 images (released: the norm before the prenet blocks)
    cls_init_std: float | None = None  # CLS init: None = truncated normal(init_std) (ViT/BEiT); a value = plain
    #                                    normal with that std (data2vec 2.0 released: N(0, 1))
    # --- audio embedding (audio_embedding.py; docs/design.md section 10) -----------------------------------
    conv_dim: int = 512  # channels of every feature-encoder conv layer (wav2vec 2.0 / data2vec-audio: 512)
    conv_kernels: tuple[int, ...] = WAV2VEC2_KERNELS  # kernel of each feature-encoder conv layer
    conv_strides: tuple[int, ...] = WAV2VEC2_STRIDES  # stride of each feature-encoder conv layer
    feature_dropout: float = 0.0  # dropout after the feature projection (fairseq dropout_input 0; HF feat_proj_dropout)
    pos_conv_depth: int = 5  # layers of the positional convolution (data2vec-audio: 5; wav2vec 2.0 has 1)
    pos_conv_kernel: int = 19  # its kernel: max(3, 95 // 5) = 19 (fairseq conv_pos 95 over depth 5)
    pos_conv_groups: int = 16  # its groups (fairseq conv_pos_groups 16); must divide dim
    pos_conv_zero_pads: bool = True  # zero padded frames before EVERY positional-conv layer, so padding never
    #                                  reaches a real frame; False = fairseq / transformers (before the first only,
    #                                  which leaks into the last frames of a padded utterance: HF issue #25621)
    normalize_waveform: bool = True  # per-utterance zero mean, unit variance over the real samples, in the
    #                                  backbone (fairseq task normalize: true; HF feature extractor do_normalize)
    alibi: bool = False  # data2vec 2.0 audio: ALiBi attention biases -slope_h |i - j| times a learned scale per head

    def __post_init__(self) -> None:
        for name in ("conv_kernels", "conv_strides"):  # a list from JSON or the command line -> a tuple
            if isinstance(getattr(self, name), list):
                setattr(self, name, tuple(getattr(self, name)))
        self.validate()

    # Grid and token count of a vision encoder.
    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    @property
    def downsampling(self) -> int:
        """Samples per output frame of the audio feature encoder (the product of the strides: 320 = 20 ms)."""
        return math.prod(self.conv_strides)

    @property
    def receptive_field(self) -> int:
        """Samples one audio frame sees: R = 1 + sum_i (k_i - 1) prod_{j < i} s_j (400 = 25 ms for wav2vec 2.0)."""
        field, jump = 1, 1
        for kernel, stride in zip(self.conv_kernels, self.conv_strides, strict=True):
            field, jump = field + (kernel - 1) * jump, jump * stride
        return field

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    def validate(self) -> None:
        """Raise ValueError naming the field and the fix when the combination is impossible."""

        def fail(field_name: str, problem: str, fix: str) -> None:
            raise config_error("EncoderConfig", field_name, problem, fix)

        for f in dataclasses.fields(self):  # types first, so a string from the command line is named clearly
            value = getattr(self, f.name)
            allowed = _FIELD_TYPES[f.type]
            if isinstance(value, bool) and bool not in allowed or not isinstance(value, allowed):
                fail(f.name, f"expected {f.type}, got {value!r} ({type(value).__name__})",
                     "pass a value of that type (on the command line: --set KEY=VALUE, null for None)")

        if self.modality not in MODALITIES:
            fail("modality", f"unknown modality {self.modality!r}", f"use one of {MODALITIES}")
        for name in ("dim", "depth", "heads"):
            if getattr(self, name) < 1:
                fail(name, f"must be a positive integer, got {getattr(self, name)}", "set it to 1 or more")
        if self.dim % self.heads != 0:
            fail(
                "dim",
                f"width {self.dim} is not divisible by heads={self.heads}",
                f"choose heads that divide dim (e.g. heads={max(1, self.dim // 64)} for 64-wide heads)",
            )
        if self.mlp_ratio <= 0:
            fail("mlp_ratio", f"must be > 0, got {self.mlp_ratio}", "use 4.0 as in BERT and ViT")
        for name in ("dropout", "attn_dropout", "drop_path"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                fail(name, f"must lie in [0, 1), got {value}", "use 0.0 to disable it or e.g. 0.1")
        if self.layer_scale is not None and self.layer_scale <= 0:
            fail("layer_scale", f"must be > 0 or None, got {self.layer_scale}", "use None or e.g. 1e-4")
        if self.layer_scale is not None and not self.norm_first:
            fail("layer_scale", "layer scale is only defined for pre-LN blocks",
                 "set norm_first=True or layer_scale=None")
        if self.final_norm and not self.norm_first:
            fail("final_norm", "a final norm only makes sense after pre-LN blocks (post-LN already ends in a norm)",
                 "set final_norm=False or norm_first=True")
        if self.norm_eps <= 0:
            fail("norm_eps", f"must be > 0, got {self.norm_eps}", "use 1e-5 (RoBERTa), 1e-12 (BERT) or 1e-6 (BEiT)")
        if self.init not in INIT_SCHEMES:
            fail("init", f"unknown scheme {self.init!r}", f"use one of {INIT_SCHEMES}")
        if self.init_std <= 0:
            fail("init_std", f"must be > 0, got {self.init_std}", "use 0.02")
        if self.modality == "text":
            if self.vocab_size < 1:
                fail("vocab_size", f"must be positive, got {self.vocab_size}", "set it to the tokenizer's vocab size")
            if not 0 <= self.pad_id < self.vocab_size:
                fail("pad_id", f"{self.pad_id} is outside the vocabulary [0, {self.vocab_size})",
                     "set it to the tokenizer's padding id")
            if self.position_offset < 0 or self.position_offset >= self.max_positions:
                fail("position_offset", f"{self.position_offset} does not fit max_positions={self.max_positions}",
                     "use 2 for RoBERTa-style or 0 for BERT-style positions")
            if self.type_vocab_size < 0:
                fail("type_vocab_size", f"must be >= 0, got {self.type_vocab_size}", "use 0 (none), 1 or 2")
        elif self.modality == "audio":
            self.validate_audio(fail)
        else:
            if self.patch_size < 1 or self.image_size < 1:
                fail("patch_size", "patch_size and image_size must be positive", "use e.g. 224 and 16")
            if self.image_size % self.patch_size != 0:
                fail(
                    "patch_size",
                    f"patch size {self.patch_size} does not divide the image size {self.image_size}",
                    "choose a patch size that divides the image (e.g. 16 for 224, 4 or 8 for 32)",
                )
            if self.position not in POSITION_SCHEMES:
                fail("position", f"unknown position scheme {self.position!r}", f"use one of {POSITION_SCHEMES}")
            if self.in_chans < 1:
                fail("in_chans", f"must be positive, got {self.in_chans}", "use 3 for RGB or 1 for grey images")
            if self.cls_init_std is not None and self.cls_init_std <= 0:
                fail("cls_init_std", f"must be > 0 or None, got {self.cls_init_std}",
                     "use None (truncated normal with init_std) or 1.0 (data2vec 2.0)")
        if self.modality == "text" and self.embed_norm:
            fail("embed_norm", "is a vision option (the text embedding always ends in its LayerNorm)",
                 "set embed_norm=False for text encoders")
        if self.alibi and self.modality != "audio":
            fail("alibi", "ALiBi biases are built here for the audio encoder only", "set alibi=False")

    def validate_audio(self, fail) -> None:
        """The audio embedding's fields (audio_embedding.py)."""
        if len(self.conv_kernels) != len(self.conv_strides) or not self.conv_kernels:
            fail("conv_kernels", f"{len(self.conv_kernels)} kernels for {len(self.conv_strides)} strides",
                 "give one kernel and one stride per conv layer (wav2vec 2.0: (10,3,3,3,3,2,2), (5,2,2,2,2,2,2))")
        if any(not isinstance(v, int) or v < 1 for v in self.conv_kernels + self.conv_strides):
            fail("conv_kernels", f"kernels {self.conv_kernels} and strides {self.conv_strides} must be positive "
                 "integers", "use wav2vec 2.0's (10,3,3,3,3,2,2) and (5,2,2,2,2,2,2)")
        for name in ("conv_dim", "pos_conv_kernel", "pos_conv_groups"):
            if getattr(self, name) < 1:
                fail(name, f"must be a positive integer, got {getattr(self, name)}", "use the data2vec-audio values")
        if self.pos_conv_depth < 0:
            fail("pos_conv_depth", f"must be >= 0, got {self.pos_conv_depth}", "use 5 (data2vec-audio)")
        if self.dim % self.pos_conv_groups:
            fail("pos_conv_groups", f"{self.pos_conv_groups} does not divide dim={self.dim}",
                 "use a divisor of the width (16 at 768)")
        if not 0.0 <= self.feature_dropout < 1.0:
            fail("feature_dropout", f"must lie in [0, 1), got {self.feature_dropout}", "use 0.0")
        if self.norm_first or self.final_norm or self.layer_scale is not None:
            fail("norm_first", "the data2vec-audio blocks are post-LN without a final norm or layer scale",
                 "set norm_first=False, final_norm=False, layer_scale=None")

    def replace(self, **changes) -> EncoderConfig:
        """A validated copy with some fields changed."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"EncoderConfig has no field(s) {sorted(unknown)}; valid fields: "
                             f"{[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> EncoderConfig:
        return from_dict_checked(cls, values)


# ---------------------------------------------------------------------------------------------------
# Presets. Text presets are post-LN RoBERTa-style; vision presets are pre-LN BEiT-style.
# ---------------------------------------------------------------------------------------------------

_TEXT = dict(modality="text", norm_first=False, position_offset=2, type_vocab_size=1, pad_id=1)
_VISION = dict(
    modality="vision", norm_first=True, layer_scale=1e-4, qkv_bias=True, k_bias=False, norm_eps=1e-6,
    position="relative", init="beit", dropout=0.0, attn_dropout=0.0, final_norm=True,
)

TEXT_PRESETS: dict[str, dict] = {
    # unit tests: 2 x 64, a small vocabulary, short positions
    "tiny": dict(_TEXT, dim=64, depth=2, heads=2, vocab_size=1000, max_positions=130),
    # CPU experiments in minutes: 4 x 256 (BERT-Mini size, Turc et al. 2019)
    "mini": dict(_TEXT, dim=256, depth=4, heads=4, vocab_size=8192, max_positions=258),
    # one GPU in hours: 4 x 512 (BERT-Small size, Turc et al. 2019)
    "small": dict(_TEXT, dim=512, depth=4, heads=8, vocab_size=16384, max_positions=514),
    # the official data2vec-text / RoBERTa-base size (paper section 4.2)
    "base": dict(_TEXT, dim=768, depth=12, heads=12, vocab_size=50265, max_positions=514),
}

VISION_PRESETS: dict[str, dict] = {
    # unit tests: 32 px, 8 px patches (4 x 4 grid), 2 x 64
    "tiny": dict(_VISION, dim=64, depth=2, heads=2, image_size=32, patch_size=8),
    # CPU experiments: 32 px CIFAR-style images, 4 px patches (8 x 8 grid), 4 x 256
    "mini": dict(_VISION, dim=256, depth=4, heads=4, image_size=32, patch_size=4),
    # one GPU: 32 px images, 4 px patches, 6 x 384 (ViT-S width, half its depth)
    "small": dict(_VISION, dim=384, depth=6, heads=6, image_size=32, patch_size=4, drop_path=0.1),
    # the official data2vec-vision base: ViT-B/16 at 224 px (BEiT fork config), drop path 0.25 in pretraining
    "base": dict(_VISION, dim=768, depth=12, heads=12, image_size=224, patch_size=16, drop_path=0.25),
}

# data2vec-audio base (HF Data2VecAudioConfig defaults / fairseq base_librispeech.yaml): post-LN blocks, LN eps 1e-5,
# dropout 0.1 on attention and hidden states, the wav2vec 2.0 feature encoder (7 convs, 512 channels)
_AUDIO = dict(modality="audio", norm_first=False, final_norm=False, layer_scale=None, norm_eps=1e-5, dropout=0.1,
              attn_dropout=0.1, init="bert", position="none")

AUDIO_PRESETS: dict[str, dict] = {
    # unit tests: 2 x 64, 32-channel feature encoder, a 2-layer positional conv (kernel 5, 4 groups)
    "tiny": dict(_AUDIO, dim=64, depth=2, heads=2, conv_dim=32, pos_conv_depth=2, pos_conv_kernel=5,
                 pos_conv_groups=4),
    # CPU experiments in minutes: 4 x 256, 128-channel feature encoder, 3-layer positional conv (kernel 9)
    "mini": dict(_AUDIO, dim=256, depth=4, heads=4, conv_dim=128, pos_conv_depth=3, pos_conv_kernel=9,
                 pos_conv_groups=16),
    # one GPU: 6 x 384, 256-channel feature encoder, the released positional conv
    "small": dict(_AUDIO, dim=384, depth=6, heads=6, conv_dim=256),
    # the released data2vec-audio base (facebook/data2vec-audio-base): 12 x 768, 512 channels, 5 x k19 g16 pos conv
    "base": dict(_AUDIO, dim=768, depth=12, heads=12, conv_dim=512),
}

PRESETS: dict[str, dict[str, dict]] = {"text": TEXT_PRESETS, "vision": VISION_PRESETS, "audio": AUDIO_PRESETS}


def get_preset(modality: str, name: str, **overrides) -> EncoderConfig:
    """Build the named preset for a modality, with optional field overrides."""
    if modality not in PRESETS:
        raise ValueError(f"unknown modality {modality!r}; use one of {tuple(PRESETS)}")
    table = PRESETS[modality]
    if name not in table:
        raise ValueError(f"unknown {modality} preset {name!r}; choose one of {tuple(table)}")
    values = dict(table[name])
    values.update(overrides)
    unknown = set(values) - {f.name for f in dataclasses.fields(EncoderConfig)}
    if unknown:
        raise ValueError(f"EncoderConfig has no field(s) {sorted(unknown)}")
    return EncoderConfig(**values)


def text_preset(name: str, **overrides) -> EncoderConfig:
    return get_preset("text", name, **overrides)


def vision_preset(name: str, **overrides) -> EncoderConfig:
    return get_preset("vision", name, **overrides)


def audio_preset(name: str, **overrides) -> EncoderConfig:
    return get_preset("audio", name, **overrides)
