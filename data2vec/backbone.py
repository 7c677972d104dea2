"""Embedding + Encoder = the backbone every method trains (data2vec, BERT, DINO, supervised).

`TextTransformer` is BERT/RoBERTa/data2vec-text without heads; `VisionTransformer` is ViT/BEiT/
data2vec-vision without heads; `AudioTransformer` is data2vec-audio (transformers' `Data2VecAudioModel`)
without heads: waveform -> `audio_embedding.WaveformEmbedding` -> the post-LN blocks. All three return what
`Encoder.forward` returns: the final output (B, T, D),
and with `return_layers="ffn"|"block"` also the per-block tensors. `build_backbone(cfg)` picks one by
`cfg.modality` and applies the configured initialisation.

`forward_visible(inputs, visible)` is the visible-only student of data2vec 2.0 (arXiv 2212.07525, section 3;
MAE's encoder): the embedding keeps only the tokens marked visible (M masks per sample, clones adjacent)
and the encoder runs on those alone, with a padding mask for the filler slots of rows that keep fewer.
An encoder with BEiT's relative position bias cannot take this path (its bias is indexed by grid position,
which the gathered sequence no longer has): it raises.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .audio_embedding import WaveformEmbedding, alibi_bias, alibi_slopes
from .config import EncoderConfig
from .embeddings import PatchEmbedding, RelativePositionBias, TextEmbedding, repeat_for_masks
from .masking import visible_index
from .transformer import Encoder, check_padding_mask, init_weights_, rescale_depth_


class TextTransformer(nn.Module):
    """token ids (B, T) -> contextual features (B, T, D)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        if cfg.modality != "text":
            raise ValueError(f"TextTransformer needs a text config, got modality={cfg.modality!r}")
        self.cfg = cfg
        self.embed = TextEmbedding(cfg)
        self.encoder = Encoder(cfg)

    def forward(
        self,
        input_ids: Tensor,
        padding_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        return_layers: str | None = None,
    ):
        """input_ids: long (B, T); padding_mask: bool (B, T), True = padding."""
        check_padding_mask(padding_mask, input_ids.shape)
        x = self.embed(input_ids, padding_mask, token_type_ids)  # (B, T, D)
        return self.encoder(x, padding_mask=padding_mask, return_layers=return_layers)

    def forward_visible(self, input_ids: Tensor, visible: Tensor, padding_mask: Tensor | None = None,
                        return_layers: str | None = None):
        """input_ids (B, T); visible: bool (B * M, T), True = the token enters the student (never a pad).
        Returns the encoder output (B * M, K, D) over the visible tokens of each row, in order."""
        check_padding_mask(padding_mask, input_ids.shape)
        x, filler = self.embed.forward_visible(input_ids, visible, padding_mask)  # (B * M, K, D)
        return self.encoder(x, padding_mask=filler, return_layers=return_layers)


