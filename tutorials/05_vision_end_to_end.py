# %% [markdown]
# # Vision end to end: pretrain, probe with few labels, look inside
#
# This notebook runs the whole life of a self-supervised vision encoder on scikit-learn's handwritten
# digits (1,797 grey 8 x 8 images, no download):
#
# 1. **pretrain** data2vec (v1) on the 1,438 training images, labels unused, with the project's training
#    loop `data2vec.engine.pretrain`, exactly as `data2vec demo` does;
# 2. **probe** the frozen features with few labels (10 per class): DINO's weighted k-NN and a linear probe
#    (`data2vec.probe`), against an untrained encoder of the same architecture and the raw pixels;
# 3. **look at what the features see**: the attention of the CLS token in the last block, recomputed from
#    the block's weights, and a PCA of the patch features rendered as colour images;
# 4. **read the health statistics** the run logged (`health/*` in `metrics.jsonl`; `docs/health.md`
#    explains each one), and recompute the last ones by hand.
#
# Every step is checked against a computation written in the notebook. **Cost**: about two minutes on one
# CPU core at the default size (300 updates); with `TUTORIAL_QUICK=1` a 20-update version runs in about 15
# seconds, whose accuracies are only a smoke test.

# %%
import copy
import math
import os
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.decomposition import PCA

from data2vec.diagnostics import LabelledProbe
from data2vec.engine import PretrainConfig, pretrain, read_metrics
from data2vec.probe import DEFAULT_CS, few_label_indices, knn_classify, knn_predict, linear_probe
from data2vec.sampling import mix_seed
from data2vec.study.digits import DemoConfig, DigitImages, build_demo_method, digits_tensors, pooled_features

QUICK = os.environ.get("TUTORIAL_QUICK") == "1"  # the test suite runs a reduced size
STEPS = 20 if QUICK else 300  # pretraining updates (the demo: 1000)
HEALTH_EVERY = 10 if QUICK else 25  # updates between health passes (the CLI default is 100; short run, more points)
LABELS_PER_CLASS = 10  # the few-label budget of the probes
LABEL_SUBSETS = 1 if QUICK else 3  # random label subsets (mean over them)
PROBE_CS = (0.01, 0.1, 1.0) if QUICK else DEFAULT_CS  # the linear probe's grid of inverse L2 strengths C

torch.manual_seed(0)
np.random.seed(0)
torch.set_num_threads(1)  # tiny models: one thread is fastest and reproducible
START = time.time()
train_x, train_y, test_x, test_y = digits_tensors()  # normalised (N, 1, 8, 8) images and their labels
print(f"torch {torch.__version__}; {len(train_x)} training and {len(test_x)} test digits {tuple(train_x.shape[1:])}; "
      f"quick={QUICK}")

fig, axes = plt.subplots(1, 10, figsize=(10, 1.3))
for digit, ax in enumerate(axes):
    ax.imshow(train_x[int(np.flatnonzero(train_y.numpy() == digit)[0]), 0], cmap="gray")
    ax.set_title(str(digit))
    ax.axis("off")
plt.show()

# %% [markdown]
# ## 1. Pretraining with `engine.pretrain`
#
# The method is the demo's data2vec (`DEMO_RECIPES["data2vec"]`): a pre-LN ViT of 4 blocks, width 64,
# 2 x 2 patches (a 4 x 4 grid, 16 patch tokens plus CLS), learned positions, layer scale $10^{-4}$; 40% of
# the patches masked in BEiT blocks; targets = the average of the teacher's top 3 block outputs, each
# layer-normed; Smooth L1. The training loop is the project's one loop: AdamW, warm-up and cosine
# learning rate, gradient clipping, the EMA step after each update, a checkpoint, `metrics.jsonl` with one
# line per update.
#
# The **health pass** (every `health_every` updates, plus after update 1 and the last) looks at the student
# on a fixed probe batch of 64 training images; given a small labelled subset (`LabelledProbe`: 192 training
# images as the memory bank, 64 others as queries, never the test split) it also logs an online k-NN
# accuracy. It runs with the random states saved and restored, so the training run is the same without it.

