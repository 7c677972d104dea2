"""The one Transformer core shared by data2vec, BERT, DINO and the supervised baseline.

Implements the encoder of "Attention Is All You Need" (Vaswani et al. 2017) in the two orderings the
data2vec paper (arXiv 2202.03555, section 4) builds on:

- post-LN (BERT / RoBERTa / data2vec-text):
    h = LN1(x + Drop(Attn(x)));  f = FFN(h);  out = LN2(h + Drop(f))
- pre-LN (ViT / BEiT / data2vec-vision):
    x' = x + DropPath(g1 * Drop(Attn(LN1(x))));  f = FFN(LN2(x'));  out = x' + DropPath(g2 * Drop(f))

with FFN(x) = W2 GELU(W1 x + b1) + b2 and optional layer scale g (BEiT, Touvron et al. 2021 "CaiT").
`Encoder.forward(..., return_layers="ffn")` returns every block's f (the data2vec-text target: FFN output
before dropout, layer scale and residual) and `"block"` every block's out (the data2vec-vision target).

Differences from the originals: one fused q/k/v projection (BERT has three linears; importing
checkpoints concatenates them), the "no key bias" of BEiT is a zero buffer instead of a missing
parameter, attention goes through `scaled_dot_product_attention` except for short sequences on a CPU (the same
formula written out, faster there: `explicit_attention`), and there is no dropout
inside the FFN (none of BERT, RoBERTa, ViT or BEiT-as-used-by-data2vec has it at pretraining).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .config import EncoderConfig

RETURN_LAYERS = (None, "ffn", "block")


def padding_to_attn_mask(padding_mask: Tensor | None, attn_bias: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """Combine a key-padding mask and an additive bias into one mask for scaled_dot_product_attention.

    padding_mask: bool (B, T), True = padding (never attended to).
    attn_bias:    float (B or 1, H or 1, T, T) added to the attention logits, or None.
    Returns None (fast path), a bool mask (B, 1, 1, T) with True = may attend, or a float additive mask.
    """
    if padding_mask is None:
        return None if attn_bias is None else attn_bias.to(dtype)
    keep = ~padding_mask[:, None, None, :]  # (B, 1, 1, T), True = key may be attended to
    if attn_bias is None:
        return keep
    return attn_bias.to(dtype).masked_fill(~keep, float("-inf"))


def check_padding_mask(padding_mask: Tensor | None, shape) -> None:
    """Assert at the boundary that a padding mask is bool (B, T) with True = padding."""
    if padding_mask is not None and (padding_mask.dtype != torch.bool or tuple(padding_mask.shape) != tuple(shape)):
        raise ValueError(
            f"padding_mask must be bool (B, T) = {tuple(shape)} with True = padding, "
            f"got {padding_mask.dtype} {tuple(padding_mask.shape)}; build it as input_ids == pad_id"
        )


# On a CPU, `explicit_attention` is faster than torch's fused kernel for short float32 sequences and, in bf16, at
# every length measured (benchmarks/README.md, "Attention on the CPU"): float32 sequences up to
# EXPLICIT_ATTENTION_MAX_T and bf16 ones up to EXPLICIT_ATTENTION_MAX_T_BF16 take it. Longer ones keep the fused
# kernel, which never holds the (B, H, T, T) matrix for backward.
EXPLICIT_ATTENTION_MAX_T = 48
EXPLICIT_ATTENTION_MAX_T_BF16 = 256


def takes_explicit_attention(q: Tensor, dropout_p: float) -> bool:
    """Whether `Attention` computes softmax(QK^T)V written out (CPU, no attention dropout, short enough)."""
    if q.device.type != "cpu" or dropout_p > 0.0:
        return False
    limit = EXPLICIT_ATTENTION_MAX_T_BF16 if q.dtype == torch.bfloat16 else EXPLICIT_ATTENTION_MAX_T
    return q.shape[-2] <= limit


def explicit_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """softmax(Q K^T / sqrt(d_h) + bias) V written out, with `padding_to_attn_mask`'s mask (bool: True = may attend;
    float: added to the logits). Under autocast the products run in bf16 and the softmax in float32.
    q, k, v: (B, H, T, d_h) -> (B, H, T, d_h)."""
    logits = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # (B, H, T, T)
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else logits + mask
    return logits.softmax(-1).to(v.dtype) @ v


class Attention(nn.Module):
    """Multi-head self-attention: softmax(Q K^T / sqrt(d_h) + bias) V, heads concatenated, projected."""

    def __init__(self, dim: int, heads: int, *, qkv_bias: bool = True, k_bias: bool = True, attn_dropout: float = 0.0):
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"Attention: dim={dim} is not divisible by heads={heads}; choose heads that divide dim")
        self.heads = heads
        self.attn_dropout = attn_dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
            if k_bias:
                self.k_bias = nn.Parameter(torch.zeros(dim))
            else:  # BEiT: the key projection has no bias; a constant zero keeps one fused matmul
                self.register_buffer("k_bias", torch.zeros(dim), persistent=False)
        else:
            self.q_bias = self.k_bias = self.v_bias = None
        self.proj = nn.Linear(dim, dim)

    def qkv_bias_vector(self) -> Tensor | None:
        if self.q_bias is None:
            return None
        return torch.cat([self.q_bias, self.k_bias, self.v_bias])  # (3D,)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x: (B, T, D); mask: as returned by `padding_to_attn_mask`."""
        B, T, D = x.shape
        qkv = F.linear(x, self.qkv.weight, self.qkv_bias_vector())  # (B, T, 3D)
        qkv = rearrange(qkv, "b t (three h e) -> b t three h e", three=3, h=self.heads)  # a view
        # split on the q/k/v axis, then move heads forward; unbinding dim 2 (not a permuted dim 0) lets
        # backward stack the three gradients straight into qkv's layout, saving one (B, T, 3D) copy
        q, k, v = (rearrange(t, "b t h e -> b h t e") for t in qkv.unbind(2))  # each (B, H, T, D/H)
        dropout_p = self.attn_dropout if self.training else 0.0
        if takes_explicit_attention(q, dropout_p):
            out = explicit_attention(q, k, v, mask)  # (B, H, T, D/H)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)  # (B, H, T, D/H)
        out = rearrange(out, "b h t e -> b t (h e)")  # (B, T, D): heads concatenated
        return self.proj(out)


