"""What `speed.py` times: the three encoder stacks, built at one size with identical weights, and their inputs.

- ``ours``:  `data2vec.transformer.Encoder` built from `get_preset("text", "base", ...)` (post-LN);
- ``hf``:    `transformers`' `BertModel(...).encoder` (the `BertEncoder` stack) with
             ``attn_implementation="sdpa"``; its padding mask is built inside the forward with
             `transformers.masking_utils.create_bidirectional_mask`, exactly as `BertModel.forward` does;
- ``torch``: `torch.nn.TransformerEncoder` of `TransformerEncoderLayer(batch_first=True, norm_first=False)`.

All three are post-LN, exact GELU (erf), FFN width 4D, head width 64, LayerNorm eps 1e-5, dropout 0; our
weights are copied into the two references (`copy_weights`: our fused qkv split into BERT's query/key/value,
or kept whole as torch's `in_proj`), and `max_abs_diff` checks that the three compute the same function.
A `Size` is one benchmark size (depth, width, batch; heads = width / 64); `make_inputs` draws the step's
input x, its key-padding mask (variant ``pad``: a random 0-50% tail of every sequence but the first) and
the output gradient g.

This is a sibling module of `speed.py` (the benchmarks are scripts, not a package): `speed.py` imports it
from its own folder. Differences from the original libraries: none in the math; each reference is used
as its library ships it, only its weights are ours.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from data2vec.config import get_preset
from data2vec.transformer import Encoder, init_weights_

IMPLEMENTATIONS = ("ours", "hf", "torch")
VARIANTS = ("nopad", "pad")  # pad: a random 0-50% of every sequence's tail is padding (real batches are padded)
NORM_EPS = 1e-5  # LayerNorm epsilon used by all three (RoBERTa/data2vec-text; BERT uses 1e-12, same cost)


@dataclass(frozen=True)
class Size:
    """One benchmark size: depth K blocks of width D, batch B; heads = D / 64 (BERT head width)."""

    depth: int
    dim: int
    batch: int

    @property
    def heads(self) -> int:
        return self.dim // 64

    @property
    def name(self) -> str:
        return f"{self.depth}x{self.dim}_b{self.batch}"


def make_inputs(
    size: Size, tokens: int, variant: str, device: str, seed: int = 0
) -> tuple[Tensor, Tensor | None, Tensor]:
    """x (B, T, D) float with requires_grad, padding_mask bool (B, T) True = pad (None for "nopad"), g (B, T, D)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; use one of {VARIANTS}")
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(size.batch, tokens, size.dim, generator=gen).to(device).requires_grad_(True)  # (B, T, D)
    g = torch.randn(size.batch, tokens, size.dim, generator=gen).to(device)  # (B, T, D): dLoss/dy
    padding_mask = None
    if variant == "pad":
        # every sequence keeps at least half its tokens; the first one is never padded (full length T)
        lengths = torch.randint(tokens // 2, tokens + 1, (size.batch,), generator=gen)  # (B,)
        lengths[0] = tokens
        padding_mask = (torch.arange(tokens)[None, :] >= lengths[:, None]).to(device)  # (B, T), True = pad
    return x, padding_mask, g


def build_ours(size: Size) -> Encoder:
    cfg = get_preset("text", "base", dim=size.dim, depth=size.depth, heads=size.heads, mlp_ratio=4.0,
                     dropout=0.0, attn_dropout=0.0, norm_eps=NORM_EPS)
    encoder = Encoder(cfg)
    init_weights_(encoder, "bert", cfg.init_std)
    return encoder


def build_hf(size: Size) -> nn.Module:
    """transformers' BertEncoder (the stack of BertModel) with SDPA attention."""
    from transformers import BertConfig, BertModel

    config = BertConfig(
        hidden_size=size.dim, num_hidden_layers=size.depth, num_attention_heads=size.heads,
        intermediate_size=4 * size.dim, hidden_act="gelu", hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, layer_norm_eps=NORM_EPS, vocab_size=8, max_position_embeddings=8,
    )
    model = BertModel._from_config(config, attn_implementation="sdpa", add_pooling_layer=False)
    if model.config._attn_implementation != "sdpa":
        raise RuntimeError(f"BertModel uses {model.config._attn_implementation!r} attention, expected 'sdpa'")
    return model.encoder


def build_torch(size: Size) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        d_model=size.dim, nhead=size.heads, dim_feedforward=4 * size.dim, dropout=0.0, activation="gelu",
        layer_norm_eps=NORM_EPS, batch_first=True, norm_first=False,
    )
    return nn.TransformerEncoder(layer, num_layers=size.depth, enable_nested_tensor=False)


