"""The speech input encoder: raw 16 kHz waveform -> frame features (B, T, D) for the Transformer blocks.

data2vec (arXiv 2202.03555), section 4.3 "Speech processing", reuses wav2vec 2.0's input side (Baevski et al.
2020, section 2 "Feature encoder"), with data2vec-audio's multi-layer positional convolution (released fairseq
`examples/data2vec/models/data2vec_audio.py`, config `audio/pretraining/base_librispeech.yaml`; transformers
`Data2VecAudioModel`; docs/design.md section 10):

1. per-utterance normalisation over the real samples: x <- (x - mean) / sqrt(var + eps)   (`normalize_waveform`);
2. feature encoder: 7 x [Conv1d(no bias) -> LayerNorm over channels (affine) -> GELU], kernels (10,3,3,3,3,2,2),
   strides (5,2,2,2,2,2,2): one frame per 320 samples (20 ms), each seeing 400 samples (25 ms);
3. projection: LayerNorm(C) -> Linear(C, D) -> dropout;
4. (student of data2vec v1) masked frames replaced by a learned vector `mask_emb` (HF `masked_spec_embed`);
5. positional convolution, added to its input: p = stack of L x [Conv1d(D, D, k, groups g, "same" padding)
   -> LayerNorm (no affine) -> GELU]; x <- LN(x + p(x)) -> dropout;
6. (data2vec 2.0, released `use_alibi_encoder`) ALiBi attention biases (Press et al. 2022, symmetric as in
   fairseq's `get_alibi`): b_hij = -c_h m_h |i - j| with the ALiBi slopes m_h (`alibi_slopes`) and a learned
   scale c_h >= 0 per head (init 1, `learned_alibi_scale_per_head`), the same in every block (`alibi_bias`).

Frame-level padding (`frame_padding_mask`): a frame is real when its whole receptive field lies inside the
utterance. With the conv output length L_out = floor((L_in - k) / s) + 1 applied layer by layer, frames
0 .. L_out - 1 are real and the rest are padding, which never enters attention, a target, a loss or a statistic.

Differences from the originals:
- `pos_conv_zero_pads=True` (default) zeroes the padded frames before every positional-conv layer, so a real
  frame near the end of a short utterance sees exactly what it sees without padding. fairseq and transformers
  zero them only before the first layer, so in a padded batch layers 2..5 read GELU(LN(bias + neighbours)) from
  the padding (HF issue #25621); `pos_conv_zero_pads=False` reproduces that, for parity on padded batches.
- normalisation eps 1e-5 (fairseq's `F.layer_norm(wav, wav.shape)`; the HF feature extractor uses 1e-7).
- with an even positional kernel the last output frame is dropped (fairseq `SamePad`), as released.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .config import EncoderConfig

__all__ = ["alibi_bias", "alibi_slopes", "conv_output_lengths", "frame_padding_mask", "normalize_waveform",
           "FeatureEncoder", "PositionalConv", "WaveformEmbedding", "WAVEFORM_EPS"]

WAVEFORM_EPS = 1e-5  # fairseq: F.layer_norm(wav, wav.shape), default eps


# ---------------------------------------------------------------------------------------------------
# lengths, padding and normalisation
# ---------------------------------------------------------------------------------------------------


def conv_output_lengths(lengths: Tensor, kernels: tuple[int, ...], strides: tuple[int, ...]) -> Tensor:
    """Frames per utterance after the conv stack: L <- floor((L - k) / s) + 1 per layer (at least 0)."""
    for kernel, stride in zip(kernels, strides, strict=True):
        lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
    return lengths.clamp(min=0)


def frame_padding_mask(lengths: Tensor | None, num_frames: int, kernels: tuple[int, ...],
                       strides: tuple[int, ...]) -> Tensor | None:
    """bool (B, T), True = padded frame (its receptive field runs past the utterance), or None without lengths."""
    if lengths is None:
        return None
    frames = conv_output_lengths(lengths, kernels, strides)  # (B,)
    return torch.arange(num_frames, device=lengths.device)[None, :] >= frames[:, None]  # (B, T)


def check_lengths(waveform: Tensor, lengths: Tensor | None) -> None:
    """Assert at the boundary: waveform float (B, S); lengths long (B,) in [1, S] (None = every sample real)."""
    if waveform.dim() != 2 or not waveform.is_floating_point():
        raise ValueError(f"waveform must be float (B, S) samples, got {waveform.dtype} {tuple(waveform.shape)}; "
                         "batch mono 16 kHz audio as rows, right-padded")
    if lengths is None:
        return
    if lengths.dim() != 1 or lengths.shape[0] != waveform.shape[0] or lengths.is_floating_point():
        raise ValueError(f"lengths must be an integer tensor (B,) = ({waveform.shape[0]},) of real samples per row, "
                         f"got {lengths.dtype} {tuple(lengths.shape)}")
    if bool((lengths < 1).any()) or bool((lengths > waveform.shape[1]).any()):
        raise ValueError(f"lengths must lie in [1, {waveform.shape[1]}] (the padded length), got "
                         f"{lengths.tolist()}; drop empty utterances from the batch")


def sample_padding(waveform: Tensor, lengths: Tensor | None) -> Tensor | None:
    """bool (B, S), True = padded sample, or None."""
    if lengths is None:
        return None
    return torch.arange(waveform.shape[1], device=waveform.device)[None, :] >= lengths[:, None].to(waveform.device)


def normalize_waveform(waveform: Tensor, lengths: Tensor | None = None, eps: float = WAVEFORM_EPS) -> Tensor:
    """x_bs <- (x_bs - mu_b) / sqrt(var_b + eps), mu_b and the biased var_b over the real samples of row b;
    padded samples become 0. waveform (B, S); lengths (B,) real samples per row (None = all)."""
    check_lengths(waveform, lengths)
    x = waveform.float()
    pad = sample_padding(x, lengths)
    real = torch.ones_like(x) if pad is None else (~pad).to(x.dtype)  # (B, S) 1 = real sample
    count = real.sum(dim=1, keepdim=True)  # (B, 1)
    mean = (x * real).sum(dim=1, keepdim=True) / count  # (B, 1)
    var = ((x - mean) ** 2 * real).sum(dim=1, keepdim=True) / count  # (B, 1)
    return ((x - mean) / torch.sqrt(var + eps) * real).to(waveform.dtype)


def alibi_slopes(heads: int) -> Tensor:
    """ALiBi's head slopes m_h: 2^(-8 h / n), h = 1..n, for n a power of two; otherwise those of the nearest
    lower power of two p, then every other slope of 2p for the rest (ALiBi paper / fairseq `get_slopes`)."""
    def powers_of_two(n: int) -> list[float]:
        return [2.0 ** (-8.0 * h / n) for h in range(1, n + 1)]

    lower = 2 ** (heads.bit_length() - 1)  # largest power of two <= heads
    slopes = powers_of_two(lower) + powers_of_two(2 * lower)[0::2][: heads - lower]
    return torch.tensor(slopes)


def alibi_bias(positions: Tensor, slopes: Tensor, scale: Tensor) -> Tensor:
    """The additive attention bias (B, H, K, K): b_hij = -max(c_h, 0) m_h |p_i - p_j| for the frame positions
    p (B, K) (long; the visible frames' original indices for data2vec 2.0's visible-only student)."""
    distance = (positions[:, :, None] - positions[:, None, :]).abs().float()  # (B, K, K)
    per_head = -(scale.clamp(min=0) * slopes.to(scale.device)).float()  # (H,)
    return distance[:, None] * per_head[None, :, None, None]  # (B, H, K, K)


# ---------------------------------------------------------------------------------------------------
# the modules
# ---------------------------------------------------------------------------------------------------


class ConvLayer(nn.Module):
    """h <- GELU(LN_c(Conv1d(h))): one feature-encoder layer (fairseq extractor_mode "layer_norm")."""

    def __init__(self, in_dim: int, out_dim: int, kernel: int, stride: int):
        super().__init__()
        self.conv = nn.Conv1d(in_dim, out_dim, kernel, stride=stride, bias=False)
        self.layer_norm = nn.LayerNorm(out_dim)  # affine, eps 1e-5 (fairseq Fp32LayerNorm, HF default)

    def forward(self, h: Tensor) -> Tensor:
        """h (B, C_in, S) -> (B, C_out, S')."""
        h = self.conv(h)  # (B, C, S')
        h = rearrange(self.layer_norm(rearrange(h, "b c s -> b s c")), "b s c -> b c s")  # LN over channels
        return F.gelu(h)


class FeatureEncoder(nn.Module):
    """waveform (B, S) -> conv features (B, T, C), T = conv_output_lengths(S)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        dims = [1] + [cfg.conv_dim] * len(cfg.conv_kernels)
        self.layers = nn.ModuleList(ConvLayer(dims[i], dims[i + 1], k, s)
                                    for i, (k, s) in enumerate(zip(cfg.conv_kernels, cfg.conv_strides, strict=True)))

    def forward(self, waveform: Tensor) -> Tensor:
        h = waveform[:, None, :]  # (B, S) -> (B, 1, S)
        for layer in self.layers:
            h = layer(h)
        return rearrange(h, "b c t -> b t c")  # (B, T, C)


class PositionalConv(nn.Module):
    """The relative positional encoder of data2vec-audio: p(x) = L x [GELU(LN(Conv1d_k,g(x)))], x (B, T, D).

    Padded frames (padding_mask True) are zero before every layer (`zero_pads=True`) or before the first only
    (fairseq / transformers); conv padding is zero, so with zeros at the pads a real frame sees what it sees
    when the utterance is alone."""

    def __init__(self, dim: int, depth: int, kernel: int, groups: int, zero_pads: bool = True):
        super().__init__()
        self.zero_pads = zero_pads
        self.trim = 1 if kernel % 2 == 0 else 0  # SamePad: an even kernel makes one extra frame
        self.layers = nn.ModuleList(nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=groups)
                                    for _ in range(depth))

    def forward(self, x: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        keep = None if padding_mask is None else (~padding_mask)[:, None, :].to(x.dtype)  # (B, 1, T)
        h = rearrange(x, "b t d -> b d t")
        for i, conv in enumerate(self.layers):
            if keep is not None and (i == 0 or self.zero_pads):
                h = h * keep
            h = conv(h)  # (B, D, T + trim)
            if self.trim:
                h = h[..., :-self.trim]  # (B, D, T)
            h = F.gelu(F.layer_norm(rearrange(h, "b d t -> b t d"), h.shape[1:2]))  # LN over D, no affine
            h = rearrange(h, "b t d -> b d t")
        return rearrange(h, "b d t -> b t d")  # (B, T, D)


class WaveformEmbedding(nn.Module):
    """waveform (B, S) [+ lengths (B,)] -> the Transformer input (B, T, D) and the frame padding mask (B, T).

    Steps: `features` (normalise, conv encoder, projection; the v1 teacher reads these unmasked) ->
    `mask` (v1 student: mask_emb at the masked frames) -> `contextualize` (positional conv, LN, dropout)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.feature_encoder = FeatureEncoder(cfg)
        self.proj_norm = nn.LayerNorm(cfg.conv_dim, eps=cfg.norm_eps)
        self.proj = nn.Linear(cfg.conv_dim, cfg.dim)
        self.feature_dropout = nn.Dropout(cfg.feature_dropout)
        self.mask_emb = nn.Parameter(torch.zeros(cfg.dim)) if cfg.use_mask_token else None
        self.pos_conv = PositionalConv(cfg.dim, cfg.pos_conv_depth, cfg.pos_conv_kernel, cfg.pos_conv_groups,
                                       cfg.pos_conv_zero_pads)
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def reset_parameters(self) -> None:
        """fairseq / HF: Kaiming-normal feature-encoder convs, PyTorch's default for the positional convs (their
        bias zero, as in HF), mask_emb ~ U[0, 1); the projection keeps the encoder's init (BERT normal 0.02)."""
        for layer in self.feature_encoder.layers:
            nn.init.kaiming_normal_(layer.conv.weight)
        for conv in self.pos_conv.layers:
            conv.reset_parameters()
            nn.init.zeros_(conv.bias)
        if self.mask_emb is not None:
            nn.init.uniform_(self.mask_emb)

    def frame_padding(self, lengths: Tensor | None, num_frames: int) -> Tensor | None:
        """bool (B, T), True = padded frame; None when there are no lengths or no frame is padded."""
        pad = frame_padding_mask(lengths, num_frames, self.cfg.conv_kernels, self.cfg.conv_strides)
        return pad if pad is not None and bool(pad.any()) else None

    def features(self, waveform: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """(projected frame features (B, T, D), frame padding (B, T) or None); padded frames are zero."""
        check_lengths(waveform, lengths)
        if waveform.shape[1] < self.cfg.receptive_field:
            raise ValueError(f"a waveform of {waveform.shape[1]} samples is shorter than one frame's receptive field "
                             f"({self.cfg.receptive_field} samples); use longer audio")
        if self.cfg.normalize_waveform:
            waveform = normalize_waveform(waveform, lengths)
        if lengths is not None and bool((conv_output_lengths(lengths, self.cfg.conv_kernels,
                                                             self.cfg.conv_strides) < 1).any()):
            raise ValueError(f"an utterance is shorter than one frame ({self.cfg.receptive_field} samples); lengths "
                             f"{lengths.tolist()}: drop it from the batch")
        c = self.feature_encoder(waveform)  # (B, T, C)
        x = self.feature_dropout(self.proj(self.proj_norm(c)))  # (B, T, D)
        padding = self.frame_padding(lengths, x.shape[1])
        if padding is not None:
            x = x.masked_fill(padding[..., None], 0.0)
        return x, padding

    def apply_mask(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (B, T, D); mask bool (B, T), True = masked: the frame becomes the learned mask_emb."""
        if self.mask_emb is None:
            raise ValueError("a frame mask was given but the encoder has no mask embedding; set use_mask_token=True")
        if mask.dtype != torch.bool or mask.shape != x.shape[:2]:
            raise ValueError(f"mask must be bool (B, T) = {tuple(x.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}")
        return torch.where(mask[..., None], self.mask_emb.to(x.dtype), x)  # (B, T, D)

    def contextualize(self, x: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """x <- dropout(LN(x + p(x))): the positional convolution added, then the encoder LayerNorm."""
        if padding_mask is not None:
            x = x.masked_fill(padding_mask[..., None], 0.0)  # fairseq / HF: padded frames are zero here
        if len(self.pos_conv.layers) > 0:
            x = x + self.pos_conv(x, padding_mask)
        return self.dropout(self.norm(x))

    def forward(self, waveform: Tensor, lengths: Tensor | None = None,
                mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """-> (x (B, T, D), frame padding (B, T) or None)."""
        x, padding = self.features(waveform, lengths)
        if mask is not None:
            x = self.apply_mask(x, mask)
        return self.contextualize(x, padding), padding

