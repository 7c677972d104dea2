# %% [markdown]
# # The Transformer core, from attention up
#
# Every method in this project (data2vec, BERT, DINO, the supervised baseline) trains the same encoder,
# `data2vec/transformer.py`: about 250 lines that implement the encoder of "Attention Is All You Need"
# (Vaswani et al. 2017) in the two orderings the data2vec paper builds on (arXiv 2202.03555, section 4):
# BERT's post-LN blocks for text and ViT/BEiT's pre-LN blocks for images. This notebook rebuilds that file
# from its equations, one piece at a time, and checks each piece against the library on the same weights:
#
# 1. scaled dot-product attention written out by hand (heads split and merged with einops patterns that
#    state the shapes) against the core's `Attention`, and why the scores are divided by $\sqrt{d}$;
# 2. attention maps: a picture of what one head attends to;
# 3. padding masks: what `True` means, that a padded key gets exactly zero weight, and the one convention
#    that differs from HuggingFace's;
# 4. post-LN and pre-LN blocks as equations and as code, checked against `Block`, and what each ordering
#    does to the residual stream over depth;
# 5. `return_layers`: the per-block tensors the encoder hands back, and which of them data2vec averages
#    into its targets;
# 6. parity with `transformers`' `BertLayer`: the weights copied over by hand, the outputs compared.
#
# **Cost**: everything here is tiny (widths of 32-64); the notebook runs on a CPU in about 5 seconds after
# the imports (`TUTORIAL_QUICK=1`, which the test suite sets, only shortens the depth study of section 4).
# It needs `transformers` for section 6 (in the dev extra: `pip install -e ".[dev]"`). No data is downloaded.

# %%
import math
import os
import time

import matplotlib.pyplot as plt
import torch
from einops import rearrange

from data2vec import Attention, Block, Encoder, get_preset, modalities
from data2vec.transformer import padding_to_attn_mask

QUICK = os.environ.get("TUTORIAL_QUICK") == "1"  # the test suite runs a reduced size
DEPTH_STUDY = 8 if QUICK else 24  # blocks stacked in the post-LN vs pre-LN depth study (section 4)

torch.manual_seed(0)
torch.set_num_threads(1)  # tiny tensors: one thread is fastest and keeps the numbers reproducible
START = time.time()


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str, rel: float = 1e-5) -> float:
    """max |actual - expected| <= rel * max |expected| + 1e-6 (float32 rounding at the tensor's scale)."""
    err = (actual - expected).abs().max().item()
    bound = rel * expected.abs().max().item() + 1e-6
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert err <= bound, f"{what}: max |diff| {err:.2e} > {bound:.2e}"
    print(f"{what}: max |diff| = {err:.1e} (allowed {bound:.1e})")
    return err


# %% [markdown]
# ## 1. Scaled dot-product attention by hand
#
# A token sequence $x \in \mathbb{R}^{T \times D}$ is projected to queries, keys and values,
# $Q = xW_q^\top + b_q$, $K = xW_k^\top + b_k$, $V = xW_v^\top + b_v$. Each of the $H$ heads takes its own
# slice of $e = D/H$ features and computes
#
# $$\mathrm{head}_h = \mathrm{softmax}\!\left(\frac{Q_h K_h^\top}{\sqrt{e}}\right) V_h, \qquad
# \mathrm{Attn}(x) = [\mathrm{head}_1, \dots, \mathrm{head}_H]\, W_o^\top + b_o .$$
#
# Row $t$ of the softmax is a probability distribution over the $T$ keys: how much token $t$ reads from
# each token. The core stores $W_q, W_k, W_v$ as **one** fused matrix `qkv.weight` of shape $(3D, D)$,
# rows $[W_q; W_k; W_v]$, and the heads lie side by side inside each block of $D$ rows (the einops pattern
# `(three h e)` in `Attention.forward` says so). Letters: B batch, T tokens, D width, H heads, e = D/H.

# %%
B, T, D, H = 2, 8, 32, 4
attn = Attention(D, H).eval()
with torch.no_grad():  # the biases start at zero; give them values so that the check covers them too
    for p in (attn.q_bias, attn.k_bias, attn.v_bias, attn.proj.bias):
        p.normal_(0, 0.5)
x = torch.randn(B, T, D)  # (B, T, D)


