"""Input embeddings: tokens for text, patches for images, and the position schemes.

- `TextEmbedding`: token + learned absolute position (+ optional token type) -> LayerNorm -> dropout,
  as in BERT (Devlin et al. 2019, section 3) and RoBERTa. RoBERTa-style checkpoints (and data2vec-text)
  number positions from `padding_idx + 1 = 2` and give padding tokens the position `padding_idx`; here
  that is `position_offset = 2` (BERT: 0).
- `PatchEmbedding`: a stride-p convolution cuts the image into p x p patches (ViT, Dosovitskiy et al.
  2021, section 3.1); masked patches are replaced by a learned mask embedding (BEiT, Bao et al. 2021,
  section 2.2; data2vec-vision); a CLS token is prepended; then learned, fixed 2-D sin-cos (MAE,
  He et al. 2022) or no absolute positions.
- `RelativePositionBias`: BEiT's learned bias per head and relative offset (dh, dw), plus three entries
  for CLS->patch, patch->CLS and CLS->CLS, added to the attention logits of every block (shared) or of
  one block (per-layer).
- The visible-only path of data2vec 2.0 (arXiv 2212.07525, section 3; MAE's encoder, He et al. 2022,
  section 3): `forward_visible` adds positions to every token, repeats each sample for its M masks, keeps
  only the visible tokens (`masking.visible_index`), then (images) prepends CLS, which carries no position,
  and applies the optional `embed_norm` LayerNorm. Text: token + position -> LayerNorm, repeat, gather,
  dropout (each clone draws its own dropout, as in the released code where dropout follows the gather).

Initialisation: the patch projection is Xavier-uniform as a Linear (MAE; data2vec 2.0), whatever `init`
the rest of the encoder uses (see `PatchEmbedding.reset_parameters`).

Differences from the originals: BEiT multiplies the patch embedding by (1 - w) and adds w * mask_token;
with a bool mask that is the same as replacing, which is what we do with `torch.where`. The visible tokens
of a row keep their original order (fairseq gathers them in `argsort` order; attention does not care).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .config import EncoderConfig
from .masking import visible_index


def repeat_for_masks(x: Tensor, visible: Tensor) -> Tensor:
    """Repeat every sample of x (B, ...) M = visible.shape[0] / B times, clones of one sample adjacent."""
    B = x.shape[0]
    if visible.dim() != 2 or visible.shape[0] % B != 0:
        raise ValueError(f"visible must be bool (B * M, T) for a batch of {B} (M masks per sample, clones of "
                         f"a sample adjacent), got {tuple(visible.shape)}")
    M = visible.shape[0] // B
    return x if M == 1 else x.repeat_interleave(M, dim=0)  # (B * M, ...)


def gather_visible(x: Tensor, visible: Tensor) -> tuple[Tensor, Tensor | None]:
    """x (B, T, D), visible bool (B, T) -> (visible tokens (B, K, D) in order, padding (B, K) or None)."""
    if visible.dtype != torch.bool or tuple(visible.shape) != tuple(x.shape[:2]):
        raise ValueError(f"visible must be bool (B, T) = {tuple(x.shape[:2])} with True = enters the student, "
                         f"got {visible.dtype} {tuple(visible.shape)}")
    index, padding = visible_index(visible)  # (B, K), (B, K) or None
    x = torch.gather(x, 1, index[..., None].expand(-1, -1, x.shape[-1]))  # (B, K, D)
    return x, padding


class TextEmbedding(nn.Module):
    """e_t = LN(E_tok[x_t] + E_pos[p_t] + E_type[s_t]), then dropout."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.pad_id = cfg.pad_id
        self.position_offset = cfg.position_offset
        self.tokens = nn.Embedding(cfg.vocab_size, cfg.dim, padding_idx=cfg.pad_id)
        self.positions = nn.Embedding(cfg.max_positions, cfg.dim)
        self.token_types = nn.Embedding(cfg.type_vocab_size, cfg.dim) if cfg.type_vocab_size > 0 else None
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def position_ids(self, input_ids: Tensor, padding_mask: Tensor | None) -> Tensor:
        """(B, T) position indices. BERT (offset 0): 0..T-1. RoBERTa (offset o > 0): real tokens are
        numbered o, o+1, ... in order and padding gets o - 1 (= padding_idx), as in the released models."""
        B, T = input_ids.shape
        if self.position_offset == 0:
            return torch.arange(T, device=input_ids.device).expand(B, T)
        real = torch.ones_like(input_ids, dtype=torch.long) if padding_mask is None else (~padding_mask).long()
        return torch.cumsum(real, dim=1) * real + (self.position_offset - 1)  # (B, T)

    def forward(self, input_ids: Tensor, padding_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> Tensor:
        return self.dropout(self.features(input_ids, padding_mask, token_type_ids))

    def features(self, input_ids: Tensor, padding_mask: Tensor | None = None,
                 token_type_ids: Tensor | None = None) -> Tensor:
        """LN(tokens + positions + types) (B, T, D), before the dropout."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (B, T), got shape {tuple(input_ids.shape)}")
        T = input_ids.shape[1]
        max_len = self.positions.num_embeddings - self.position_offset
        if T > max_len:
            raise ValueError(f"sequence length {T} exceeds the {max_len} learned positions; "
                             f"truncate the input or build the encoder with a larger max_positions")
        x = self.tokens(input_ids) + self.positions(self.position_ids(input_ids, padding_mask))  # (B, T, D)
        if self.token_types is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            x = x + self.token_types(token_type_ids)
        return self.norm(x)

    def forward_visible(self, input_ids: Tensor, visible: Tensor, padding_mask: Tensor | None = None,
                        token_type_ids: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """The visible-only student input: (x (B * M, K, D), padding (B * M, K) True = filler, or None).

        input_ids (B, T); visible: bool (B * M, T), True = the token enters the student (M masks per sample,
        clones adjacent); it must exclude padding. Positions are numbered on the full sequence."""
        if padding_mask is not None and (visible & repeat_for_masks(padding_mask, visible)).any():
            raise ValueError("visible marks padded tokens; build it as ~mask & ~padding_mask")
        x = self.features(input_ids, padding_mask, token_type_ids)  # (B, T, D): LN(tokens + positions)
        x, padding = gather_visible(repeat_for_masks(x, visible), visible)  # (B * M, K, D)
        return self.dropout(x), padding


def sincos_2d(grid: int | tuple[int, int], dim: int) -> Tensor:
    """Fixed 2-D sin-cos positions (MAE): half the channels encode the row, half the column, each as
    [sin(p w_k), cos(p w_k)] with w_k = 1 / 10000^(k / (D/4)), k = 0..D/4-1.
    grid: g (square) or (rows, cols). Returns (rows * cols, dim) in row-major patch order."""
    if dim % 4 != 0:
        raise ValueError(f"sin-cos positions need dim divisible by 4, got {dim}; use position='learned'")
    n_rows, n_cols = (grid, grid) if isinstance(grid, int) else grid
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))  # (D/4,)
    rows, cols = torch.meshgrid(torch.arange(n_rows, dtype=torch.float64), torch.arange(n_cols, dtype=torch.float64),
                                indexing="ij")

    def encode(p: Tensor) -> Tensor:
        angles = p.reshape(-1, 1) * omega[None, :]  # (N, D/4)
        return torch.cat([angles.sin(), angles.cos()], dim=1)  # (N, D/2)

    return torch.cat([encode(rows), encode(cols)], dim=1).float()  # (N, D)


class PatchEmbedding(nn.Module):
    """Images (B, C, H, W) -> tokens (B, 1 + N, D): [CLS, patch_1, ..., patch_N] (+ absolute positions)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.proj = nn.Conv2d(cfg.in_chans, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.patch_norm = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps) if cfg.patch_norm else None
        self.embed_norm = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps) if cfg.embed_norm else None
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.dim)) if cfg.use_mask_token else None
        n = cfg.num_patches + 1
        if cfg.position == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, n, cfg.dim))
        elif cfg.position == "sincos":
            table = torch.cat([torch.zeros(1, cfg.dim), sincos_2d(cfg.grid_size, cfg.dim)])  # (1 + N, D), CLS = 0
            self.register_buffer("pos_embed", table[None], persistent=False)
        else:  # "relative" (bias in attention) or "none"
            self.pos_embed = None
        self.dropout = nn.Dropout(cfg.dropout)

    def reset_parameters(self, std: float = 0.02) -> None:
        # The patch projection is a Linear(C p p -> D) in disguise: Xavier-uniform on its (D, C p p) view, bias 0
        # (MAE, He et al. 2022, and data2vec 2.0's image encoder). A patch token then has about unit scale for
        # any patch size, as with the PyTorch default BEiT and DINO keep. N(0, 0.02) instead (the BERT init the
        # rest of the encoder gets) makes it 0.02 sqrt(C p p): 0.55 for 16 px patches, but 0.14 for 4 px ones,
        # where the sin-cos positions (RMS 0.71) then swamp the image: every image of a random encoder gives
        # nearly the same CLS (mean cosine 0.98 on CIFAR-10), and DINO's centred teacher goes uniform at once.
        weight = self.proj.weight.data
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))  # (D, C, p, p) viewed as (D, C p p)
        nn.init.zeros_(self.proj.bias)
        if self.cfg.cls_init_std is None:
            nn.init.trunc_normal_(self.cls_token, std=std)
        else:  # data2vec 2.0 released: nn.init.normal_ (std 1)
            nn.init.normal_(self.cls_token, std=self.cfg.cls_init_std)
        if self.mask_token is not None:
            nn.init.trunc_normal_(self.mask_token, std=std)
        if isinstance(self.pos_embed, nn.Parameter):
            nn.init.trunc_normal_(self.pos_embed, std=std)

    def grid_of(self, images: Tensor) -> tuple[int, int]:
        """Patch grid (rows, cols) of a batch; any size divisible by the patch size is accepted
        (DINO's local crops are smaller than the global ones)."""
        cfg = self.cfg
        if images.dim() != 4 or images.shape[1] != cfg.in_chans:
            raise ValueError(
                f"expected images of shape (B, {cfg.in_chans}, H, W), got {tuple(images.shape)}; "
                f"check the channel count (in_chans={cfg.in_chans})"
            )
        H, W = images.shape[-2:]
        if H % cfg.patch_size or W % cfg.patch_size:
            raise ValueError(
                f"image size {H}x{W} is not divisible by the patch size {cfg.patch_size}; resize the images "
                f"(the encoder was built for image_size={cfg.image_size}) or change patch_size"
            )
        return H // cfg.patch_size, W // cfg.patch_size

    def positions_for(self, grid: tuple[int, int]) -> Tensor | None:
        """Absolute positions (1, 1 + rows*cols, D) for a patch grid: the stored table at the configured
        size, bicubic interpolation of the learned table (DINO, ViT fine-tuning at other resolutions)
        or recomputed sin-cos otherwise."""
        if self.pos_embed is None:
            return None
        g = self.cfg.grid_size
        if grid == (g, g):
            return self.pos_embed
        if self.cfg.position == "sincos":
            table = torch.cat([torch.zeros(1, self.cfg.dim), sincos_2d(grid, self.cfg.dim)])  # (1 + N', D)
            return table[None].to(self.pos_embed.device)
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]  # (1, 1, D), (1, N, D)
        patch_pos = rearrange(patch_pos, "1 (h w) d -> 1 d h w", h=g, w=g)
        patch_pos = F.interpolate(patch_pos, size=grid, mode="bicubic", align_corners=False)  # (1, D, rows, cols)
        patch_pos = rearrange(patch_pos, "1 d h w -> 1 (h w) d")  # (1, N', D)
        return torch.cat([cls_pos, patch_pos], dim=1)

    def forward(self, images: Tensor, mask: Tensor | None = None) -> Tensor:
        """images: (B, C, H, W); mask: bool (B, N), True = this patch is masked (replaced by the mask token)."""
        grid = self.grid_of(images)
        x = self.patches(images)  # (B, N, D)
        if mask is not None:
            if self.mask_token is None:
                raise ValueError("a patch mask was given but the encoder has no mask token; set use_mask_token=True")
            if mask.dtype != torch.bool or mask.shape != x.shape[:2]:
                raise ValueError(f"mask must be bool (B, N) = {tuple(x.shape[:2])}, "
                                 f"got {mask.dtype} {tuple(mask.shape)}")
            x = torch.where(mask[..., None], self.mask_token.to(x.dtype), x)  # (B, N, D)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)  # (B, 1 + N, D)
        positions = self.positions_for(grid)
        if positions is not None:
            x = x + positions.to(x.dtype)
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        return self.dropout(x)

    def patches(self, images: Tensor) -> Tensor:
        """(B, C, H, W) -> patch embeddings (B, N, D), row-major, after the optional patch norm."""
        x = rearrange(self.proj(images), "b d h w -> b (h w) d")  # (B, N, D)
        return x if self.patch_norm is None else self.patch_norm(x)

    def forward_visible(self, images: Tensor, visible: Tensor) -> tuple[Tensor, Tensor | None]:
        """The visible-only student input (data2vec 2.0): (x (B * M, 1 + K, D), padding (B * M, 1 + K) or None).

        images (B, C, H, W); visible: bool (B * M, N), True = the patch enters the student (M masks per
        sample, clones adjacent). Order: patches + positions (all N) -> repeat M -> keep the visible ones
        -> prepend CLS (no position: the CLS row of the table, zero for sin-cos) -> embed_norm -> dropout."""
        if self.mask_token is not None:
            raise ValueError("the visible-only path drops masked patches; an encoder with use_mask_token=True "
                             "replaces them instead (data2vec v1): set use_mask_token=False")
        grid = self.grid_of(images)
        x = self.patches(images)  # (B, N, D)
        cls = self.cls_token.to(x.dtype)  # (1, 1, D)
        positions = self.positions_for(grid)  # (1, 1 + N, D) or None
        if positions is not None:
            x = x + positions[:, 1:].to(x.dtype)  # positions before the gather
            cls = cls + positions[:, :1].to(x.dtype)
        x, padding = gather_visible(repeat_for_masks(x, visible), visible)  # (B * M, K, D)
        x = torch.cat([cls.expand(x.shape[0], -1, -1), x], dim=1)  # (B * M, 1 + K, D): CLS after the gather
        if padding is not None:
            padding = F.pad(padding, (1, 0), value=False)  # (B * M, 1 + K): CLS is never padding
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        return self.dropout(x), padding