class FeedForward(nn.Module):
    """FFN(x) = W2 GELU(W1 x + b1) + b2."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): drop the whole residual branch per sample, rescale the rest."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)  # (B, 1, 1): one draw per sample
        return x * x.new_empty(shape).bernoulli_(keep) / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Block(nn.Module):
    """One Transformer block, post-LN (norm_first=False) or pre-LN (norm_first=True); see the module docstring."""

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float = 4.0,
        norm_first: bool = False,
        layer_scale: float | None = None,
        drop_path: float = 0.0,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        qkv_bias: bool = True,
        k_bias: bool = True,
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        if layer_scale is not None and not norm_first:
            raise ValueError("Block: layer_scale needs norm_first=True (pre-LN); set layer_scale=None for post-LN")
        self.norm_first = norm_first
        self.attn = Attention(dim, heads, qkv_bias=qkv_bias, k_bias=k_bias, attn_dropout=attn_dropout)
        self.ffn = FeedForward(dim, int(dim * mlp_ratio))
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.dropout = nn.Dropout(dropout)
        self.drop_path = DropPath(drop_path)
        if layer_scale is not None:
            self.gamma1 = nn.Parameter(torch.full((dim,), float(layer_scale)))
            self.gamma2 = nn.Parameter(torch.full((dim,), float(layer_scale)))
        else:
            self.gamma1 = self.gamma2 = None

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Returns (block output, FFN output f before dropout / layer scale / residual), both (B, T, D)."""
        if self.norm_first:
            a = self.dropout(self.attn(self.norm1(x), mask))
            x = x + self.drop_path(a if self.gamma1 is None else self.gamma1 * a)
            f = self.ffn(self.norm2(x))
            b = self.dropout(f)
            out = x + self.drop_path(b if self.gamma2 is None else self.gamma2 * b)
        else:
            h = self.norm1(x + self.drop_path(self.dropout(self.attn(x, mask))))
            f = self.ffn(h)
            out = self.norm2(h + self.drop_path(self.dropout(f)))
        return out, f