@torch.no_grad()
def copy_weights(ours: Encoder, hf: nn.Module | None = None, tt: nn.TransformerEncoder | None = None) -> None:
    """Copy our block weights into BertEncoder and/or nn.TransformerEncoder (fused qkv -> their layouts)."""
    for i, block in enumerate(ours.blocks):
        a, ffn = block.attn, block.ffn
        w_q, w_k, w_v = a.qkv.weight.chunk(3, dim=0)  # each (D, D), rows = output features
        if hf is not None:
            layer = hf.layer[i]
            for lin, w, b in ((layer.attention.self.query, w_q, a.q_bias), (layer.attention.self.key, w_k, a.k_bias),
                              (layer.attention.self.value, w_v, a.v_bias)):
                lin.weight.copy_(w)
                lin.bias.copy_(b)
            pairs = [(layer.attention.output.dense, a.proj), (layer.attention.output.LayerNorm, block.norm1),
                     (layer.intermediate.dense, ffn.fc1), (layer.output.dense, ffn.fc2),
                     (layer.output.LayerNorm, block.norm2)]
            for dst, src in pairs:
                dst.weight.copy_(src.weight)
                dst.bias.copy_(src.bias)
        if tt is not None:
            layer = tt.layers[i]
            layer.self_attn.in_proj_weight.copy_(a.qkv.weight)  # (3D, D), same q/k/v row order
            layer.self_attn.in_proj_bias.copy_(a.qkv_bias_vector())  # (3D,)
            pairs = [(layer.self_attn.out_proj, a.proj), (layer.norm1, block.norm1), (layer.linear1, ffn.fc1),
                     (layer.linear2, ffn.fc2), (layer.norm2, block.norm2)]
            for dst, src in pairs:
                dst.weight.copy_(src.weight)
                dst.bias.copy_(src.bias)


def forward_fn(impl: str, model: nn.Module, padding_mask: Tensor | None) -> Callable[[Tensor], Tensor]:
    """The stack's forward as x (B, T, D) -> y (B, T, D), with the mask handling each library does itself."""
    if impl == "ours":
        return lambda x: model(x, padding_mask=padding_mask)
    if impl == "hf":
        from transformers.masking_utils import create_bidirectional_mask

        config = model.config
        keep = None if padding_mask is None else (~padding_mask).long()  # (B, T), 1 = real token (HF convention)

        def hf_forward(x: Tensor) -> Tensor:
            mask = (
                None if keep is None else create_bidirectional_mask(config=config, inputs_embeds=x, attention_mask=keep)
            )
            return model(x, attention_mask=mask).last_hidden_state

        return hf_forward
    if impl == "torch":
        return lambda x: model(x, src_key_padding_mask=padding_mask)
    raise ValueError(f"unknown implementation {impl!r}; use one of {IMPLEMENTATIONS}")


def build_all(size: Size, device: str, impls=IMPLEMENTATIONS) -> dict[str, nn.Module]:
    """Build the implementations with identical weights, in train mode, fp32, on `device`."""
    torch.manual_seed(0)
    ours = build_ours(size)
    models = {"ours": ours}
    if "hf" in impls:
        models["hf"] = build_hf(size)
    if "torch" in impls:
        models["torch"] = build_torch(size)
    copy_weights(ours, models.get("hf"), models.get("torch"))
    return {name: models[name].to(device).float().train() for name in impls}


def max_abs_diff(models: dict[str, nn.Module], x: Tensor, padding_mask: Tensor | None) -> dict[str, float]:
    """Largest |y_impl - y_ours| over the real (non-padded) tokens, one forward each."""
    with torch.no_grad():
        ref = forward_fn("ours", models["ours"], padding_mask)(x)
        keep = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if padding_mask is None else ~padding_mask
        return {name: (forward_fn(name, m, padding_mask)(x) - ref)[keep].abs().max().item()
                for name, m in models.items() if name != "ours"}
