# %% [markdown]
# # How data2vec builds its targets, step by step
#
# data2vec (Baevski et al. 2022, [arXiv 2202.03555](https://arxiv.org/abs/2202.03555)) trains one
# Transformer, the **student**, to predict from a *masked* input what a second copy of the same network,
# the **teacher**, computes from the *unmasked* input. The teacher is not trained: its weights are an
# exponential moving average (EMA) of the student's. The prediction targets are not pixels or words but
# the teacher's own internal representations, averaged over its top layers. The same recipe works for
# speech, images and text; only the input embedding and the masking change.
#
# This notebook opens every step of that recipe with the project's own code (`data2vec/`), on real
# images (scikit-learn's 8 x 8 handwritten digits, no download), and checks each step against a
# computation done by hand in the notebook:
#
# 1. a tiny vision encoder, the student/teacher pair, and BEiT block masking;
# 2. the targets: per-layer layer norm, top-K average, final norm, checked against `build_targets`;
# 3. the student's input: the mask embedding at exactly the masked patches;
# 4. the Smooth L1 loss by hand, checked against `regression_loss` and the model's own loss;
# 5. 30 training steps with an explicit loop (AdamW, then the EMA step), collapse and the collapse
#    guard, and what the EMA momentum tau means at small scale;
# 6. how text differs (FFN targets, top-10 of 12, Smooth L1 with beta 4 summed over the features, BERT
#    masking, shared embeddings), with a tiny text example.
#
# It runs on a CPU in about 15 seconds. The files to read next to it: `data2vec/v1.py` (the
# training step), `data2vec/targets.py`, `data2vec/losses.py`, `data2vec/masking.py` and
# `data2vec/ema.py`; each module docstring ends with its "Differences from the original".

# %%
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from data2vec import (
    CollapseError,
    Data2Vec,
    Data2VecConfig,
    bert_mask,
    block_mask,
    build_targets,
    regression_loss,
)
from data2vec.masking import special_tokens_mask
from data2vec.modalities import TEXT, VISION
from data2vec.optim import param_groups
from tasks.text.tokenizer import train_tokenizer
from tasks.vision import DIGITS_MEAN, DIGITS_STD, load_digits_dataset

torch.manual_seed(0)  # model initialisation and every mask below are seeded
np.random.seed(0)
torch.set_num_threads(1)  # the models here are tiny: one thread is fastest and keeps the numbers reproducible
START = time.time()
print("torch", torch.__version__)

# %% [markdown]
# ## 1. The student, the teacher and the masks
#
# **The method in one paragraph** (paper, section 3). An input $x$ is encoded twice. The student
# $f_\theta$ sees a masked version and produces, at every masked position $t$, a prediction $f_t(x)$
# (its final output passed through a linear *regression head*). The teacher, with weights $\Delta$,
# sees the unmasked input and produces the target $y_t$: the average of its top $K$ layer outputs at
# position $t$, each normalised. The loss compares $f_t(x)$ and $y_t$ at the masked positions only.
# Gradients flow into the student; after each optimiser step the teacher follows the student:
#
# $$\Delta \leftarrow \tau \Delta + (1 - \tau)\,\theta \qquad\text{(paper, section 3.2)}$$
#
# **The model here.** `Data2VecConfig.preset("vision", "tiny", ...)` is the released data2vec-vision
# recipe at reduced scale (the project's docs/design.md section 8): a pre-LN ViT with BEiT's relative position
# bias, layer scale 1e-4 and a learned mask embedding, targets from the top 3/4 of the blocks, a layer
# norm after averaging, Smooth L1 with $\beta = 2$ averaged over tokens and features. We shrink it to the digits:
# 8 x 8 grey images cut into 2 x 2 patches (a 4 x 4 grid, $N = 16$ patch tokens plus CLS), width
# $D = 64$, $L = 4$ blocks, so $K = 3$.

# %%
digits = load_digits_dataset("train")  # 1,438 grey 8 x 8 digits in [0, 1]; the labels are never used here
images = torch.from_numpy(np.asarray(digits.images[:256], dtype=np.float32))  # (256, 8, 8)
images = images.unsqueeze(1)  # (256, 8, 8) -> (B, C, H, W) = (256, 1, 8, 8)
images = (images - DIGITS_MEAN[0]) / DIGITS_STD[0]  # the dataset's mean / std, as in `data2vec demo`

cfg = Data2VecConfig.preset("vision", "tiny", image_size=8, patch_size=2, in_chans=1, depth=4)
model = Data2Vec(cfg)
enc = cfg.encoder
print(f"encoder: pre-LN={enc.norm_first}, {enc.depth} blocks x D={enc.dim}, {enc.heads} heads, "
      f"{enc.grid_size}x{enc.grid_size} patches of {enc.patch_size}x{enc.patch_size} px, "
      f"position={enc.position!r}, layer_scale={enc.layer_scale}")