# %%
demo = DemoConfig(steps=STEPS, warmup_steps=max(1, STEPS // 10))
model, _ = build_demo_method("data2vec", demo)  # data2vec.v1.Data2Vec, seeded by demo.seed
random_encoder = copy.deepcopy(model.backbone)  # the same encoder before pretraining: the untrained baseline
enc = model.cfg.encoder
print(f"encoder: {enc.depth} blocks x D={enc.dim}, {enc.heads} heads, pre-LN={enc.norm_first}, "
      f"position={enc.position!r}, layer_scale={enc.layer_scale}; mask ratio {model.cfg.mask_ratio}, "
      f"top K={model.cfg.top_k}")
config = PretrainConfig(steps=STEPS, batch_size=demo.batch_size, lr=demo.lr, min_lr=demo.lr / 100,
                        warmup_steps=demo.warmup_steps, weight_decay=demo.weight_decay, betas=(0.9, 0.999),
                        clip_norm=3.0, seed=demo.seed, device="cpu", quiet=True, plots=False, log_every=0,
                        health_every=HEALTH_EVERY)
knn_probe = LabelledProbe(train_x[:192], train_y[:192], train_x[192:256], train_y[192:256], num_classes=10)
workdir = tempfile.TemporaryDirectory(prefix="tutorial05-")  # the run folder; removed at the end
run_dir = Path(workdir.name) / "pretrain"
t0 = time.time()
summary = pretrain(model, DigitImages(train_x), config, run_dir, health_data=knn_probe,
                   run_config={"method": "data2vec", "data": "sklearn digits (train pool)"})
records = read_metrics(run_dir / "metrics.jsonl")
print(f"{summary['steps_done']} updates in {time.time() - t0:.1f} s ({summary['mean_step_time_s'] * 1e3:.0f} ms "
      f"each), final loss {summary['final_loss']:.4f}; the run folder holds "
      f"{sorted(p.name for p in run_dir.iterdir())}")
assert len(records) == STEPS and [r["step"] for r in records] == list(range(1, STEPS + 1))

fig, axes = plt.subplots(1, 3, figsize=(11, 2.8))
for ax, key in zip(axes, ("loss", "target_std", "lr"), strict=True):
    ax.plot([r["step"] for r in records], [r[key] for r in records])
    ax.set_title(key)
    ax.set_xlabel("update")
axes[0].set_yscale("log")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 2. Few labels: k-NN and a linear probe on frozen features
#
# Each encoder is frozen; an image becomes the mean of its 16 patch tokens (the final output, CLS dropped;
# data2vec trains no CLS objective). With $L = 10$ labelled training images per class (`few_label_indices`,
# a seeded random subset) two classifiers are fitted and scored on the 359 test digits:
#
# * **weighted k-NN** (DINO): features L2-normalised, $s_j$ the cosine similarity to the $k = 20$ nearest
#   labelled images, class score $\sum_{j \in \text{top-}k} e^{s_j / T} [y_j = c]$ with $T = 0.07$;
# * **linear probe**: logistic regression on standardised features, its L2 strength chosen by
#   cross-validation on the labelled subset only.
#
# The same protocol runs on the **untrained** encoder (a copy of the student taken before pretraining: the
# floor that pretraining has to beat; a random network already gives features better than chance) and on the
# **raw pixels** (64 numbers per image: on digits this is a strong baseline, since the classes are nearly
# separable in pixel space). First the k-NN rule written out by hand, against `knn_predict`.

# %%
features = {}
for name, encoder in (("untrained encoder", random_encoder), ("data2vec pretrained", model.backbone)):
    a, _ = pooled_features(encoder, train_x, train_y)  # (1438, D) float32
    b, _ = pooled_features(encoder, test_x, test_y)  # (359, D)
    features[name] = (a, b)
features["raw pixels"] = (train_x.flatten(1).numpy(), test_x.flatten(1).numpy())  # (N, 64)
ytr, yte = train_y.numpy(), test_y.numpy()

idx = few_label_indices(ytr, LABELS_PER_CLASS, seed=0)
assert (np.bincount(ytr[idx], minlength=10) == LABELS_PER_CLASS).all()
bank, queries = features["data2vec pretrained"][0][idx], features["data2vec pretrained"][1]
unit_bank = bank / np.linalg.norm(bank, axis=1, keepdims=True)  # (100, D)
unit_q = queries / np.linalg.norm(queries, axis=1, keepdims=True)  # (359, D)
sim = unit_q @ unit_bank.T  # (359, 100) cosine similarities
top = np.argsort(-sim, axis=1)[:, :20]  # the k = 20 nearest labelled images
votes = np.zeros((len(queries), 10))
for q in range(len(queries)):
    for j in top[q]:
        votes[q, ytr[idx][j]] += math.exp(sim[q, j] / 0.07)  # score(c) = sum_j exp(s_j / T) [y_j = c]
by_hand = votes.argmax(1)
lib = knn_predict(bank, ytr[idx], queries, k=20, temperature=0.07, num_classes=10)
print(f"k-NN by hand vs knn_predict: {int((by_hand == lib).sum())} of {len(lib)} predictions agree; "
      f"accuracy {100 * (by_hand == yte).mean():.1f} %")
assert (by_hand == lib).mean() > 0.99  # a near-tie may flip in float32 vs float64

# %%
table = {}
for name, (a, b) in features.items():
    knn, lin = [], []
    for s in range(LABEL_SUBSETS):
        sub = few_label_indices(ytr, LABELS_PER_CLASS, seed=s)
        knn.append(knn_classify(a[sub], ytr[sub], b, yte, k=20, temperature=0.07)["accuracy"])
        lin.append(linear_probe(a[sub], ytr[sub], b, yte, Cs=PROBE_CS, seed=s)["accuracy"])
    table[name] = (np.mean(knn), np.mean(lin))
print(f"test accuracy (%) with {LABELS_PER_CLASS} labels per class, mean over {LABEL_SUBSETS} label subset(s):")
print(f"{'features':>22} {'k-NN':>7} {'linear':>7}")
for name, (knn, lin) in table.items():
    print(f"{name:>22} {knn:7.1f} {lin:7.1f}")

fig, ax = plt.subplots(figsize=(6, 3))
width = 0.38
for i, (knn, lin) in enumerate(table.values()):
    ax.bar([i - width / 2], [knn], width, color="tab:blue", label="k-NN" if i == 0 else None)
    ax.bar([i + width / 2], [lin], width, color="tab:orange", label="linear probe" if i == 0 else None)
ax.set_xticks(range(len(table)), list(table))
ax.set_ylabel("test accuracy (%)")
ax.set_ylim(0, 100)
ax.set_title(f"{LABELS_PER_CLASS} labels per class")
ax.legend(loc="lower right")
plt.tight_layout()
plt.show()

# %% [markdown]
# **Reading the table.** The comparison that matters is *pretrained against untrained*, the same encoder
# before and after: that difference is what the `STEPS` updates learned. On 8 x 8 digits the raw pixels are a
# hard reference to beat with a tiny encoder and a short run (the demo trains 1,000 updates; its README
# table shows where that lands). A linear probe usually scores above a k-NN with so few labels, because it
# can reweight the feature dimensions.
#
# ## 3. What the features see: the attention of the CLS token
#
# In the last block $l = L$ each token attends to all tokens. With $z = \mathrm{LN}_1(x)$ the block's
# (pre-LN) input, per head $h$ of width $d_h = D / H$:
#
# $$A^h = \mathrm{softmax}\Big(\frac{Q^h K^{h\top}}{\sqrt{d_h}}\Big), \quad
# Q^h = z W_Q^h + b_Q^h,\ K^h = z W_K^h + b_K^h, \qquad \mathrm{Attn}(z) = [A^1 V^1, \dots, A^H V^H] W_O + b_O ,$$
#
# and the block's output is $x' = x + g_1 \odot \mathrm{Attn}(z)$, $\text{out} = x' + g_2 \odot
# \mathrm{FFN}(\mathrm{LN}_2(x'))$ (layer scale $g$). The core computes $A$ inside
# `scaled_dot_product_attention` and never stores it, so we recompute it from the block's own weights, on the
# block's input (the output of block $L - 1$, from `return_layers="block"`), rebuild the whole block output
# from it, and assert that it equals the block's own. Row 0 of $A^h$ is where CLS looks: 16 weights over
# the patches (plus one on itself), drawn on the 4 x 4 grid over the digit.
#
# One caveat, specific to data2vec v1: its loss covers the masked *patch* tokens only, so the CLS token's
# own output is never trained; its attention in the last block is shaped only through the weights it shares
# with the patches. Compare it with the untrained encoder's.


# %%
def last_block_attention(backbone, images: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(attention weights (B, H, 1 + N, 1 + N) of the last block, max |recomputed block output - real|)."""
    block = backbone.encoder.blocks[-1]
    with torch.no_grad():
        _, outs = backbone(images, return_layers="block")  # depth x (B, 1 + N, D), each block's output
        x = outs[-2]  # (B, 1 + N, D): the input of the last block
        B, T, D = x.shape
        H = block.attn.heads
        z = block.norm1(x)  # pre-LN
        qkv = z @ block.attn.qkv.weight.T + block.attn.qkv_bias_vector()  # (B, T, 3D)
        q, k, v = qkv.reshape(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)  # each (B, H, T, d_h)
        attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D // H), dim=-1)  # (B, H, T, T)
        heads = (attn @ v).transpose(1, 2).reshape(B, T, D)  # (B, H, T, d_h) -> (B, T, D): heads concatenated
        a = block.attn.proj(heads)  # (B, T, D)
        g1 = block.gamma1 if block.gamma1 is not None else 1.0
        g2 = block.gamma2 if block.gamma2 is not None else 1.0
        x1 = x + g1 * a
        out = x1 + g2 * block.ffn(block.norm2(x1))  # (B, T, D): the block's output, by hand
    assert backbone.cfg.norm_first, "this recomputation is the pre-LN block"
    return attn, float((out - outs[-1]).abs().max())


show = test_x[:8]  # (8, 1, 8, 8)
maps = {}
for name, encoder in (("pretrained", model.backbone), ("untrained", random_encoder)):
    attn, err = last_block_attention(encoder.eval(), show)
    print(f"{name}: attention {tuple(attn.shape)}, rows sum to 1 (max error {(attn.sum(-1) - 1).abs().max():.1e}); "
          f"max |block output by hand - the block's| = {err:.1e}")
    assert err < 1e-4 and torch.allclose(attn.sum(-1), torch.ones(()), atol=1e-5)
    maps[name] = attn[:, :, 0, 1:]  # (B, H, N): CLS -> patches

grid = enc.grid_size
top_weight = float(max(m.mean(1).max() for m in maps.values()))  # one colour scale for every map
fig, axes = plt.subplots(3, 8, figsize=(11, 4.4))
for col in range(8):
    axes[0, col].imshow(show[col, 0], cmap="gray")
    for row, name in ((1, "pretrained"), (2, "untrained")):
        heat = maps[name][col].mean(0).reshape(grid, grid)  # (N,) mean over heads -> (4, 4)
        axes[row, col].imshow(show[col, 0], cmap="gray")
        axes[row, col].imshow(heat.numpy(), cmap="inferno", alpha=0.6, vmin=0, vmax=top_weight,
                              extent=(-0.5, 7.5, 7.5, -0.5))
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
for row, label in enumerate(("digit", "CLS attn,\npretrained", "CLS attn,\nuntrained")):
    axes[row, 0].set_ylabel(label, fontsize=9)
fig.suptitle(f"where the CLS token looks in the last block (mean over the heads; one scale, 0 to {top_weight:.2f}; "
             f"uniform = {1 / (grid * grid + 1):.3f})", fontsize=10)
plt.tight_layout()
plt.show()

entropy = {n: float(-(m.clamp_min(1e-12) * m.clamp_min(1e-12).log()).sum(-1).mean()) for n, m in
           ((n, mm / mm.sum(-1, keepdim=True)) for n, mm in maps.items())}
print(f"entropy of the CLS attention over the 16 patches (max ln 16 = {math.log(16):.2f}): "
      + ", ".join(f"{n} {e:.2f}" for n, e in entropy.items()))

# %% [markdown]
# ## 4. What the features see: a PCA of the patch features
#
# Every patch of every test digit gives a $D = 64$-dimensional feature (the encoder's final output). We stack
# them into a matrix $X$ of $n = 359 \cdot 16$ rows, centre it, and project it on its first three principal
# directions, drawn as the red, green and blue of each patch. Patches with similar features get similar
# colours, so the pictures show which parts of the digits the encoder treats alike.
#
# PCA by hand is a singular value decomposition of the centred matrix,
# $X - \bar x = U S V^\top$: the principal directions are the rows of $V^\top$, the variance along
# direction $i$ is $S_i^2 / (n - 1)$ and the coordinates are $U_i S_i$ (each direction defined up to its
# sign). We check scikit-learn's `PCA` against it.

# %%
with torch.no_grad():
    tokens = model.backbone.eval()(test_x)[:, 1:]  # (359, 1 + N, D) -> (359, N, D): patches only
X = tokens.reshape(-1, enc.dim).double().numpy()  # (359 * N, D)
pca = PCA(n_components=3).fit(X)
coords = pca.transform(X)  # (n, 3)
centred = X - X.mean(0)
U, S, Vt = np.linalg.svd(centred, full_matrices=False)  # centred = U diag(S) Vt
signs = np.sign((pca.components_ * Vt[:3]).sum(1))  # (3,) +-1: align the arbitrary signs
print(f"variance along PC1-3: PCA {pca.explained_variance_.round(4)}, SVD S^2/(n-1) "
      f"{(S[:3] ** 2 / (len(X) - 1)).round(4)}; explained ratio {pca.explained_variance_ratio_.round(3)}")
assert np.allclose(pca.components_, signs[:, None] * Vt[:3], atol=1e-6)
assert np.allclose(pca.explained_variance_, S[:3] ** 2 / (len(X) - 1), rtol=1e-6)
assert np.allclose(coords, U[:, :3] * S[:3] * signs, atol=1e-6)


def pca_images(tok: torch.Tensor, fitted: PCA) -> np.ndarray:
    """(B, N, D) patch features -> (B, grid, grid, 3) colours in [0, 1] from the first 3 PCs."""
    c = fitted.transform(tok.reshape(-1, tok.shape[-1]).double().numpy())  # (B * N, 3)
    lo, hi = np.percentile(c, 1, axis=0), np.percentile(c, 99, axis=0)
    c = np.clip((c - lo) / (hi - lo), 0, 1)  # each PC scaled to [0, 1] over the patches shown
    return c.reshape(len(tok), grid, grid, 3)  # (B * N, 3) -> (B, 4, 4, 3): row-major patch grid


with torch.no_grad():
    random_tokens = random_encoder.eval()(test_x)[:, 1:]  # (359, N, D)
random_pca = PCA(n_components=3).fit(random_tokens.reshape(-1, enc.dim).double().numpy())
pictures = {"pretrained": pca_images(tokens[:8], pca), "untrained": pca_images(random_tokens[:8], random_pca)}
fig, axes = plt.subplots(3, 8, figsize=(11, 4.4))
for col in range(8):
    axes[0, col].imshow(test_x[col, 0], cmap="gray")
    axes[1, col].imshow(pictures["pretrained"][col], interpolation="nearest")
    axes[2, col].imshow(pictures["untrained"][col], interpolation="nearest")
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
for row, label in enumerate(("digit", "PCA RGB,\npretrained", "PCA RGB,\nuntrained")):
    axes[row, 0].set_ylabel(label, fontsize=9)
fig.suptitle("patch features, first 3 principal components as red / green / blue (each encoder its own PCA)")
plt.tight_layout()
plt.show()
print(f"variance explained by 3 PCs: pretrained {pca.explained_variance_ratio_.sum():.1%}, "
      f"untrained {random_pca.explained_variance_ratio_.sum():.1%}")

# %% [markdown]
# **Reading the colours.** Two things set a patch's feature: *where* it is (the learned position embedding)
# and *what* it contains (its pixels, and after training its context). A colour that comes back at the same
# cell of the grid across different digits is position; a colour that follows the strokes is content.
# Compare the two rows for how much of each you see, and the printed share of the variance the first three
# directions carry: a smaller share means the features use more directions (the rank fraction of the next
# section measures the same thing on the training images).
#
# ## 5. The health statistics the run logged
#
# The health pass wrote these keys into `metrics.jsonl` (definitions in `data2vec/diagnostics.py`, reference
# curves of healthy and collapsed runs in `docs/health.md`), all on the student's final patch tokens of the
# fixed probe batch ($n$ rows = 64 images x 16 patches, $D = 64$):
#
# * `health/feature_std` $= \frac1D \sum_d \sqrt{\mathrm{Var}_n(x_{\cdot d}) + 10^{-6}}$: near 0 = every
#   token the same;
# * `health/anisotropy` $= \frac{1}{n(n-1)} \sum_{i \ne j} \cos(x_i, x_j)$: near 1 = every token points
#   the same way;
# * `health/effective_rank` (RankMe) $= \exp(-\sum_k p_k \log p_k)$, $p_k = \sigma_k / \lVert\sigma\rVert_1 +
#   10^{-7}$ over the singular values $\sigma$ of the uncentred $(n, D)$ matrix, and `health/rank_fraction`
#   $=$ that $/ \min(n, D)$; `health/pooled_effective_rank` the same on the 64 mean-pooled images;
# * `health/knn_acc`: the online k-NN on the `LabelledProbe` (train-split images only).
#
# For vision, `docs/health.md` advises to read the k-NN curve: it should end above its value at update 1.

# %%
health = [r for r in records if "health/anisotropy" in r]
print("health passes after updates", [r["step"] for r in health])
keys = ["health/knn_acc", "health/anisotropy", "health/rank_fraction", "health/pooled_effective_rank",
        "health/feature_std"]
fig, axes = plt.subplots(1, len(keys), figsize=(14, 2.6))
for ax, key in zip(axes, keys, strict=True):
    ax.plot([r["step"] for r in health], [r[key] for r in health], marker="o")
    ax.set_title(key.removeprefix("health/"), fontsize=10)
    ax.set_xlabel("update")
plt.tight_layout()
plt.show()
first, last = health[0], health[-1]
print(f"online k-NN: {first['health/knn_acc']:.1f} % after update {first['step']} -> {last['health/knn_acc']:.1f} % "
      f"after update {last['step']}; health passes cost {sum(r['health/seconds'] for r in health):.1f} s in total")

# %% [markdown]
# **The last pass, by hand.** The probe batch is 64 training images drawn at start-up from the run's own
# seeded stream (`engine.health.start_health`: a permutation seeded by `mix_seed(seed, 3)`, first 64, sorted); the
# last pass ran after the last update, on the weights the model holds now. We rebuild the batch, run the
# student and recompute the statistics with numpy in float64.

# %%
order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(mix_seed(config.seed, 3)))
probe_images = train_x[sorted(order[: config.health_probe_size].tolist())]  # (64, 1, 8, 8)
with torch.no_grad():
    rows = model.backbone.eval()(probe_images)[:, 1:].reshape(-1, enc.dim).double().numpy()  # (64 * N, D)
n = len(rows)
feature_std = np.sqrt(rows.var(axis=0) + 1e-6).mean()  # population variance over the n rows
unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)  # (n, D)
cosines = unit @ unit.T  # (n, n)
anisotropy = (cosines.sum() - np.trace(cosines)) / (n * (n - 1))  # mean over i != j


def rankme(z: np.ndarray) -> float:
    s = np.linalg.svd(z, compute_uv=False)  # singular values of the uncentred matrix
    p = s / s.sum() + 1e-7
    return float(np.exp(-(p * np.log(p)).sum()))


hand = {"health/feature_std": feature_std, "health/anisotropy": anisotropy, "health/effective_rank": rankme(rows),
        "health/rank_fraction": rankme(rows) / min(rows.shape),
        "health/pooled_effective_rank": rankme(rows.reshape(len(probe_images), -1, enc.dim).mean(1))}
for key, value in hand.items():
    print(f"{key:>30}: logged {last[key]:.6f}, by hand {value:.6f}")
    assert math.isclose(last[key], value, rel_tol=1e-4, abs_tol=1e-6), f"{key}: the logged value differs"

# %% [markdown]
# ## What to try next
#
# * **Longer pretraining.** Set `STEPS = 1000` (the demo's length) and watch the k-NN and linear-probe rows
#   move against the untrained encoder; `python -m data2vec demo` prints the full table with 10 and 50
#   labels per class and 5 label subsets.
# * **More labels.** `LABELS_PER_CLASS = 50`: the gap between the classifiers and between the encoders
#   changes as labels stop being scarce.
# * **Other attention.** Draw row $t > 0$ of the attention (where a patch looks) instead of CLS, or each head
#   separately (`maps[name][col][h]`): heads often specialise in directions on the grid.
# * **data2vec 2.0.** Build the method with `build_demo_method("data2vec2", demo)` (it trains a CLS loss, so its
#   CLS attention is trained; its blocks are post-LN: adapt `last_block_attention`, the norms come after
#   the residuals) and compare the health curves: `docs/health.md` notes that its random encoder already has
#   a high anisotropy.
# * **A failing run.** Raise the learning rate tenfold (`demo.lr * 10`) and read the health panels for the
#   signatures `docs/health.md` describes.

# %%
workdir.cleanup()
print(f"tutorial finished in {time.time() - START:.1f} s")