class Encoder(nn.Module):
    """A stack of blocks plus an optional final norm (pre-LN only)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        rates = [cfg.drop_path * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]  # linear over depth (timm)
        self.blocks = nn.ModuleList(
            Block(
                cfg.dim, cfg.heads, cfg.mlp_ratio, norm_first=cfg.norm_first, layer_scale=cfg.layer_scale,
                drop_path=rate, dropout=cfg.dropout, attn_dropout=cfg.attn_dropout, qkv_bias=cfg.qkv_bias,
                k_bias=cfg.k_bias, norm_eps=cfg.norm_eps,
            )
            for rate in rates
        )
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps) if cfg.final_norm else nn.Identity()

    def forward(
        self,
        x: Tensor,
        padding_mask: Tensor | None = None,
        attn_bias: Tensor | Sequence[Tensor] | None = None,
        return_layers: str | None = None,
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Encode x (B, T, D).

        padding_mask: bool (B, T), True = padding; padded keys are never attended to.
        attn_bias: additive attention bias (B or 1, H, T, T) shared by all blocks, or one per block.
        return_layers: None -> the final output only; "ffn" -> (final, [f of every block]);
            "block" -> (final, [output of every block]). The final output includes the final norm.
        """
        if return_layers not in RETURN_LAYERS:
            raise ValueError(f"return_layers must be one of {RETURN_LAYERS}, got {return_layers!r}")
        if x.dim() != 3 or x.shape[-1] != self.cfg.dim:
            raise ValueError(f"Encoder expects (B, T, {self.cfg.dim}) inputs, got {tuple(x.shape)}")
        check_padding_mask(padding_mask, x.shape[:2])
        per_block = isinstance(attn_bias, (list, tuple))
        if per_block and len(attn_bias) != len(self.blocks):
            raise ValueError(f"got {len(attn_bias)} attention biases for {len(self.blocks)} blocks")
        shared_mask = None if per_block else padding_to_attn_mask(padding_mask, attn_bias, x.dtype)
        layers: list[Tensor] = []
        for i, block in enumerate(self.blocks):
            mask = padding_to_attn_mask(padding_mask, attn_bias[i], x.dtype) if per_block else shared_mask
            x, f = block(x, mask)
            if return_layers == "ffn":
                layers.append(f)
            elif return_layers == "block":
                layers.append(x)
        x = self.norm(x)
        return x if return_layers is None else (x, layers)


# ---------------------------------------------------------------------------------------------------
# Initialisation
# ---------------------------------------------------------------------------------------------------


def init_weights_(module: nn.Module, scheme: str = "bert", std: float = 0.02) -> None:
    """BERT: Linear/Embedding ~ N(0, std), biases 0, LayerNorm (1, 0).
    BEiT: truncated normal(std) in [-2 std, 2 std] instead of the plain normal; call
    `rescale_depth_` afterwards for BEiT's depth rescaling."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding, nn.Conv2d)):
            if scheme == "beit":
                nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
            else:
                nn.init.normal_(m.weight, std=std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
            if isinstance(m, nn.Embedding) and m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()
        elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, Attention) and m.q_bias is not None:
            nn.init.zeros_(m.q_bias)
            nn.init.zeros_(m.v_bias)
            if isinstance(m.k_bias, nn.Parameter):
                nn.init.zeros_(m.k_bias)


def rescale_depth_(encoder: Encoder) -> None:
    """BEiT (Bao et al. 2021, section 2.5 / released code): divide the output projections of block l
    (attention proj and FFN fc2, l = 1..L) by sqrt(2 l), so deeper residual branches start smaller."""
    with torch.no_grad():
        for layer_id, block in enumerate(encoder.blocks, start=1):
            block.attn.proj.weight.div_(math.sqrt(2.0 * layer_id))
            block.ffn.fc2.weight.div_(math.sqrt(2.0 * layer_id))


def compile_blocks(module: nn.Module, **options) -> None:
    """`torch.compile` every Transformer `Block` inside `module`, in place (`options` go to `torch.compile`).

    Regional compilation (PyTorch's recipe for repeated layers): the blocks share one code object, so dynamo
    compiles a block once per kind of call (training with gradients, no_grad, another batch size) and every
    block of every encoder in the process reuses it; compiling the whole encoder instead traces and builds
    kernels for all its blocks at once, a cost that grows with the depth. The embeddings, the final norm and
    the methods' heads stay eager; they are a small share of an update. In place, so the state-dict keys
    (checkpoints) are those of an eager model."""
    for block in [m for m in module.modules() if isinstance(m, Block)]:
        block.compile(**options)