print(f"targets: {cfg.target!r} outputs of the top K={cfg.top_k} of {enc.depth} blocks, "
      f"per-layer norm={cfg.layer_norm!r}, after averaging={cfg.final_norm!r}")
print(f"loss: Smooth L1 beta={cfg.loss_beta}, reduction={cfg.loss_reduction!r}; head={cfg.head!r}")
print(f"EMA: tau {cfg.tau_start} -> {cfg.tau_end} over {cfg.tau_ramp_steps:g} of the run, scope={cfg.ema_scope!r}")
print(f"mask: ratio {cfg.mask_ratio}, (masked patches, smallest block) on 16 patches = {cfg.block_sizes(16)}")
n_student = sum(p.numel() for p in model.backbone.parameters())
n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
print(f"student {n_student:,} parameters; trained: {n_trainable:,} (student + head); the teacher's are frozen")

# %% [markdown]
# The teacher is a deep copy of the student made at construction (`EMATeacher`), in fp32, in eval mode,
# with `requires_grad=False`: the optimiser never sees it, only the EMA step moves it.

# %%
teacher = model.teacher.module
assert not any(p.requires_grad for p in teacher.parameters())
assert not teacher.training  # no dropout / drop path in the teacher, ever
same = all(torch.equal(p, q) for p, q in zip(teacher.parameters(), model.backbone.parameters(), strict=True))
print("teacher == student at initialisation:", same)

# %% [markdown]
# ### BEiT block masking
#
# data2vec-vision masks images the way BEiT does (Bao et al. 2021, Algorithm 1): until enough patches
# are masked, draw a rectangle with area $s \sim U[s_{\min}, \text{remaining}]$ and aspect ratio
# $r$ log-uniform in $[0.3, 1/0.3]$, i.e. $h = \mathrm{round}(\sqrt{s r})$, $w = \mathrm{round}(\sqrt{s/r})$,
# place it at random and keep it if it adds between 1 and the remaining number of patches (10 tries per
# rectangle). For ViT-B/16 at 224 px that is 120 of the 14 x 14 = 196 patches (61%), rectangles of at
# least 16 patches. The count may fall short by a few patches, never over.
#
# Our 4 x 4 grid keeps the proportions (docs/design.md section 8): 60% of 16 = 10 patches, smallest block
# 16/196 of the grid, i.e. 1 patch. Top row: `block_mask` at the paper's size; bottom row: the masks
# `VISION.block_mask` draws for four digits (red = masked).

# %%
g = torch.Generator().manual_seed(0)
fig, axes = plt.subplots(2, 4, figsize=(10, 6.2))
for ax in axes[0]:
    m = block_mask(14, 14, 120, min_block=16, generator=g)  # (14, 14) bool, True = masked
    assert int(m.sum()) <= 120
    ax.imshow(m, cmap="gray_r", vmin=0, vmax=1)
    ax.set_title(f"14x14: {int(m.sum())}/196 masked")
four = images[:4]
rows, cols = model.backbone.embed.grid_of(four)  # (4, 4) patch grid
p = enc.patch_size
demo_mask = VISION.block_mask(model, four, generator=torch.Generator().manual_seed(1))  # (4, N) bool, True = masked
for ax, img, m in zip(axes[1], four, demo_mask, strict=True):
    grid = m.reshape(rows, cols).float()  # (N,) -> (4, 4), row-major like the patch tokens
    pixels = grid.repeat_interleave(p, 0).repeat_interleave(p, 1)  # (4, 4) -> (8, 8): one cell per pixel
    ax.imshow(img[0], cmap="gray")
    ax.imshow(np.ma.masked_where(pixels.numpy() == 0, pixels.numpy()), cmap="autumn", alpha=0.55)
    ax.set_title(f"digit: {int(m.sum())}/16 masked")
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle("BEiT block masks (top: ViT-B size, black = masked; bottom: our 4x4 grid, red = masked)")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 2. The targets, one step at a time
#
# Paper, section 3.3: with $a_t^l$ the output of block $l$ at position $t$ (of $L$ blocks),
#
# $$\hat a_t^l = \mathrm{norm}(a_t^l), \qquad y_t = \frac{1}{K}\sum_{l=L-K+1}^{L} \hat a_t^l .$$
#
# * **Which tensor is $a^l$.** The paper takes the output of the feed-forward block *before the last
#   residual connection*. The released vision code (the BEiT fork) regresses the end-of-block residual
#   stream instead; this project follows each released recipe: `target="block"` for vision,
#   `"ffn"` for text. The CLS token is dropped.
# * **The norm.** No learned parameters. Vision and text: a layer norm over the $D$ features of each
#   token, $\mathrm{LN}(a) = (a - \mu)/\sqrt{\sigma^2 + \epsilon}$ with $\mu, \sigma^2$ over $D$ and
#   $\epsilon = 10^{-5}$. (Speech uses instance norm over the time steps instead.) Normalising keeps
#   layers with a large norm from dominating the average, and, as the paper notes, helps against a
#   collapse to one constant representation.
# * **After averaging.** The released vision code applies one more layer norm to $y_t$
#   (`final_norm="layer"`); text does not.
# * The teacher always sees the **clean** image: `model.teacher(images, return_layers="block")` returns
#   the final output and the list of the $L$ per-block tensors.