class VisionTransformer(nn.Module):
    """images (B, C, H, W) -> tokens (B, 1 + N, D), CLS first."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        if cfg.modality != "vision":
            raise ValueError(f"VisionTransformer needs a vision config, got modality={cfg.modality!r}")
        self.cfg = cfg
        self.embed = PatchEmbedding(cfg)
        self.rel_pos: nn.Module | None = None
        if cfg.position == "relative":
            if cfg.shared_rel_pos:
                self.rel_pos = RelativePositionBias(cfg.grid_size, cfg.heads)
            else:
                self.rel_pos = nn.ModuleList(RelativePositionBias(cfg.grid_size, cfg.heads) for _ in range(cfg.depth))
        self.encoder = Encoder(cfg)

    def attn_bias(self, grid: tuple[int, int] | None = None) -> Tensor | list[Tensor] | None:
        """Relative position bias (1, H, 1 + N, 1 + N) for a patch grid: shared, or one per block."""
        if self.rel_pos is None:
            return None
        if isinstance(self.rel_pos, nn.ModuleList):
            return [bias(grid) for bias in self.rel_pos]
        return self.rel_pos(grid)

    def forward(self, images: Tensor, mask: Tensor | None = None, return_layers: str | None = None):
        """images: (B, C, H, W); mask: bool (B, N), True = patch replaced by the mask token."""
        grid = self.embed.grid_of(images)
        x = self.embed(images, mask)  # (B, 1 + N, D)
        return self.encoder(x, attn_bias=self.attn_bias(grid), return_layers=return_layers)

    def forward_visible(self, images: Tensor, visible: Tensor, return_layers: str | None = None):
        """images (B, C, H, W); visible: bool (B * M, N), True = the patch enters the student.
        Returns the encoder output (B * M, 1 + K, D): CLS, then the visible patches in row-major order."""
        if self.rel_pos is not None:
            raise ValueError("the visible-only path needs absolute positions: a relative position bias is indexed "
                             "by grid position, which the gathered patches no longer have; build the encoder "
                             "with position='sincos' (data2vec 2.0) or 'learned'")
        x, filler = self.embed.forward_visible(images, visible)  # (B * M, 1 + K, D)
        return self.encoder(x, padding_mask=filler, return_layers=return_layers)


class AudioTransformer(nn.Module):
    """waveforms (B, S) [+ lengths (B,)] -> frame features (B, T, D), one frame per 20 ms.

    Every output also has a frame padding mask, `frame_padding(lengths, T)` (True = padded frame): the
    outputs at padded frames are meaningless and must not be read."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        if cfg.modality != "audio":
            raise ValueError(f"AudioTransformer needs an audio config, got modality={cfg.modality!r}")
        self.cfg = cfg
        self.embed = WaveformEmbedding(cfg)
        self.encoder = Encoder(cfg)
        if cfg.alibi:  # data2vec 2.0 audio: learned ALiBi scale per head, init 1 (fairseq alibi_scale)
            self.alibi_scale = nn.Parameter(torch.ones(cfg.heads))
            self.register_buffer("alibi_slopes", alibi_slopes(cfg.heads), persistent=False)
        else:
            self.alibi_scale = None

    def frame_padding(self, lengths: Tensor | None, num_frames: int) -> Tensor | None:
        """bool (B, T), True = padded frame (None without lengths or padding)."""
        return self.embed.frame_padding(lengths, num_frames)

    def attn_bias(self, positions: Tensor) -> Tensor | None:
        """ALiBi bias (B, H, K, K) for frame positions (B, K), or None without ALiBi."""
        return None if self.alibi_scale is None else alibi_bias(positions, self.alibi_slopes, self.alibi_scale)

    def encode(self, x: Tensor, padding: Tensor | None, return_layers: str | None = None):
        """Projected features (B, T, D) -> positional conv, LN, blocks (the part the v1/v2 teachers run)."""
        x = self.embed.contextualize(x, padding)
        positions = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1)  # (B, T)
        return self.encoder(x, padding_mask=padding, attn_bias=self.attn_bias(positions), return_layers=return_layers)

    def forward(self, waveform: Tensor, lengths: Tensor | None = None, mask: Tensor | None = None,
                return_layers: str | None = None):
        """waveform float (B, S), right-padded; lengths long (B,) real samples per row (None = all real);
        mask: bool (B, T) over frames, True = frame replaced by the mask embedding (data2vec v1 student)."""
        x, padding = self.embed.features(waveform, lengths)  # (B, T, D), (B, T) or None
        if mask is not None:
            x = self.embed.apply_mask(x, mask)
        return self.encode(x, padding, return_layers)

    def forward_visible(self, waveform: Tensor, lengths: Tensor | None, visible: Tensor,
                        return_layers: str | None = None):
        """data2vec 2.0's student (released audio encoder): features -> M clones -> masked frames zeroed ->
        positional conv over the whole clone -> keep the visible frames (x + p(x) there) -> LN -> blocks with
        the ALiBi bias of their original positions. visible: bool (B * M, T), True = enters the student (never a
        padded frame). Returns the encoder output (B * M, K, D) over each row's visible frames, in order."""
        x, padding = self.embed.features(waveform, lengths)  # (B, T, D)
        x = repeat_for_masks(x, visible)  # (B * M, T, D)
        padding = None if padding is None else repeat_for_masks(padding, visible)  # (B * M, T)
        if padding is not None and bool((visible & padding).any()):
            raise ValueError("visible marks padded frames; build it as ~mask & ~padding")
        p = self.embed.pos_conv(x * visible[..., None].to(x.dtype), padding)  # masked frames zero (encoder_zero_mask)
        index, filler = visible_index(visible)  # (B * M, K) visible positions in order, (B * M, K) True = filler
        x = torch.gather(x + p, 1, index[..., None].expand(-1, -1, x.shape[-1]))  # (B * M, K, D)
        x = self.embed.dropout(self.embed.norm(x))
        return self.encoder(x, padding_mask=filler, attn_bias=self.attn_bias(index), return_layers=return_layers)


def build_backbone(cfg: EncoderConfig) -> TextTransformer | VisionTransformer | AudioTransformer:
    """Build and initialise the backbone for `cfg` (BERT normal(0.02), or BEiT trunc-normal + depth rescale)."""
    kinds = {"text": TextTransformer, "vision": VisionTransformer, "audio": AudioTransformer}
    model = kinds[cfg.modality](cfg)
    init_weights_(model, cfg.init, cfg.init_std)
    if cfg.modality == "vision":
        model.embed.reset_parameters(cfg.init_std)
    elif cfg.modality == "audio":
        model.embed.reset_parameters()
    if cfg.init == "beit":
        rescale_depth_(model.encoder)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["AudioTransformer", "TextTransformer", "VisionTransformer", "build_backbone", "count_parameters"]