class RelativePositionBias(nn.Module):
    """BEiT relative position bias for a g x g patch grid plus a CLS token.

    A table of (2g - 1)^2 + 3 rows x H heads: row (dh + g - 1) * (2g - 1) + (dw + g - 1) for the offset
    (dh, dw) = (i_row - j_row, i_col - j_col) between patches i and j, then one row each for
    CLS -> patch, patch -> CLS and CLS -> CLS. forward() returns the bias (1, H, 1 + N, 1 + N).
    A smaller grid (DINO's local crops) reuses the same table: its offsets are a subset."""

    def __init__(self, grid: int, heads: int):
        super().__init__()
        self.grid = grid
        span = 2 * grid - 1
        self.num_relative = span * span
        self.table = nn.Parameter(torch.zeros(self.num_relative + 3, heads))  # zeros: BEiT's init
        self.register_buffer("index", self.build_index((grid, grid)), persistent=False)

    def build_index(self, grid: tuple[int, int]) -> Tensor:
        """(1 + N, 1 + N) row of the table for every (query, key) pair of a rows x cols grid."""
        n_rows, n_cols = grid
        if n_rows > self.grid or n_cols > self.grid:
            raise ValueError(f"a {n_rows}x{n_cols} patch grid is larger than the {self.grid}x{self.grid} grid the "
                             f"relative position table was built for; use images no larger than the configured size")
        g, span = self.grid, 2 * self.grid - 1
        rows, cols = torch.meshgrid(torch.arange(n_rows), torch.arange(n_cols), indexing="ij")
        coords = torch.stack([rows.flatten(), cols.flatten()])  # (2, N)
        rel = coords[:, :, None] - coords[:, None, :]  # (2, N, N): (dh, dw) of query i vs key j
        index = (rel[0] + g - 1) * span + (rel[1] + g - 1)  # (N, N)
        n = n_rows * n_cols + 1
        full = torch.empty(n, n, dtype=torch.long)
        full[1:, 1:] = index
        full[0, 1:] = self.num_relative  # CLS query -> patch keys
        full[1:, 0] = self.num_relative + 1  # patch queries -> CLS key
        full[0, 0] = self.num_relative + 2  # CLS -> CLS
        return full

    def forward(self, grid: tuple[int, int] | None = None) -> Tensor:
        index = self.index if grid is None or grid == (self.grid, self.grid) else \
            self.build_index(grid).to(self.table.device)
        n = index.shape[0]
        bias = self.table[index.reshape(-1)].reshape(n, n, -1)  # (1 + N, 1 + N, H)
        return rearrange(bias, "i j h -> 1 h i j")  # (1, H, 1 + N, 1 + N)