def attention_by_hand(x, attn, key_padding=None):
    """softmax(Q K^T / sqrt(e)) V per head, heads concatenated, then the output projection.

    key_padding: bool (B, T), True = padding: that key gets weight exactly 0. Returns (output, weights)."""
    W, b = attn.qkv.weight, attn.qkv_bias_vector()  # (3D, D), (3D,)
    Wq, Wk, Wv = W.chunk(3)  # three (D, D): the rows [Wq; Wk; Wv]
    bq, bk, bv = b.chunk(3)  # three (D,)
    q = rearrange(x @ Wq.T + bq, "b t (h e) -> b h t e", h=attn.heads)  # (B, H, T, e)
    k = rearrange(x @ Wk.T + bk, "b t (h e) -> b h t e", h=attn.heads)  # (B, H, T, e)
    v = rearrange(x @ Wv.T + bv, "b t (h e) -> b h t e", h=attn.heads)  # (B, H, T, e)
    scores = torch.einsum("bhte,bhse->bhts", q, k) / math.sqrt(q.shape[-1])  # (B, H, T, T): query t, key s
    if key_padding is not None:
        scores = scores.masked_fill(key_padding[:, None, None, :], float("-inf"))  # (B, 1, 1, T) broadcast
    weights = scores.softmax(dim=-1)  # (B, H, T, T): each row sums to 1 over the keys s
    heads = torch.einsum("bhts,bhse->bhte", weights, v)  # (B, H, T, e)
    merged = rearrange(heads, "b h t e -> b t (h e)")  # (B, T, D): heads side by side
    return merged @ attn.proj.weight.T + attn.proj.bias, weights


with torch.no_grad():
    ours, weights = attention_by_hand(x, attn)
    core = attn(x)  # the core: one fused matmul, then F.scaled_dot_product_attention
assert torch.allclose(weights.sum(-1), torch.ones(B, H, T))  # every row is a distribution over the keys
assert_close(core, ours, "Attention vs by hand")

# %% [markdown]
# **The assert can fail.** Two classic slips, each compared with the core the same way: forgetting the
# $1/\sqrt{e}$, and splitting the heads in the wrong order (`(e h)` instead of `(h e)`: head $h$ would take
# every $H$-th feature instead of a contiguous slice).