# %%
clean = images[:8]  # (B, 1, 8, 8), B = 8
final, all_layers = model.teacher(clean, return_layers="block")  # final (B, 1+N, D); L x (B, 1+N, D)
print(f"{len(all_layers)} blocks, each {tuple(all_layers[0].shape)} = (B, 1 + N, D)")
layers = [a[:, 1:] for a in all_layers]  # drop CLS: L x (B, N, D)
L, K = len(layers), cfg.top_k
top = layers[L - K:]  # blocks L-K+1 .. L (1-based)


def layer_norm_by_hand(a: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(a - mean) / sqrt(var + eps) over the last dimension, no affine parameters."""
    mu = a.mean(dim=-1, keepdim=True)  # (B, N, 1)
    var = ((a - mu) ** 2).mean(dim=-1, keepdim=True)  # (B, N, 1): biased variance, as in layer norm
    return (a - mu) / torch.sqrt(var + eps)


# step a: normalise each of the top K layers per token
normed = [layer_norm_by_hand(a) for a in top]  # K x (B, N, D)
for block, (a, n) in enumerate(zip(top, normed, strict=True), start=L - K + 1):
    print(f"block {block}: raw per-token std {a.std(-1).mean():.3f}, mean {a.mean():+.3f} -> "
          f"normalised std {n.std(-1, unbiased=False).mean():.3f}, mean {n.mean():+.1e}")
# step b: Eq. y_t = 1/K sum_l norm(a_t^l)
avg = sum(normed) / K  # (B, N, D)
# step c: the released vision code's final layer norm
y_hand = layer_norm_by_hand(avg) if cfg.final_norm == "layer" else avg  # (B, N, D)

y_lib = build_targets(layers, cfg.top_k, layer_norm=cfg.layer_norm, final_norm=cfg.final_norm)
print(f"targets {tuple(y_lib.shape)}; max |by hand - build_targets| = {(y_hand - y_lib).abs().max():.2e}")
assert torch.allclose(y_hand, y_lib, atol=1e-5), "the hand-made targets differ from build_targets"

# %% [markdown]
# The normalised layers, their average and the final target for one digit (rows = the 16 patches,
# columns = the 64 features). Note how similar the $K$ layers are: with BEiT's layer scale
# ($\gamma = 10^{-4}$ multiplies every attention and FFN output at initialisation), a fresh network's
# blocks barely change the residual stream, so the first targets are essentially a normalised random
# projection of each patch. They become contextual as training moves the student, and the EMA carries
# that into the teacher.

# %%
rel = [((a - top[-1]).norm() / top[-1].norm()).item() for a in top]
print("relative distance of each top layer to the last one:", [f"{r:.1e}" for r in rel])
panels = [(f"LN(block {block})", n[0]) for block, n in enumerate(normed, start=L - K + 1)]
panels += [("average", avg[0]), ("target y (after final LN)", y_hand[0])]
fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 2.6))
for ax, (title, value) in zip(axes, panels, strict=True):
    ax.imshow(value.numpy(), aspect="auto", cmap="coolwarm", vmin=-3, vmax=3)  # (N, D)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("feature d")
    ax.set_ylabel("patch t")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. What the student sees
#
# The student encodes the same image, but the patch embedding of every masked patch is *replaced* by
# one learned vector, the mask embedding (BEiT; `PatchEmbedding.forward`), before the CLS token is
# prepended and positions are applied. Nothing else changes: the unmasked patches and CLS are exactly
# what the teacher gets. (This encoder has no absolute positions, only the relative bias inside
# attention; with absolute positions we would compare after subtracting them.)

# %%
mask = VISION.block_mask(model, clean, generator=torch.Generator().manual_seed(2))  # (B, N) bool, True = masked
embed = model.backbone.embed
with torch.no_grad():
    student_in = embed(clean, mask)  # (B, 1 + N, D)
    teacher_in = embed(clean)  # (B, 1 + N, D): no mask
    positions = embed.positions_for((rows, cols))  # None here: relative positions live in attention
    if positions is not None:
        student_in, teacher_in = student_in - positions, teacher_in - positions
mask_token = embed.mask_token[0, 0]  # (D,)
s, t = student_in[:, 1:], teacher_in[:, 1:]  # (B, N, D) patch tokens
M = int(mask.sum())
assert torch.equal(s[mask], mask_token.expand(M, -1)), "a masked patch does not hold the mask embedding"
assert torch.equal(s[~mask], t[~mask]), "an unmasked patch differs from the teacher's input"
assert torch.equal(student_in[:, 0], teacher_in[:, 0]), "the CLS token differs"
print(f"{M} of {mask.numel()} patches hold the mask embedding; all others equal the teacher's input")

changed = (s - t).norm(dim=-1) > 0  # (B, N): where the student's input differs from the teacher's
assert torch.equal(changed, mask)
fig, axes = plt.subplots(1, 2, figsize=(5, 2.6))
axes[0].imshow(mask[0].reshape(rows, cols), cmap="gray_r")  # (N,) -> (4, 4)
axes[0].set_title("mask (True = black)")
axes[1].imshow(changed[0].reshape(rows, cols), cmap="gray_r")  # (N,) -> (4, 4)
axes[1].set_title("student input != teacher's")
for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 4. The loss
#
# Paper, section 3.4: Smooth L1 between the target $y_t$ and the prediction $f_t(x)$, per feature,
#
# $$\mathcal{L}(y_t, f_t(x)) = \begin{cases} \tfrac{1}{2}\,(y_t - f_t(x))^2 / \beta & |y_t - f_t(x)| \le \beta \\
# |y_t - f_t(x)| - \tfrac{1}{2}\beta & \text{otherwise} \end{cases}$$
#
# quadratic near the target, linear (robust to outliers) far from it; $\beta = 0$ means squared error.
# Only masked positions count. How the $M \times D$ values are reduced matters as much as $\beta$: the
# released vision code averages over tokens *and* features (`loss_reduction="mean"`, $\beta = 2$); the
# text code sums over the $D$ features and averages over tokens (`"sum"`, $\beta = 4$), which makes the
# loss, and so the effective learning rate, about $D$ times larger.
#
# We compute it by hand for a seeded mask, then ask `regression_loss` and the model itself (same
# generator seed, so the same mask).

# %%
seed = 3
mask = VISION.block_mask(model, clean, generator=torch.Generator().manual_seed(seed))  # (B, N)
with torch.no_grad():
    x = model.backbone(clean, mask)[:, 1:]  # student: (B, 1 + N, D) -> (B, N, D), CLS dropped
    pred = model.head(x[mask])  # (M, D): the head on the masked positions only
    target = y_hand[mask]  # (M, D): the teacher's targets at the same positions
    d = pred - target
    beta = cfg.loss_beta
    per_element = torch.where(d.abs() <= beta, 0.5 * d**2 / beta, d.abs() - 0.5 * beta)  # (M, D)
    by_hand = per_element.mean() if cfg.loss_reduction == "mean" else per_element.sum(dim=1).mean()
    library = regression_loss(pred, target, beta=beta, reduction=cfg.loss_reduction)
    from_model, stats = model({"images": clean}, generator=torch.Generator().manual_seed(seed))
print(f"M = {pred.shape[0]} masked patches x D = {pred.shape[1]} features")
print(f"by hand {by_hand:.6f} | regression_loss {library:.6f} | model(batch) {from_model:.6f}")
assert torch.allclose(by_hand, library, atol=1e-6) and torch.allclose(by_hand, from_model, atol=1e-5)
print("model statistics:", {k: round(float(v), 4) for k, v in stats.items()})  # 0-dim tensors -> floats
print(f"share of |y - f| inside the quadratic zone (<= beta): {(d.abs() <= beta).float().mean():.1%}")

r = torch.linspace(-6, 6, 241)
fig, axes = plt.subplots(1, 2, figsize=(9, 3))
for b in (0.0, 2.0, 4.0):
    curve = r**2 if b == 0 else torch.where(r.abs() <= b, 0.5 * r**2 / b, r.abs() - 0.5 * b)
    axes[0].plot(r, curve, label="L2 (beta=0)" if b == 0 else f"Smooth L1, beta={b:g}")
axes[0].set_ylim(0, 8)
axes[0].set_xlabel("y - f")
axes[0].legend()
axes[0].set_title("the loss per feature")
axes[1].hist(d.flatten().numpy(), bins=60)  # (M, D) -> (M * D,)
axes[1].axvline(-beta, color="k", ls="--")
axes[1].axvline(beta, color="k", ls="--")
axes[1].set_title("y - f at initialisation (dashed: +-beta)")
plt.tight_layout()
plt.show()


# %% [markdown]
# ## 5. Training: the loop, collapse, and tau at small scale
#
# One training step is: `loss, stats = model(batch)` (masks drawn inside from the global torch RNG),
# backward, clip, optimiser step, **then** `model.step_hook(step, total_steps)`, which sets
# $\tau$ from its schedule and moves the teacher towards the student. The order matters: the teacher
# must follow the weights the student has just reached. `data2vec.engine` runs exactly this loop
# (plus AMP, DDP, checkpoints); here it is spelled out.
#
# The schedule (paper, section 3.2): $\tau$ rises linearly from $\tau_0$ to $\tau_e$ over the first
# $\tau_n$ updates, then stays at $\tau_e$. The reduced presets use $0.99 \to 0.999$ over the first
# 30% of the run. AdamW with the released vision settings ($\beta = (0.9, 0.999)$, weight decay 0.05
# except on biases, norms, layer-scale gammas, position tables and the CLS / mask tokens -
# `data2vec.optim.param_groups` - and gradient clipping at 3),
# a 5-step linear warm-up to lr $5 \cdot 10^{-3}$ (the `data2vec demo` value), batches of 64 digits,
# 30 steps.

# %%
def lr_at(step: int, peak: float = 5e-3, warmup: int = 5) -> float:
    """Linear warm-up, then constant (a pure function of the step)."""
    return peak * min(1.0, (step + 1) / warmup)


def train(model: Data2Vec, steps: int = 30, batch_size: int = 64, seed: int = 0) -> list[dict]:
    torch.manual_seed(seed)  # fixes the batches and the masks (drawn from the global RNG)
    groups = param_groups(model, weight_decay=0.05)  # trainable only: student + head, never the teacher
    params = [p for g in groups for p in g["params"]]
    opt = torch.optim.AdamW(groups, lr=lr_at(0), betas=(0.9, 0.999))
    model.train()
    history = []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        idx = torch.randint(0, len(images), (batch_size,))
        loss, stats = model({"images": images[idx]})  # student on masked, teacher on clean images
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 3.0)
        opt.step()
        stats.update(model.step_hook(step, steps))  # EMA: teacher <- tau * teacher + (1 - tau) * student
        history.append({k: float(v) for k, v in stats.items()})  # 0-dim tensors -> floats, as the engine logs them
    return history


@torch.no_grad()
def teacher_followed(model: Data2Vec, start: dict) -> float:
    """|teacher - start| / |student - start|: which fraction of the student's way the teacher went."""
    def moved(params) -> torch.Tensor:  # |params - start| over all the tensors (teacher's or student's)
        return sum(((p - start[n]) ** 2).sum() for n, p in params) ** 0.5

    return float(moved(model.teacher.module.named_parameters()) / moved(model.backbone.named_parameters()))


torch.manual_seed(0)
model = Data2Vec(cfg)  # a fresh model for the run
start = {n: p.detach().clone() for n, p in model.backbone.named_parameters()}
t0 = time.time()
history = train(model)
print(f"30 steps in {time.time() - t0:.1f} s")
for key in ("loss", "target_std", "pred_std", "tau"):
    print(f"{key:>10}: step 1 {history[0][key]:.4f} -> step 30 {history[-1][key]:.4f}")
print(f"the teacher followed {teacher_followed(model, start):.1%} of the student's way")

fig, axes = plt.subplots(1, 4, figsize=(14, 2.8))
for ax, key in zip(axes, ("loss", "target_std", "pred_std", "tau"), strict=True):
    ax.plot([h[key] for h in history])
    ax.set_title(key)
    ax.set_xlabel("step")
plt.tight_layout()
plt.show()

# %% [markdown]
# **Reading the curves.** `target_std` and `pred_std` are the standard deviations *across the masked
# tokens* of each feature, averaged over the features: how different the targets (predictions) of
# different patches are. At initialisation `pred_std` is close to 0: every masked patch enters the
# student as the same mask embedding, and with layer scale $10^{-4}$ the blocks add almost nothing, so
# the student predicts nearly the same vector for all masked patches. The loss falls as the student
# learns to use the visible context, and `pred_std` rises with it. `target_std` stays near 1 because
# the targets are layer-normed.
#
# **Collapse.** The objective has a trivial solution: if the teacher output the same vector for every
# input, the student could predict it perfectly. Nothing in the loss forbids it; what keeps data2vec
# away from it is that the teacher moves slowly (the EMA), that targets are normalised, and that the
# masked student has to predict a *different* target at each position. When training collapses anyway
# (too high a learning rate, too fast a teacher, a `"sum"` reduction that multiplies the step size by
# $D$), the targets and predictions become the same for every token: `target_std` and `pred_std` fall
# towards 0 while the loss looks excellent. fairseq logs these two numbers for that reason (as
# `target_var` / `pred_var`) and stops below `min_target_var=0.1` / `min_pred_var=0.01` after 5,000
# updates. `Data2Vec` does the same
# (`collapse_min_target_std`, `collapse_min_pred_std`, `collapse_warmup_steps`, `collapse_patience`
# consecutive steps) and raises `CollapseError` with advice. The warm-up matters: as seen above,
# `pred_std` starts below 0.01 in a healthy run.
#
# Collapse is a long-run failure and does not happen in 30 steps of this toy run. To see the guard
# act, we set an impossible threshold (a `target_std` of at least 5; layer-normed targets stay near 1)
# and no warm-up:

# %%
strict = Data2VecConfig.preset("vision", "tiny", image_size=8, patch_size=2, in_chans=1, depth=4,
                               collapse_min_target_std=5.0, collapse_warmup_steps=0, collapse_patience=3)
torch.manual_seed(0)
try:
    train(Data2Vec(strict), steps=10)
    raise AssertionError("the collapse guard did not fire")
except CollapseError as err:
    print("CollapseError:", err)

# %% [markdown]
# **tau at small scale** (docs/design.md section 8). After $t$ EMA steps with a constant $\tau$, the teacher still
# holds a fraction $\tau^t$ of its initial weights; $1/(1-\tau)$ steps is its time constant. The
# released vision recipe uses a constant $\tau = 0.9998$: a time constant of 5,000 updates, harmless in
# an 800-epoch run but longer than a whole CPU experiment: the teacher would stay a random network.
# The text recipe ramps $0.999 \to 0.9999$ over 100k (paper) or 300k (released) updates. The reduced
# presets use $0.99 \to 0.999$ (time constants of 100 to 1,000 steps) over the first 30% of the run.
# At the other extreme, $\tau = 0$ makes the teacher a copy of the student at every step, which removes
# the slow-moving anchor that protects against collapse.
#
# We rerun the same 30 steps with the released constant $\tau = 0.9998$ and with $\tau = 0$ and measure
# how far the teacher followed the student.

# %%
for tau in (0.9, 0.99, 0.999, 0.9998, 0.9999):
    print(f"tau = {tau:<6}: time constant 1/(1 - tau) = {1 / (1 - tau):>6,.0f} steps; "
          f"after 30 steps the teacher still holds {tau ** 30:6.1%} of its initial weights")
results = {"0.99 -> 0.999 (reduced preset)": (history, teacher_followed(model, start))}
for name, tau in (("0.9998 constant (released vision)", 0.9998), ("0 (teacher = student)", 0.0)):
    variant = Data2VecConfig.preset("vision", "tiny", image_size=8, patch_size=2, in_chans=1, depth=4,
                                    tau_start=tau, tau_end=tau, tau_ramp_steps=0)
    torch.manual_seed(0)
    m = Data2Vec(variant)
    s0 = {n: p.detach().clone() for n, p in m.backbone.named_parameters()}
    results[name] = (train(m), teacher_followed(m, s0))

fig, axes = plt.subplots(1, 2, figsize=(10, 3))
for name, (h, followed) in results.items():
    print(f"{name:>36}: teacher followed {followed:6.1%}, final loss {h[-1]['loss']:.3f}, "
          f"target_std {h[-1]['target_std']:.3f}")
    axes[0].plot([s["loss"] for s in h], label=name)
    axes[1].plot([s["target_std"] for s in h], label=name)
axes[0].set_title("loss")
axes[1].set_title("target_std")
axes[0].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# With $\tau = 0.9998$ the teacher barely leaves its random initialisation in a short run, so the student
# regresses the features of a random network. With $\tau = 0$ the targets chase the student directly:
# in our run (torch 2.14, CPU) it reached the lowest loss *and* the lowest `target_std` - the student
# partly predicts itself, and a lower loss is not a sign of better features.
# The presets' ramp sits in between; for your own run length, pick $\tau$ so that $1/(1-\tau)$ is a
# small fraction of the run (`tau_ramp_steps` in (0, 1) is a fraction of the run).

# %% [markdown]
# ## 6. How text differs
#
# The same `Data2Vec` class trains text; only the settings change (docs/design.md section 4, paper section 4.2):
#
# | | text (paper / released) | vision (released code) |
# |---|---|---|
# | encoder | post-LN RoBERTa, learned positions | pre-LN ViT, relative position bias, layer scale |
# | masking | BERT (*): 15% of tokens; of those 80% `<mask>`, 10% random, 10% unchanged | BEiT blocks, 61% of patches |
# | target $a^l$ | FFN output before the last residual (`"ffn"`) | block output (`"block"`) |
# | K | top 10 of 12 | top 6 of 12 |
# | after averaging | nothing | layer norm |
# | loss | Smooth L1, $\beta = 4$, **summed over D**, mean over tokens | Smooth L1, $\beta = 2$, mean over tokens x D |
# | EMA | blocks averaged; embeddings **shared** with the student | everything averaged |
# | tau | 0.999 -> 0.9999 over 100k (paper) / 300k (released) updates | 0.9998 constant |
#
# (*) the paper's masking, which this project uses; the released text config masks spans of 4 tokens
# (p = 0.35), all with `<mask>`.
#
# Differences between the paper and the released text code, and what this project does:
#
# * the teacher encodes the **unmasked** sentence in the paper, the masked one in the released code
#   (fairseq issue #4881): we follow the paper;
# * the loss covers **all selected** tokens (paper, `loss_on="selected"`) or only those replaced by
#   `<mask>` (released, issue #4229, `loss_on="mask_token"`);
# * the head is linear (paper) or Linear-GELU-Linear of twice the width (released, `head="mlp"`); the
#   released code also scales the loss by $1/\sqrt{D}$ (`loss_scale`).
#
# A tiny example: a byte-level BPE tokenizer trained on a few sentences, a 4-block text encoder of the
# `tiny` preset (so $K = \mathrm{round}(4 \cdot 5/6) = 3$ at reduced scale; 10 of 12 at full size).

# %%
sentences = [
    "the teacher sees the whole sentence and the student sees a masked one",
    "the student predicts the average of the top layers of the teacher",
    "targets are contextual because the teacher uses self attention over all tokens",
    "a slow teacher follows the student with an exponential moving average",
    "masked language models predict words but data2vec predicts representations",
    "the same recipe trains speech vision and language models",
] * 4
with tempfile.TemporaryDirectory() as tmp:
    corpus = Path(tmp) / "corpus.txt"
    corpus.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    tok = train_tokenizer(corpus, kind="bpe", vocab_size=400, min_frequency=1)
print(f"vocabulary {tok.vocab_size}; <s>={tok.cls_id} <pad>={tok.pad_id} </s>={tok.sep_id} <mask>={tok.mask_id}")

text_cfg = Data2VecConfig.preset("text", "tiny", depth=4, vocab_size=tok.vocab_size, pad_id=tok.pad_id,
                                 mask_id=tok.mask_id, special_ids=tok.special_ids,
                                 layer_norm="layer")  # the paper's per-layer norm (reduced presets: instance)
print(f"text: target={text_cfg.target!r}, top_k={text_cfg.top_k} of {text_cfg.encoder.depth}, "
      f"layer_norm={text_cfg.layer_norm!r}, "
      f"final_norm={text_cfg.final_norm!r}, beta={text_cfg.loss_beta}, reduction={text_cfg.loss_reduction!r}, "
      f"ema_scope={text_cfg.ema_scope!r}")

encoded = tok.encode_batch(sentences[:4])  # 4 lists of ids with <s> ... </s>
T = max(len(e) for e in encoded)
input_ids = torch.tensor([e + [tok.pad_id] * (T - len(e)) for e in encoded])  # (B, T), padded on the right
padding_mask = input_ids == tok.pad_id  # (B, T) bool, True = padding
print("batch", tuple(input_ids.shape), "padding per row:", padding_mask.sum(1).tolist())

# %% [markdown]
# **BERT masking** (`bert_mask`): 15% of the eligible tokens (not special, not padding) are
# *selected*; of those, 80% become `<mask>`, 10% a random token, 10% stay as they are. The loss covers
# every selected token, so the model cannot tell from its input which tokens it will be asked about.
# Below: one sentence (selected tokens in brackets), then the fractions over a large seeded batch.

# %%
special = special_tokens_mask(input_ids, text_cfg.all_special_ids(), padding_mask)  # (B, T) never select
corrupted, selected = bert_mask(input_ids, mask_id=tok.mask_id, vocab_size=tok.vocab_size, special_mask=special,
                                special_ids=text_cfg.all_special_ids(), generator=torch.Generator().manual_seed(0))
row = 0


def show(token_id: torch.Tensor) -> str:
    """The token's text; byte-level BPE marks a leading space with the character U+0120, shown here as _."""
    return tok.id_to_token(int(token_id)).replace("\u0120", "_")


columns = zip(input_ids[row], corrupted[row], selected[row], padding_mask[row], strict=True)  # T x 4 values
print(" ".join(f"[{show(a)}->{show(b)}]" if s else show(a) for a, b, s, pad in columns if not pad))

big = torch.randint(5, tok.vocab_size, (400, 128))  # (B, T) random non-special ids
no_special = torch.zeros_like(big, dtype=torch.bool)  # (B, T) bool, True = never select: none here
c, sel = bert_mask(big, mask_id=tok.mask_id, vocab_size=tok.vocab_size, special_mask=no_special,
                   special_ids=text_cfg.all_special_ids(), generator=torch.Generator().manual_seed(1))
n = int(sel.sum())
to_mask = (c[sel] == tok.mask_id).float().mean()
kept = (c[sel] == big[sel]).float().mean()
print(f"selected {sel.float().mean():.3f} of {big.numel():,} tokens (expected 0.15); of the {n:,} selected: "
      f"<mask> {to_mask:.3f}, random {1 - to_mask - kept:.3f}, unchanged {kept:.3f} (expected 0.8 / 0.1 / 0.1)")
assert abs(sel.float().mean() - 0.15) < 0.01 and abs(to_mask - 0.8) < 0.02

# %% [markdown]
# **Text targets and loss by hand.** The teacher reads the clean sentence and returns the FFN outputs
# (`return_layers="ffn"`); each of the top $K$ is layer-normed per token, averaged, and not normed
# again. (That is the paper's recipe, which we chose above with `layer_norm="layer"`. The reduced text
# presets default to `"instance"`: each channel normalised over the real tokens of its sentence, which
# removes the direction all tokens share; at small scale layer-norm targets let the token outputs drift
# towards one direction. `docs/differences.md` has the measurement.) Padded positions
# never enter the loss. The loss is Smooth L1 with $\beta = 4$, **summed**
# over the $D$ features and averaged over the selected tokens. The text encoder has dropout 0.1, so for
# an exact comparison with `model(batch)` we put the model in eval mode (the teacher always is).

# %%
torch.manual_seed(0)
text_model = Data2Vec(text_cfg).eval()
seed = 4
with torch.no_grad():
    student_ids, positions, _ = TEXT.corrupt(text_cfg, input_ids, padding_mask, torch.Generator().manual_seed(seed))
    _, ffn = text_model.teacher(input_ids, padding_mask, return_layers="ffn")  # L x (B, T, D), clean input
    K = text_cfg.top_k
    y = sum(layer_norm_by_hand(f) for f in ffn[-K:]) / K  # (B, T, D): no final norm for text
    pred = text_model.head(text_model.backbone(student_ids, padding_mask)[positions])  # (M, D)
    d = pred - y[positions]  # (M, D)
    b = text_cfg.loss_beta
    by_hand = torch.where(d.abs() <= b, 0.5 * d**2 / b, d.abs() - 0.5 * b).sum(dim=1).mean()  # sum over D
    from_model, text_stats = text_model({"input_ids": input_ids, "padding_mask": padding_mask},
                                        generator=torch.Generator().manual_seed(seed))
assert not (positions & padding_mask).any()
print(f"{int(positions.sum())} selected tokens; loss by hand {by_hand:.5f} | model {from_model:.5f} "
      f"(per token and feature: {by_hand / text_cfg.encoder.dim:.5f})")
assert torch.allclose(by_hand, from_model, atol=1e-4)

# %% [markdown]
# **Shared embeddings.** The paper shares the feature encoder and the positional encoder between teacher
# and student for text ("more efficient and slightly more accurate"): only the Transformer blocks are
# averaged (`ema_scope="blocks"`). Here the teacher holds copies that `step_hook` refreshes from the
# student at every step, so after one training step the embeddings are equal and the blocks are not.

# %%
text_model.train()
opt = torch.optim.AdamW([p for p in text_model.parameters() if p.requires_grad], lr=1e-3)
loss, _ = text_model({"input_ids": input_ids, "padding_mask": padding_mask})
loss.backward()
opt.step()
text_model.step_hook(0, 100)
student, teacher = text_model.backbone, text_model.teacher.module
assert torch.equal(teacher.embed.tokens.weight, student.embed.tokens.weight)  # shared (copied)
assert torch.equal(teacher.embed.positions.weight, student.embed.positions.weight)
pairs = zip(student.encoder.blocks.parameters(), teacher.encoder.blocks.parameters(), strict=True)
diff = max((p - q).abs().max().item() for p, q in pairs)
print(f"embeddings: equal; blocks: max |student - teacher| = {diff:.2e} (averaged with tau={text_model.tau})")
assert diff > 0

# %% [markdown]
# ## Summary and where to go next
#
# * Targets: `build_targets` = per-layer norm of the top $K$ teacher layers (no affine), their mean, and
#   for vision one more layer norm; the teacher sees the clean input.
# * The student differs from the teacher in its input only at the masked positions; the loss is Smooth L1
#   on those positions, with a reduction (`"mean"` vision, `"sum"` text) that changes the effective lr.
# * After every optimiser step, `step_hook` moves the teacher with $\tau$; at small scale choose $\tau$
#   by its time constant $1/(1-\tau)$ relative to the run length, and watch `target_std` / `pred_std`.
#
# Next: `data2vec demo` pretrains this model for 1,000 steps on the digits and compares its frozen
# features with a random encoder; `data2vec pretrain --help` trains on your own images or text.

# %%
print(f"tutorial finished in {time.time() - START:.1f} s")
