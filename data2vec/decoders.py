"""The convolutional decoders of data2vec 2.0 (arXiv 2212.07525, section 3 "Convolutional decoder").

The student's output (visible tokens back at their positions, noise in the masked slots) is decoded by a few
convolutions, not Transformer blocks: `ConvDecoder2d` on the image patch grid (released `Decoder2d`),
`ConvDecoder1d` along a text sequence (released `Decoder1d`). The decoder is dropped for fine-tuning.

Difference from the released code: `ConvDecoder1d` zeroes padded slots at its input and after every block, so
a padded row decodes exactly as the same row without padding (the released text pretraining has no padding).
"""

from __future__ import annotations

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

__all__ = ["ConvDecoder2d", "ConvDecoder1d", "channel_layer_norm", "projection"]




def channel_layer_norm(x: Tensor) -> Tensor:
    """LayerNorm over the channel axis 1 of (B, C, ...), no affine (fairseq LayerNorm, eps 1e-5)."""
    x = x.movedim(1, -1)  # (B, ..., C)
    return F.layer_norm(x, x.shape[-1:]).movedim(-1, 1)  # (B, C, ...)


def projection(width: int, dim: int, ratio: float) -> nn.Module:
    """Linear(width, dim) (ratio 0), or Linear(width, ratio * width) -> GELU -> Linear(ratio * width, dim)."""
    if ratio <= 0:
        return nn.Linear(width, dim)
    hidden = int(width * ratio)
    return nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, dim))


class ConvDecoder2d(nn.Module):
    """Image decoder (released `Decoder2d`): per block h <- h + GELU(LN_c(Conv2d_kxk,groups(h))) on the patch
    grid (the residual only where in/out widths match), then Linear(width, D) per patch. No positions."""

    def __init__(self, dim: int, width: int | None = None, layers: int = 6, kernel: int = 3, groups: int = 16,
                 residual: bool = True):
        super().__init__()
        width = dim if width is None else width
        self.residual = residual
        self.convs = nn.ModuleList(
            nn.Conv2d(dim if i == 0 else width, width, kernel, padding=kernel // 2, groups=groups)
            for i in range(layers)
        )
        self.proj = nn.Linear(width, dim)

    def forward(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        """x: (B, N, D) with N = rows * cols in row-major order -> (B, N, D)."""
        rows, cols = grid
        h = rearrange(x, "b (r c) d -> b d r c", r=rows, c=cols)
        for conv in self.convs:
            y = F.gelu(channel_layer_norm(conv(h)))  # (B, width, rows, cols)
            h = h + y if self.residual and y.shape[1] == h.shape[1] else y
        return self.proj(rearrange(h, "b d r c -> b (r c) d"))


class ConvDecoder1d(nn.Module):
    """Text decoder (released `Decoder1d`): per block h <- GELU(LN_c(Conv1d_k(h))) along the sequence (text:
    no residual), then an MLP projection to D. Padded slots are zero at the input and after every block,
    so padding never reaches a real token (as if the row were unpadded). No positions."""

    def __init__(self, dim: int, width: int | None = None, layers: int = 5, kernel: int = 9, groups: int = 1,
                 residual: bool = False, projection_ratio: float = 2.0):
        super().__init__()
        width = dim if width is None else width
        self.residual = residual
        self.convs = nn.ModuleList(
            nn.Conv1d(dim if i == 0 else width, width, kernel, padding=kernel // 2, groups=groups)
            for i in range(layers)
        )
        self.proj = projection(width, dim, projection_ratio)

    def forward(self, x: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """x: (B, T, D); padding_mask: bool (B, T), True = pad. Returns (B, T, D)."""
        h = rearrange(x, "b t d -> b d t")
        keep = None if padding_mask is None else (~padding_mask)[:, None, :].to(h.dtype)  # (B, 1, T)
        if keep is not None:
            h = h * keep
        for conv in self.convs:
            y = F.gelu(channel_layer_norm(conv(h)))  # (B, width, T)
            h = h + y if self.residual and y.shape[1] == h.shape[1] else y
            if keep is not None:
                h = h * keep
        return self.proj(rearrange(h, "b d t -> b t d"))