# %%
with torch.no_grad():
    scale_ref = math.sqrt(D // H)
    q, k, v = (rearrange(x @ W.T + bias, "b t (h e) -> b h t e", h=H)  # (B, H, T, e)
               for W, bias in zip(attn.qkv.weight.chunk(3), attn.qkv_bias_vector().chunk(3), strict=True))
    no_scale = torch.einsum("bhts,bhse->bhte", torch.einsum("bhte,bhse->bhts", q, k).softmax(-1), v)  # (B, H, T, e)
    no_scale = attn.proj(rearrange(no_scale, "b h t e -> b t (h e)"))  # (B, T, D)
    q, k, v = (rearrange(x @ W.T + bias, "b t (e h) -> b h t e", h=H)  # (B, H, T, e): the wrong split
               for W, bias in zip(attn.qkv.weight.chunk(3), attn.qkv_bias_vector().chunk(3), strict=True))
    wrong = torch.einsum("bhts,bhse->bhte", (torch.einsum("bhte,bhse->bhts", q, k) / scale_ref).softmax(-1), v)
    wrong_split = attn.proj(rearrange(wrong, "b h t e -> b t (h e)"))  # (B, T, D)
for name, value in (("without 1/sqrt(e)", no_scale), ("heads split as (e h)", wrong_split)):
    try:
        assert_close(core, value, name)
    except AssertionError as error:
        print(f"caught, as it should be: {error}")
    else:
        raise AssertionError(f"{name} passed the check: the check is too loose")

# %% [markdown]
# **Why $\sqrt{e}$.** If the entries of $q$ and $k$ are independent with mean 0 and variance 1, their dot
# product $q \cdot k = \sum_{i=1}^{e} q_i k_i$ has variance $e$. Without the division, wider heads give
# larger logits, the softmax saturates (one key gets almost all the weight) and its gradient vanishes;
# dividing by $\sqrt{e}$ keeps the logits at unit variance whatever the head width.

# %%
g = torch.Generator().manual_seed(1)
for e in (8, 64, 512):
    qs, ks = torch.randn(20_000, e, generator=g), torch.randn(20_000, e, generator=g)  # (N, e) each
    dots = (qs * ks).sum(-1)  # (N,)
    ratio = dots.var().item() / e
    print(f"e = {e:3d}: var(q.k) = {dots.var():7.1f} ~ e; var(q.k / sqrt(e)) = {(dots / math.sqrt(e)).var():.3f}")
    assert abs(ratio - 1) < 0.05, f"var(q.k)/e = {ratio:.3f}, expected about 1"  # 20k samples: sd about 0.01

# %% [markdown]
# ## 2. What an attention map shows
#
# A toy sentence: eight "words" with a random embedding each, the word *the* three times, no positions.
# On the left a head with random weights; on the right the same head with $W_k := W_q$ and $b_k := b_q$
# ($W_q$ scaled by 3 for a sharper map), so that the score $q_t \cdot q_s$ is large when tokens $t$ and
# $s$ have similar embeddings: most tokens then attend most to copies of themselves. Not all: the score is
# a dot product, not a cosine, so a key with a long vector can win over the token's own (*near* reads
# *dog*). Without positions, attention cannot tell the three *the*s apart: their rows are identical in
# both maps (asserted below). Positions (learned, sin-cos or BEiT's relative bias) break that symmetry.

# %%
words = "the cat saw the dog near the door".split()  # T = 8
vocab = sorted(set(words))
table = torch.randn(len(vocab), D, generator=torch.Generator().manual_seed(2))  # (V, D): one vector per word
sentence = table[[vocab.index(w) for w in words]][None]  # (1, T, D)
head = 0
similar = Attention(D, H).eval()
with torch.no_grad():
    similar.load_state_dict(attn.state_dict())
    similar.qkv.weight[:D] *= 3.0  # a larger Wq: sharper maps
    similar.qkv.weight[D:2 * D] = similar.qkv.weight[:D]  # rows [Wq; Wk; Wv]: Wk := Wq
    similar.k_bias.copy_(similar.q_bias)
    _, random_map = attention_by_hand(sentence, attn)  # (1, H, T, T)
    _, similar_map = attention_by_hand(sentence, similar)  # (1, H, T, T)
    assert_close(similar(sentence), attention_by_hand(sentence, similar)[0], "similarity head: core vs by hand")
the = [i for i, w in enumerate(words) if w == "the"]
for amap in (random_map, similar_map):
    rows = amap[0, head, the]  # (3, T): the rows of the three "the"s
    assert torch.allclose(rows, rows[0].expand_as(rows), atol=1e-6), "identical tokens must get identical rows"
best = similar_map[0, head].argmax(-1)  # (T,): the key each query attends to most
same_word = [words[int(s)] == w for s, w in zip(best, words, strict=True)]
print("similarity head, most-attended key of each token:", [words[int(s)] for s in best])
assert sum(same_word) >= 6, "with Wk = Wq most tokens should attend most to a copy of themselves"

fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
for ax, amap, title in ((axes[0], random_map, "random weights"), (axes[1], similar_map, "similarity head: Wk = Wq")):
    im = ax.imshow(amap[0, head].numpy(), cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(T), words, rotation=45)
    ax.set_yticks(range(T), words)
    ax.set_xlabel("key s (attended to)")
    ax.set_ylabel("query t")
    ax.set_title(f"{title}, head {head}")
fig.colorbar(im, ax=axes, shrink=0.8, label="softmax(q k^T / sqrt(e))")
plt.show()

# %% [markdown]
# ## 3. Padding masks
#
# Sentences in a batch have different lengths; the short ones are padded to the longest. A padded key must
# never be read: its score is set to $-\infty$ before the softmax, so its weight is $e^{-\infty} = 0$
# exactly and the real keys' weights still sum to 1.
#
# **Conventions.** Everywhere in this project a padding mask is a bool `(B, T)` tensor with
# **True = padding** (named `padding_mask`), checked at the encoder's boundary. Two things differ from it:
# `F.scaled_dot_product_attention` wants the opposite, True = *may attend*, which `padding_to_attn_mask`
# builds (shape `(B, 1, 1, T)`, broadcast over heads and queries); and HuggingFace's `attention_mask` is
# an integer tensor with **1 = real token**, so `data2vec.hub.PretrainedModel` converts it as
# `padding_mask = attention_mask == 0`.

# %%
lengths = torch.tensor([8, 5])  # row 0 is full, row 1 has 3 pads
padding_mask = torch.arange(T)[None, :] >= lengths[:, None]  # (B, T) bool, True = padding
keep = padding_to_attn_mask(padding_mask, None, x.dtype)  # (B, 1, 1, T) bool, True = may attend
assert keep.shape == (B, 1, 1, T) and torch.equal(keep[:, 0, 0], ~padding_mask)
with torch.no_grad():
    ours, weights = attention_by_hand(x, attn, key_padding=padding_mask)
    core = attn(x, keep)
pad_weights = weights.masked_select(padding_mask[:, None, None, :].expand_as(weights))
assert torch.equal(pad_weights, torch.zeros_like(pad_weights)), "a padded key got a non-zero weight"
assert torch.allclose(weights.sum(-1), torch.ones(B, H, T))
assert_close(core, ours, "padded batch: Attention vs by hand")
print(f"weights on the {int(padding_mask.sum())} padded keys, over every head and query: all exactly 0")

# %% [markdown]
# Because padded keys get zero weight, **what the pads hold does not matter**: filling them with anything
# else leaves every real token's output unchanged. (The padded *queries* still get an output, a weighted
# average of the real tokens; nothing downstream reads it: losses and pooling skip the pads.) A mask in the
# HuggingFace convention is refused at the encoder's boundary with a message that says how to build ours.

# %%
x_other = x.clone()
x_other[padding_mask] = 100 * torch.randn(int(padding_mask.sum()), D)  # garbage in the padded slots
with torch.no_grad():
    changed = attn(x_other, keep)
real = ~padding_mask  # (B, T) bool, True = real token
assert_close(changed[real], core[real], "real tokens, pads refilled with garbage")

enc_cfg = get_preset("text", "tiny", dim=D, heads=H, depth=2, dropout=0.0, attn_dropout=0.0)
encoder = Encoder(enc_cfg).eval()
hf_style = (~padding_mask).long()  # HuggingFace attention_mask: 1 = real token
try:
    encoder(x, padding_mask=hf_style)
except ValueError as error:
    print("Encoder refuses an int mask:", error)
else:
    raise AssertionError("an integer 1 = real mask was accepted")

# %% [markdown]
# ## 4. Post-LN and pre-LN blocks
#
# A block is attention then a feed-forward network $\mathrm{FFN}(u) = W_2\,\mathrm{GELU}(W_1 u + b_1) + b_2$,
# each wrapped in a residual connection and a LayerNorm
# $\mathrm{LN}(u) = \gamma \odot (u - \mu)/\sqrt{\sigma^2 + \epsilon} + \beta$ ($\mu, \sigma^2$ over the $D$
# features of each token). The two orderings differ in where the norm sits:
#
# * **post-LN** (BERT, RoBERTa, data2vec-text): normalise *after* adding the residual,
#   $$h = \mathrm{LN}_1(x + \mathrm{Attn}(x)), \qquad f = \mathrm{FFN}(h), \qquad \mathrm{out} = \mathrm{LN}_2(h + f);$$
# * **pre-LN** (ViT, BEiT, data2vec-vision): normalise the branch's *input*, the residual stream is never
#   normalised, and BEiT's layer scale $g$ (a learned per-feature gain, $10^{-4}$ at the start) shrinks
#   each branch:
#   $$x' = x + g_1 \odot \mathrm{Attn}(\mathrm{LN}_1(x)), \qquad f = \mathrm{FFN}(\mathrm{LN}_2(x')), \qquad
#   \mathrm{out} = x' + g_2 \odot f .$$
#
# `Block.forward` returns `(out, f)`: $f$, the FFN output before the residual, is data2vec-text's target
# (section 5). Dropout and stochastic depth are off in eval mode, so the equations are exact here. The
# GELU below is written out with the error function, $\mathrm{GELU}(u) = u\,\Phi(u) =
# \tfrac{u}{2}\,(1 + \mathrm{erf}(u/\sqrt 2))$, as BERT's.

# %%
def layer_norm_by_hand(u, norm):
    mu = u.mean(-1, keepdim=True)  # (B, T, 1)
    var = ((u - mu) ** 2).mean(-1, keepdim=True)  # (B, T, 1): biased, as LayerNorm
    return norm.weight * (u - mu) / torch.sqrt(var + norm.eps) + norm.bias


def ffn_by_hand(u, ffn):
    a = u @ ffn.fc1.weight.T + ffn.fc1.bias  # (B, T, 4D)
    return (0.5 * a * (1 + torch.erf(a / math.sqrt(2)))) @ ffn.fc2.weight.T + ffn.fc2.bias  # (B, T, D)


def post_ln_by_hand(x, blk, key_padding=None):
    h = layer_norm_by_hand(x + attention_by_hand(x, blk.attn, key_padding)[0], blk.norm1)
    f = ffn_by_hand(h, blk.ffn)
    return layer_norm_by_hand(h + f, blk.norm2), f


def pre_ln_by_hand(x, blk, key_padding=None):
    x1 = x + blk.gamma1 * attention_by_hand(layer_norm_by_hand(x, blk.norm1), blk.attn, key_padding)[0]
    f = ffn_by_hand(layer_norm_by_hand(x1, blk.norm2), blk.ffn)
    return x1 + blk.gamma2 * f, f


def randomise_(module, seed):
    """Every parameter ~ N(0, 0.2^2), LayerNorm gains around 1: constants (zero biases, unit gains, 1e-4 layer
    scale) would let a mistake such as a swapped norm go unnoticed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2 + (1.0 if "norm" in name and "weight" in name else 0.0))
    return module


post = randomise_(Block(D, H, norm_first=False), 3).eval()
pre = randomise_(Block(D, H, norm_first=True, layer_scale=1e-4), 4).eval()
with torch.no_grad():
    for name, blk, by_hand in (("post-LN", post, post_ln_by_hand), ("pre-LN", pre, pre_ln_by_hand)):
        out, f = blk(x, keep)
        out_hand, f_hand = by_hand(x, blk, padding_mask)
        assert_close(out, out_hand, f"{name} Block output vs the equations")
        assert_close(f, f_hand, f"{name} Block FFN output f vs the equations")
    # the two orderings are not interchangeable: the post-LN equations on the pre-LN block's weights differ
    swapped = post_ln_by_hand(x, pre, padding_mask)[0]
    assert (swapped - pre(x, keep)[0]).abs().max() > 0.1, "post-LN and pre-LN should differ"

# %% [markdown]
# **What the ordering does over depth.** A post-LN block ends with a LayerNorm, so with fresh norms
# ($\gamma = 1, \beta = 0$) every token leaves each block with mean 0 and standard deviation 1 over its
# features, however deep the stack. A pre-LN block adds each branch to a residual stream that is never
# normalised, so the stream's scale grows with depth (which is why pre-LN encoders end with a final
# LayerNorm, `final_norm=True`); in exchange its gradient reaches the early blocks through the plain sum,
# which makes deep pre-LN stacks less dependent on a careful learning-rate warm-up than post-LN ones
# (Xiong et al. 2020, "On Layer Normalization in the Transformer Architecture"). And with layer scale
# $g = 10^{-4}$ a fresh pre-LN block barely changes its input: each block starts close to the identity
# (BEiT, CaiT). Below: $D = 64$, `DEPTH_STUDY` blocks of each kind, weights drawn with variance
# $1/\text{fan-in}$ so that each branch adds about as much as it receives (with BERT's $N(0, 0.02)$ the
# branches start small and the same growth takes many more blocks).

# %%
def stack(norm_first, layer_scale, seed):
    torch.manual_seed(seed)
    cfg = get_preset("text", "tiny", dim=64, heads=4, depth=DEPTH_STUDY, norm_first=norm_first,
                     layer_scale=layer_scale, dropout=0.0, attn_dropout=0.0)
    enc = Encoder(cfg).eval()
    with torch.no_grad():
        for m in enc.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.normal_(0, 1 / math.sqrt(m.in_features))  # variance-preserving: std 1/sqrt(fan-in)
    return enc


tokens = torch.randn(4, 16, 64)  # (B, T, D): unit-variance inputs, as after an embedding LayerNorm
curves = {}
with torch.no_grad():
    for label, norm_first, scale in (("post-LN", False, None), ("pre-LN", True, None),
                                     ("pre-LN + layer scale 1e-4", True, 1e-4)):
        _, layers = stack(norm_first, scale, 5)(tokens, return_layers="block")  # DEPTH_STUDY x (B, T, D)
        curves[label] = [a.std(-1).mean().item() for a in layers]  # mean per-token std over the features
        if label == "post-LN":
            for a in layers:
                assert torch.allclose(a.mean(-1), torch.zeros(4, 16), atol=1e-5)
                assert torch.allclose(a.std(-1, unbiased=False), torch.ones(4, 16), atol=1e-3)
        if scale is not None:
            change = ((layers[0] - tokens).norm() / tokens.norm()).item()
            print(f"{label}: first block changes its input by {change:.1e} (relative)")
            assert change < 1e-3
assert curves["pre-LN"][-1] > 1.5 * curves["pre-LN"][0], "the pre-LN residual stream should grow with depth"
fig, ax = plt.subplots(figsize=(6, 3.5))
for (label, values), style in zip(curves.items(), ("s--", "o-", "^:"), strict=True):
    ax.plot(range(1, DEPTH_STUDY + 1), values, style, label=label, markersize=5)
ax.set_xlabel("block l")
ax.set_ylabel("per-token std of block output")
ax.set_title("residual stream scale over depth (fresh weights)")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 5. What `return_layers` gives
#
# `Encoder.forward(x, padding_mask, return_layers=...)` runs the blocks in order and returns
#
# * `None`: the final output only, $(B, T, D)$, after the final LayerNorm if the encoder has one;
# * `"block"`: `(final, [out_1, ..., out_L])`, every block's output: the residual stream after block
#   $l$. These are HuggingFace's `hidden_states[1:]` (`hidden_states[0]` is the embedding output);
# * `"ffn"`: `(final, [f_1, ..., f_L])`, every block's FFN output before dropout, layer scale and the
#   residual.
#
# data2vec builds its targets from the **top $K$** of these $L$ tensors (paper, section 3.3), each
# normalised and then averaged, $y_t = \frac1K \sum_{l=L-K+1}^{L} \mathrm{norm}(a_t^l)$: text takes the
# FFN outputs $f_l$ (`target="ffn"`, the paper's choice) of the top 10 of 12 blocks; vision the block
# outputs (`target="block"`, the released BEiT-fork code) of the top 6 of 12. Notebook 01 builds the
# targets from these lists. Below, the lists are checked against running the blocks one at a time.

# %%
L = 4
cfg = get_preset("vision", "tiny", dim=D, heads=H, depth=L, position="none", final_norm=True, layer_scale=0.1)
vit_encoder = randomise_(Encoder(cfg), 6).eval()
with torch.no_grad():
    final, blocks_out = vit_encoder(x, padding_mask=padding_mask, return_layers="block")  # L x (B, T, D)
    _, ffn_out = vit_encoder(x, padding_mask=padding_mask, return_layers="ffn")  # L x (B, T, D)
    a, by_hand_blocks, by_hand_ffn = x, [], []
    for blk in vit_encoder.blocks:
        a, f = pre_ln_by_hand(a, blk, padding_mask)
        by_hand_blocks.append(a)
        by_hand_ffn.append(f)
assert len(blocks_out) == len(ffn_out) == L
for i in range(L):
    assert_close(blocks_out[i], by_hand_blocks[i], f"block {i + 1} output")
    assert_close(ffn_out[i], by_hand_ffn[i], f"block {i + 1} FFN output")
assert_close(final, layer_norm_by_hand(by_hand_blocks[-1], vit_encoder.norm), "final = LN(last block)")
for modality in ("text", "vision"):
    K = modalities.get(modality).v1_top_k(12, reduced=False)
    k4 = modalities.get(modality).v1_top_k(4, reduced=True)
    print(f"{modality}: base averages blocks {12 - K + 1}..12 ({K} of 12); the reduced presets with 4 blocks "
          f"average blocks {4 - k4 + 1}..4")

# %% [markdown]
# ## 6. Parity with `transformers`' BERT layer
#
# The last check compares one post-LN `Block` with the reference implementation everybody uses,
# `transformers.models.bert.modeling_bert.BertLayer`, on the same weights. A BERT layer keeps separate
# `query`, `key`, `value` linears; ours is the fused $[W_q; W_k; W_v]$, so the copy concatenates them.
# The module names map as follows (the same table `data2vec/hub/names.py` uses to import whole checkpoints,
# `TEXT_BLOCK`; notebook 07 does that):
#
# | ours (`Block`) | `BertLayer` |
# |---|---|
# | `attn.qkv.weight` $= [W_q; W_k; W_v]$ | `attention.self.query/key/value.weight` |
# | `attn.q_bias`, `k_bias`, `v_bias` | `attention.self.query/key/value.bias` |
# | `attn.proj` | `attention.output.dense` |
# | `norm1` | `attention.output.LayerNorm` |
# | `ffn.fc1`, `ffn.fc2` | `intermediate.dense`, `output.dense` |
# | `norm2` | `output.LayerNorm` |
#
# HuggingFace's attention mask *inside* a layer is additive, shape `(B, 1, 1, T)`: 0 for a real key, the
# most negative float for a pad (the model builds it from its 1 = real `attention_mask` before the first
# layer; `bert_forward` below builds it from our True = pad mask).

# %%
import transformers  # noqa: E402  (the dev extra; only this section needs it)
from transformers.models.bert.modeling_bert import BertLayer  # noqa: E402

bert_cfg = transformers.BertConfig(hidden_size=D, num_attention_heads=H, intermediate_size=4 * D,
                                   hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                                   layer_norm_eps=1e-12, attn_implementation="eager")
torch.manual_seed(7)
bert_layer = randomise_(BertLayer(bert_cfg), 7).eval()  # eval: dropout off in both
block = Block(D, H, mlp_ratio=4.0, norm_first=False, norm_eps=bert_cfg.layer_norm_eps,
              dropout=0.1, attn_dropout=0.1).eval()


def copy_bert_layer_(block, layer, order=("query", "key", "value")):
    """The BertLayer's weights into our Block, by hand."""
    sa = layer.attention.self
    with torch.no_grad():
        block.attn.qkv.weight.copy_(torch.cat([getattr(sa, n).weight for n in order]))  # (3D, D)
        for ours, theirs in zip(("q_bias", "k_bias", "v_bias"), order, strict=True):
            getattr(block.attn, ours).copy_(getattr(sa, theirs).bias)
        pairs = [(block.attn.proj, layer.attention.output.dense), (block.norm1, layer.attention.output.LayerNorm),
                 (block.ffn.fc1, layer.intermediate.dense), (block.ffn.fc2, layer.output.dense),
                 (block.norm2, layer.output.LayerNorm)]
        for ours, theirs in pairs:
            ours.weight.copy_(theirs.weight)
            ours.bias.copy_(theirs.bias)


def bert_forward(layer, x, padding_mask):
    additive = torch.zeros(B, 1, 1, T).masked_fill(padding_mask[:, None, None, :], torch.finfo(x.dtype).min)
    out = layer(x, attention_mask=additive)  # (B, 1, 1, T) additive mask
    return out[0] if isinstance(out, tuple) else out  # transformers 4 returns a tuple, 5 the tensor


copy_bert_layer_(block, bert_layer)
with torch.no_grad():
    reference = bert_forward(bert_layer, x, padding_mask)
    mine, _ = block(x, keep)
print("transformers", transformers.__version__)
assert_close(mine, reference, "Block vs transformers BertLayer")
assert_close(post_ln_by_hand(x, block, padding_mask)[0], reference, "the equations vs BertLayer")

# the check can fail: copy the projections in the wrong order (keys where the queries go)
copy_bert_layer_(block, bert_layer, order=("key", "query", "value"))
with torch.no_grad():
    wrong = block(x, keep)[0]
try:
    assert_close(wrong, reference, "q and k swapped")
except AssertionError as error:
    print(f"caught, as it should be: {error}")
else:
    raise AssertionError("swapped q/k passed the parity check")

# %% [markdown]
# ## What to try next
#
# * Give the similarity head of section 2 positions: add a learned or sin-cos position vector to each
#   word and watch the three *the* rows become different.
# * Replace `Attention`'s call to `F.scaled_dot_product_attention` by `attention_by_hand` (monkey-patch
#   `Attention.forward`) and time a `data2vec demo` step: the fused kernel's saving at this size is small,
#   at $T = 512$ it is not.
# * In the depth study, raise `DEPTH_STUDY` to 48 and initialise with `std=0.2`: the post-LN stack stays
#   normalised while the pre-LN stream keeps growing; then add the final LayerNorm (`final_norm=True`).
# * Compare a pre-LN block with `transformers`' `ViTLayer` the same way (names: `layernorm_before`,
#   `attention.attention.query`, ..., `layernorm_after`; see `VISION_BLOCK` in `data2vec/hub/names.py`), or a
#   BEiT layer, whose key projection has no bias (`k_bias=False`) and whose `lambda_1`, `lambda_2` are our
#   `gamma1`, `gamma2`.
# * Notebook 07 does the same parity for whole released checkpoints, layer by layer.

# %%
print(f"tutorial finished in {time.time() - START:.1f} s")
